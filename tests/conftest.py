"""Suite-wide rules. In CI (CI=true) a skipped test fails the run: every suite is required."""

from __future__ import annotations

import os

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

_skipped: list[str] = []


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
