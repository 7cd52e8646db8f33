"""What an install of taskflow-link holds, for the benchmark report's header: run by the app's
Python (``python -I benchmarks/install.py``, standard library only), it prints as JSON how many
packages that environment has and which of them taskflow-link's own dependencies (with their
extras, transitively) do not need: the dev extras and what they bring, in a development install.
Environment markers other than ``extra`` are not evaluated: a requirement counts as needed when
it is installed."""

from __future__ import annotations

import json
import re
from importlib import metadata

# Installers, present in any virtual environment; never imported by a serving process.
INSTALLERS = frozenset({"pip", "setuptools", "wheel"})
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needed(root: str) -> set[str]:
    """``root`` and every installed package its requirements need (no optional extras but
    those a requirement names, as ``hikari[server]``)."""
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(canonical(root), frozenset())]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for requirement in requires:
            spec, _, marker = requirement.partition(";")
            extra = _EXTRA.search(marker)
            if extra is not None and canonical(extra.group(1)) not in extras:
                continue
            match = _REQUIREMENT.match(spec)
            if match is None:
                continue
            wanted = frozenset(canonical(e) for e in (match.group(2) or "").split(",") if e.strip())
            todo.append((canonical(match.group(1)), wanted))
    return seen


def describe() -> dict[str, object]:
    installed = {canonical(d.metadata["Name"]) for d in metadata.distributions()}
    if "taskflow-link" not in installed:
        return {"installed": False, "packages": len(installed), "beyond": []}
    beyond = installed - needed("taskflow-link") - INSTALLERS
    return {"installed": True, "packages": len(installed), "beyond": sorted(beyond)}


if __name__ == "__main__":
    print(json.dumps(describe()))
