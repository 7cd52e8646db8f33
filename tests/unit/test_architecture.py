"""The domain imports nothing but the standard library and itself.

import-linter checks the layers and a list of forbidden packages; this test closes the gap
a list leaves open by checking every import against Python's own list of stdlib modules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import domain

DOMAIN = Path(domain.__file__).parent


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_domain_imports_only_the_standard_library() -> None:
    files = sorted(DOMAIN.rglob("*.py"))
    assert len(files) > 5
    offenders = {
        f"{path.relative_to(DOMAIN)}: {name}"
        for path in files
        for name in _imported_top_levels(path)
        if name not in sys.stdlib_module_names and name not in {"domain", "__future__"}
    }
    assert offenders == set()


def test_the_checker_sees_a_third_party_import(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import sqlalchemy\nfrom litestar import get\nimport json\n")
    assert _imported_top_levels(sample) - set(sys.stdlib_module_names) == {"sqlalchemy", "litestar"}
