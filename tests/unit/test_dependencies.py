"""Every third-party package the code imports is declared in pyproject.toml: the service's own
imports as dependencies, the tests' and benchmarks' as dependencies or dev extras. A package
that only arrives with another one (aiohttp with hikari, msgspec with Litestar) can leave
with it."""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from collections.abc import Iterable
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OWN = {"domain", "adapters", "entrypoints", "tests", "benchmarks", "__future__"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements: Iterable[str]) -> set[str]:
    return {_canonical(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def _imported(*folders: str) -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere under ``folders``, with where."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OWN:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


# Which distribution ships each module: read from every installed package's metadata, once.
_distributions = functools.cache(packages_distributions)


def _undeclared(imported: dict[str, set[str]], declared: set[str]) -> dict[str, set[str]]:
    distributions = _distributions()
    return {
        module: places
        for module, places in imported.items()
        if not {_canonical(d) for d in distributions.get(module, [module])} & declared
    }


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
RUNTIME = _declared(PROJECT["dependencies"])
DEVELOPMENT = RUNTIME | _declared(PROJECT["optional-dependencies"]["dev"])


GUNICORN = _declared(PROJECT["optional-dependencies"]["gunicorn"])
# Loaded by gunicorn alone, never by the service: its packages come with the gunicorn extra.
GUNICORN_WORKER = "src/entrypoints/gunicorn_worker.py"


def test_the_service_imports_only_declared_dependencies() -> None:
    imported = _imported("src")
    workers = {module: places for module, places in imported.items() if places == {GUNICORN_WORKER}}
    service = {module: places for module, places in imported.items() if module not in workers}
    assert _undeclared(service, RUNTIME) == {}
    assert _undeclared(workers, RUNTIME | GUNICORN) == {}


def test_tests_and_benchmarks_import_only_declared_packages() -> None:
    assert _undeclared(_imported("tests", "benchmarks"), DEVELOPMENT) == {}


def test_the_check_sees_a_package_that_only_came_with_another() -> None:
    assert _undeclared({"aiohttp": {"x.py"}}, RUNTIME - {"aiohttp"}) == {"aiohttp": {"x.py"}}
    assert _undeclared({"nacl": {"x.py"}}, {"pynacl"}) == {}  # module and distribution differ
