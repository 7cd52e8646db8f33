"""Which install the benchmark's app runs from (``benchmarks/install.py``, read by
``benchmarks/procs.describe_install`` for the report's header): the packages taskflow-link's
dependencies need, and those they do not (the dev extras, in the environment the tests run in)."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.install import describe, needed
from benchmarks.procs import describe_install


def test_the_app_needs_its_dependencies_and_the_extras_they_name() -> None:
    app = needed("taskflow-link")
    assert {"taskflow-link", "litestar", "dependency-injector", "hikari"} <= app
    assert "greenlet" in app  # only through sqlalchemy[asyncio]
    assert "pytest" not in app
    assert "werkzeug" not in app  # schemathesis' (a dev extra), which dependency-injector loads


def test_the_tests_environment_is_a_development_install() -> None:
    found = describe()
    assert found["installed"] is True
    beyond = found["beyond"]
    assert isinstance(beyond, list)
    assert {"pytest", "hypothesis", "schemathesis"} <= set(beyond)
    assert "pip" not in beyond
    assert not set(beyond) & needed("taskflow-link")
    header = describe_install(Path(sys.executable))
    assert header.startswith("app from a development install (")
    assert f"{len(beyond)} of them not needed by the app" in header
