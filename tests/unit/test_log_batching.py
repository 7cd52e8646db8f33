"""The access log's lines written in batches, one write per turn of the event loop, and the
process id of each record read once per process (see ``entrypoints.logs``)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from entrypoints.logs import ACCESS_LOG, BatchedStreamHandler, configure_logging, with_cached_pid

SRC = Path(__file__).resolve().parents[2] / "src"


class CountedStream(io.StringIO):
    """A stream that counts its writes (each one a system call on a real stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def handler() -> Iterator[tuple[BatchedStreamHandler, CountedStream]]:
    stream = CountedStream()
    handler = BatchedStreamHandler(stream, batched=(ACCESS_LOG,))
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(ACCESS_LOG), logging.getLogger("taskflow_link.batching")]
    saved = [(lg.handlers, lg.propagate, lg.level) for lg in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.INFO)
    yield handler, stream
    for logger, (handlers, propagate, level) in zip(loggers, saved, strict=True):
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


async def test_access_lines_of_one_turn_go_out_together_at_the_next(
    handler: tuple[BatchedStreamHandler, CountedStream],
) -> None:
    _, stream = handler
    access = logging.getLogger(ACCESS_LOG)
    for n in range(3):
        access.info("GET /api/v1/links/%d 200", n)
    assert stream.getvalue() == ""  # not yet: at the loop's next turn
    await asyncio.sleep(0)
    assert _lines(stream) == [f"{ACCESS_LOG} INFO GET /api/v1/links/{n} 200" for n in range(3)]
    assert stream.writes == 1


async def test_other_lines_write_the_waiting_ones_first_and_keep_the_order(
    handler: tuple[BatchedStreamHandler, CountedStream],
) -> None:
    """A line of another logger, or a warning of the access log, writes at once, after the
    access lines waiting: the lines stay in the order they were logged."""
    _, stream = handler
    access = logging.getLogger(ACCESS_LOG)
    access.info("first")
    logging.getLogger("taskflow_link.batching").info("second")
    assert _lines(stream) == [f"{ACCESS_LOG} INFO first", "taskflow_link.batching INFO second"]
    access.info("third")
    access.warning("fourth")
    assert _lines(stream)[2:] == [f"{ACCESS_LOG} INFO third", f"{ACCESS_LOG} WARNING fourth"]
    await asyncio.sleep(0)
    assert len(_lines(stream)) == 4  # nothing twice


def test_off_the_event_loop_an_access_line_writes_at_once(
    handler: tuple[BatchedStreamHandler, CountedStream],
) -> None:
    _, stream = handler
    logging.getLogger(ACCESS_LOG).info("no loop runs here")
    assert _lines(stream) == [f"{ACCESS_LOG} INFO no loop runs here"]


async def test_a_thread_beside_the_loop_writes_at_once(
    handler: tuple[BatchedStreamHandler, CountedStream],
) -> None:
    """A write scheduled on the loop is no reason for another thread's line to wait."""
    _, stream = handler
    access = logging.getLogger(ACCESS_LOG)
    access.info("on the loop")
    await asyncio.to_thread(access.info, "in a thread")
    assert _lines(stream) == [f"{ACCESS_LOG} INFO on the loop", f"{ACCESS_LOG} INFO in a thread"]


async def test_flush_and_close_write_the_waiting_lines(
    handler: tuple[BatchedStreamHandler, CountedStream],
) -> None:
    """The logging module flushes and closes every handler at exit (``logging.shutdown``)."""
    batched, stream = handler
    access = logging.getLogger(ACCESS_LOG)
    access.info("one")
    batched.flush()
    assert _lines(stream) == [f"{ACCESS_LOG} INFO one"]
    access.info("two")
    batched.close()
    assert _lines(stream) == [f"{ACCESS_LOG} INFO one", f"{ACCESS_LOG} INFO two"]
    await asyncio.sleep(0)
    assert len(_lines(stream)) == 2


async def test_many_waiting_lines_are_written_without_waiting_for_the_loop(
    handler: tuple[BatchedStreamHandler, CountedStream],
) -> None:
    batched, stream = handler
    access = logging.getLogger(ACCESS_LOG)
    for n in range(batched.MAX_WAITING):
        access.info("line %d", n)
    assert len(_lines(stream)) == batched.MAX_WAITING


def test_a_loop_that_stops_before_its_next_turn_loses_no_line(
    handler: tuple[BatchedStreamHandler, CountedStream],
) -> None:
    """The write was scheduled on a loop closed before it ran: the next loop's lines (and the
    waiting one) are written at its own next turn, not left waiting for the closed one."""
    _, stream = handler
    access = logging.getLogger(ACCESS_LOG)

    async def log(message: str) -> None:
        access.info(message)
        asyncio.get_running_loop().stop()  # ends the loop with this turn

    first = asyncio.new_event_loop()
    first.run_until_complete(log("on a loop closed at once"))
    first.close()
    assert stream.getvalue() == ""

    async def log_and_turn() -> None:
        access.info("on the next loop")
        await asyncio.sleep(0)

    asyncio.run(log_and_turn())
    assert _lines(stream) == [
        f"{ACCESS_LOG} INFO on a loop closed at once",
        f"{ACCESS_LOG} INFO on the next loop",
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
async def test_a_forked_child_drops_its_parents_waiting_lines_and_has_its_own_pid(
    handler: tuple[BatchedStreamHandler, CountedStream],
) -> None:
    batched, stream = handler
    make = with_cached_pid(logging.LogRecord)
    logging.getLogger(ACCESS_LOG).info("the parent's")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        batched.flush()
        record = make("x", logging.INFO, "", 0, "m", None, None)
        answer = f"{record.process == os.getpid()} {stream.getvalue()!r}"
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(child, 0)  # noqa: ASYNC222 - the child has written and exits at once
    assert answer == "True ''"
    assert make("x", logging.INFO, "", 0, "m", None, None).process == os.getpid()
    await asyncio.sleep(0)
    assert _lines(stream) == [f"{ACCESS_LOG} INFO the parent's"]


def test_configure_logging_wraps_the_record_factory_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)
    before = logging.getLogRecordFactory()
    try:
        logging.setLogRecordFactory(logging.LogRecord)
        configure_logging("INFO")
        wrapped = logging.getLogRecordFactory()
        configure_logging("INFO")
        assert logging.getLogRecordFactory() is wrapped
        record = wrapped("x", logging.INFO, "", 0, "m", None, None)
        assert record.process == os.getpid()
    finally:
        logging.setLogRecordFactory(before)


def test_lines_still_waiting_at_exit_are_written() -> None:
    """A process whose event loop ends before the turn that would write the access lines (a
    loop closed at once, as a server's shutdown does) still writes them, at exit."""
    script = textwrap.dedent(
        """
        import asyncio, logging
        from entrypoints.logs import configure_logging
        configure_logging("INFO")

        async def main():
            for n in range(3):
                logging.getLogger("taskflow_link.access").info("line %d", n)
            asyncio.get_running_loop().stop()  # ends the loop with this turn

        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
        loop.close()
        """
    )
    done = subprocess.run(  # noqa: S603 - this Python, our script
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(SRC.parent)])},
        timeout=60,
        check=True,
    )
    lines = done.stderr.splitlines()
    assert [line.split(" taskflow_link.access ")[-1] for line in lines] == [
        f"line {n}" for n in range(3)
    ]
