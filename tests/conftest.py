"""Suite-wide rules. In CI (CI=true) a skipped test fails the run: every suite is required."""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Iterator

import pytest
from hypothesis import settings

# Property tests look quickly while working (tests/unit stays a fast loop) and deeper where
# everything runs: `make test`, or CI=true. HYPOTHESIS_PROFILE (or pytest's
# --hypothesis-profile) picks one by name.
settings.register_profile("quick", max_examples=50)
settings.register_profile("thorough", max_examples=150)
settings.load_profile(
    os.environ.get(
        "HYPOTHESIS_PROFILE",
        "thorough" if os.environ.get("CI", "").lower() == "true" else "quick",
    )
)

# The suite keeps the modules it compiles (pytest's assertion-rewritten tests included) even
# where PYTHONDONTWRITEBYTECODE is set, as it is on some machines' images: compiling ~150
# modules again on every run cost about 2 s. (`__pycache__/` is ignored by git.)
sys.dont_write_bytecode = False

_skipped: list[str] = []

# What configure_logging turns off for the whole process (see entrypoints.logs).
_LOGGING_SWITCHES = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")


@pytest.fixture(autouse=True)
def _logging_switches_restored() -> Iterator[None]:
    """CLI commands that tests run in this process configure its logging: without this, every
    later test's captured log lines would read "(unknown file):0"."""
    saved = [getattr(logging, name) for name in _LOGGING_SWITCHES]
    yield
    for name, value in zip(_LOGGING_SWITCHES, saved, strict=True):
        setattr(logging, name, value)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The garbage collector leaves what collection imported alone (``gc.freeze``) and runs
    less often: the suite builds many short-lived Litestar apps, and each full collection
    walked every module, handler and type the process had loaded (about a sixth of the unit
    suite's time). Cycles are still collected; tests that need a collection call it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI", "").lower() == "true" and _skipped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(
                f"CI=true: {len(_skipped)} test(s) skipped; in CI every suite is required:",
                red=True,
            )
            for nodeid in _skipped:
                reporter.write_line(f"  {nodeid}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
