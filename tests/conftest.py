"""Suite-wide rules. In CI (CI=true) a skipped test fails the run: every suite is required."""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

# Property tests look quickly while working (tests/unit stays a fast loop) and deeper where
# everything runs: `make test`, or CI=true. HYPOTHESIS_PROFILE (or pytest's
# --hypothesis-profile) picks one by name. Neither has Hypothesis's deadline (200 ms an
# example): it times each call, so one example of a microsecond's work that a busy machine
# put aside for 300 ms failed the test ("Unreliable test timings"), whichever it was.
settings.register_profile("quick", max_examples=50, deadline=None)
settings.register_profile("thorough", max_examples=150, deadline=None)
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


_LoggerState = tuple[bool, int, bool, list[logging.Handler], list[Any]]


def _logger_states() -> dict[logging.Logger, _LoggerState]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return {
        logger: (
            logger.disabled,
            logger.level,
            logger.propagate,
            list(logger.handlers),
            list(logger.filters),
        )
        for logger in loggers
        if isinstance(logger, logging.Logger)
    }


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Each test leaves the process's logging as it found it, whatever the order the tests run
    in. CLI commands that tests run in this process configure its logging (without this,
    every later test's captured log lines would read "(unknown file):0"), and so does what
    they start: uvicorn sets its loggers' levels; a command interrupted by Ctrl-C silences the
    "asyncio" logger, after which no later test saw a record of an event loop's exception
    handler (test_hostile_requests waited for one in vain, but only after the unit suite);
    ``configure_logging("WARNING")`` left aiosqlite's logger at WARNING for every later
    test."""
    switches = [getattr(logging, name) for name in _LOGGING_SWITCHES]
    factory = logging.getLogRecordFactory()
    disabled = logging.root.manager.disable
    before = _logger_states()
    yield
    if logging.getLogRecordFactory() is not factory:
        logging.setLogRecordFactory(factory)
    for name, value in zip(_LOGGING_SWITCHES, switches, strict=True):
        setattr(logging, name, value)
    if logging.root.manager.disable != disabled:
        logging.disable(disabled)
    for logger, state in before.items():
        was_disabled, level, propagate, handlers, filters = state
        logger.disabled, logger.propagate = was_disabled, propagate
        if logger.level != level:
            logger.setLevel(level)  # (which also empties the loggers' caches of levels)
        if logger.handlers != handlers:
            logger.handlers[:] = handlers
        if logger.filters != filters:
            logger.filters[:] = filters
    for new in logging.Logger.manager.loggerDict.values():
        # One first asked for during the test: its level may be its library's own, set at
        # import, but none is disabled except by a configuration, which a test's is.
        if isinstance(new, logging.Logger) and new not in before:
            new.disabled = False


def pytest_collection_finish(session: pytest.Session) -> None:
    """The garbage collector leaves what collection imported alone (``gc.freeze``) and runs
    less often: the suite builds many short-lived Litestar apps, and each full collection
    walked every module, handler and type the process had loaded (about a sixth of the unit
    suite's time). Cycles are still collected; tests that need a collection call it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def _is_xdist_worker(config: pytest.Config) -> bool:
    """Whether this process is one of pytest-xdist's workers (``make test`` runs the suite in
    two): the controller receives every worker's reports, and alone decides the exit status."""
    return hasattr(config, "workerinput")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def _skipped_in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true" and bool(_skipped)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _is_xdist_worker(session.config):
        return
    if _skipped_in_ci():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Which tests skipped, in CI: a section of the summary, on its own lines (said from
    ``pytest_sessionfinish``, it came straight after the progress dots' ``[100%]``, which end
    no line: the reporter ends it only after that hook)."""
    if _is_xdist_worker(config) or not _skipped_in_ci():
        return
    terminalreporter.section(
        f"CI=true: {len(_skipped)} test(s) skipped; in CI every suite is required", red=True
    )
    for nodeid in _skipped:
        terminalreporter.line(f"  {nodeid}", red=True)
