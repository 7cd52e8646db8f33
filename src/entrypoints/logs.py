"""The process's log lines: text or JSON, each with the request it belongs to, and secrets
kept out whoever writes them.

An interaction's token can answer and edit the reply (with its /link button) for 15 minutes,
and it travels in callback and webhook URLs and in the interaction payload. hikari logs
payloads it cannot read through the event loop's exception handler, and URLs in its HTTP
errors; our own code logs neither, and these two nets catch what others might. The redaction
runs on the record before any formatter sees it, so text and JSON lines are both clean.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

# The id of the HTTP request being handled (set by the web app around each request): every
# line logged while handling it, by any code, carries it.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s %(message)s"
# Before each line of a traceback in the text format: only a record's own line starts at the
# left edge.
TRACE_INDENT = "  | "
# Fields some records carry (the access log's), written as JSON fields of their own.
_EXTRA_FIELDS = ("client", "method", "path", "status")
# The access log: a line per request, written in batches (see ``BatchedStreamHandler``).
ACCESS_LOG = "taskflow_link.access"

# Dependencies whose DEBUG lines carry the data of the statements they run: aiosqlite logs
# every call with its SQL and bound values ("executing functools.partial(..., 'INSERT INTO
# accounts ...', (..., 'a@example.com', '$argon2id$...'))"), so at TASKFLOW_LINK_LOG_LEVEL=DEBUG
# on SQLite every email address, password hash and token digest written or looked up went to
# the log. They log at INFO at the most, whatever the level. (SQLAlchemy's own statement log,
# ``sqlalchemy.engine``, is at WARNING unless set otherwise: SQLAlchemy does so at import.)
QUIET_BELOW_INFO = ("aiosqlite",)

_IN_URL = re.compile(r"/(interactions|webhooks)/(\d+)/[A-Za-z0-9_.\-]{16,}")
_IN_PAYLOAD = re.compile(r"""(["']token["']\s*:\s*["'])[^"']+(["'])""")


def redact(text: str) -> str:
    # What either pattern needs, looked for first: most lines (every access log line) have
    # neither, and two substitutions cost several times these three searches.
    if "token" not in text and "/interactions/" not in text and "/webhooks/" not in text:
        return text
    text = _IN_URL.sub(r"/\1/\2/<token>", text)
    return _IN_PAYLOAD.sub(r"\1<token>\2", text)


class RedactTokens(logging.Filter):
    """A handler filter: the formatted message and any exception text, tokens removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as exc:  # arguments that do not fit the message
            # A filter's exception reaches the code that logged (logging catches only the
            # handler's own), and the handler's report of a failed line prints the arguments
            # unredacted: the message alone then, saying so, never its arguments.
            message = f"{record.msg} (its arguments could not be written: {type(exc).__name__})"
        # The message as it reads, kept: the formatter reads it again (getMessage), and would
        # put the arguments into the text a second time.
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            if redact(exc_text) != exc_text:
                record.exc_text = redact(exc_text)
        return True


class AddRequestId(logging.Filter):
    """A handler filter: the record gets the id of the request being handled (or None), and
    ``request_tag`` for the text format (`` [id]`` or nothing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.get()
        record.request_id = current
        record.request_tag = f" [{current}]" if current else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the request id
    when there is one, the access log's fields, and the exception's traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = getattr(record, "request_id", None) or request_id.get()
        if current:
            entry["request_id"] = current
        for name in _EXTRA_FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # RedactTokens cleaned the message and the traceback; the fields of their own (a
        # path) are cleaned here, before anything is written.
        cleaned = {k: redact(v) if isinstance(v, str) else v for k, v in entry.items()}
        line = json.dumps(cleaned, ensure_ascii=False, default=str)
        return line if line.isprintable() else _escape_unprintable(line)


def _escape_unprintable(line: str) -> str:
    """A JSON line with every character that is not printable written as ``\\uXXXX``:
    json.dumps escapes only the C0 controls, and wrote NEL (U+0085) and the line and
    paragraph separators, which end a line for readers that follow Unicode, and U+009B, an
    escape sequence's start on a terminal that takes 8-bit controls, as they are. Each is
    inside a string (what json.dumps writes around them is printable ASCII), where the
    escape reads back as the same character."""
    return "".join(char if char.isprintable() else _json_escape(char) for char in line)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # beyond the BMP: a surrogate pair, as JSON writes it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


class TextFormatter(logging.Formatter):
    """One record, one line: the message's control characters are escaped (``\\r\\n``,
    ``\\x1b``), so nothing a request carries (a decoded path, a name from Discord), logged by
    any code, can start a forged line or reach the operator's terminal as an escape sequence.
    A traceback (or stack), added after the message, keeps its lines, each indented and
    escaped as a message is: an exception's text holding a line break (a name, a path) starts
    an indented line, never one that reads as a record of its own."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, defaults={"request_tag": ""})
        # The second last written and its text: lines of the same second (the access log
        # writes one per request) reuse it, not localtime() and strftime() again.
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        msec_format = self.default_msec_format
        if datefmt is not None or msec_format is None or self.converter is not time.localtime:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached, text = self._second
        if second != cached:
            text = time.strftime(self.default_time_format, time.localtime(second))
            self._second = (second, text)
        return msec_format % (text, record.msecs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line, newline, rest = super().format(record).partition("\n")
        if not newline:
            return line
        return line + "".join(f"\n{TRACE_INDENT}{one_line(part)}" for part in rest.split("\n"))


def one_line(text: str) -> str:
    """``text`` with any control character escaped (``\\n``, ``\\x00``...)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def make_formatter(log_format: Literal["text", "json"]) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return TextFormatter()


def configure_logging(level: str, log_format: Literal["text", "json"] = "text") -> None:
    """The process's logging (the CLI's commands): one handler on stderr, text or JSON, the
    request id in every line logged while handling a request, secrets redacted.

    Records skip what neither format writes (the logging HOWTO's "Optimization"): the file,
    line and function of the call (a walk up the stack) and the process's name. The access
    log writes a line per request: the walk was a third of its cost. (It is also what
    ``stack_info=True`` needs: no code of ours asks for it.) The process and thread ids stay:
    a server's own formatter may write them as numbers, and gunicorn's ("[%(process)d]")
    failed at every line of its uvicorn workers without them. The process id is the one this
    process had when it started or forked (see ``with_cached_pid``), not asked of the system
    again for every record. The access log's lines are written in batches, one write per
    turn of the event loop (see ``BatchedStreamHandler``)."""
    logging._srcfile = None  # the documented switch
    logging.logMultiprocessing = False
    logging.logProcesses = False  # the record factory sets it (see with_cached_pid)
    factory = logging.getLogRecordFactory()
    if not getattr(factory, _CACHED_PID, False):
        logging.setLogRecordFactory(with_cached_pid(factory))
    handler = BatchedStreamHandler(batched=(ACCESS_LOG,))
    handler.setFormatter(make_formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler])
    for name in QUIET_BELOW_INFO:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))
    for installed in logging.getLogger().handlers:  # once each, however often this is called
        for kind in (RedactTokens, AddRequestId):
            if not any(isinstance(f, kind) for f in installed.filters):
                installed.addFilter(kind())


# -- the process id of each record ----------------------------------------------------------------

# Set on the record factory ``with_cached_pid`` returns (so that it wraps only once).
_CACHED_PID = "taskflow_link_cached_pid"
_pid = os.getpid()


def _pid_after_fork() -> None:
    global _pid  # noqa: PLW0603 - the process's own, reset in a forked child
    _pid = os.getpid()


os.register_at_fork(after_in_child=_pid_after_fork)


def with_cached_pid(
    factory: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    """A record factory: ``factory``'s records, with the process id (``%(process)d``) of this
    process. The logging module asks the system for it (``getpid``, a system call) at every
    record when ``logging.logProcesses`` is on; here it is read once, and again in a child
    after a fork (``os.register_at_fork``)."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.process = _pid
        return record

    setattr(make, _CACHED_PID, True)
    return make


# -- batched writes -------------------------------------------------------------------------------


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that writes the lines of the loggers named in ``batched`` (the
    access log, a line per request) in batches: a line logged on a thread running an event
    loop waits for that loop's next turn, when every line logged meanwhile goes out in one
    ``write``, instead of one system call per line. Nothing else waits: a line of any other
    logger, of level WARNING or above, or logged off the event loop (a thread, start-up),
    writes the waiting lines first and then itself, so lines keep their order; so do
    ``flush()`` and ``close()`` (the logging module calls both at exit) and more than
    ``MAX_WAITING`` lines waiting (a loop that does not come round).

    What a crash loses: only when the process ends without Python's exit (SIGKILL, the
    out-of-memory killer, ``os._exit``, a crash of the interpreter itself), the access lines
    of the requests answered in the loop's current turn, not yet written. A forked child
    drops its parent's waiting lines (the parent writes them)."""

    MAX_WAITING = 256

    def __init__(self, stream: Any = None, *, batched: tuple[str, ...] = ()) -> None:
        super().__init__(stream)
        self._batched = frozenset(batched)
        self._waiting: list[str] = []
        # The event loop a write is scheduled on (None: none is).
        self._scheduled: asyncio.AbstractEventLoop | None = None
        self._scheduled_thread = 0
        _batching.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            waiting = self._waiting
            waiting.append(line)
            if (
                record.name in self._batched
                and record.levelno < logging.WARNING
                and len(waiting) < self.MAX_WAITING
            ):
                if self._scheduled_here():
                    return
                loop = _running_loop()
                if loop is not None:
                    self._scheduled = loop
                    self._scheduled_thread = threading.get_ident()
                    loop.call_soon(self._write_waiting)
                    return
            self._write(waiting)
        except RecursionError:  # as logging.StreamHandler.emit
            raise
        except Exception:  # as logging.StreamHandler.emit
            self.handleError(record)

    def _scheduled_here(self) -> bool:
        """Whether a write is scheduled on the event loop this thread runs. Without asking
        asyncio for the running loop: on Python 3.11 each ``get_running_loop()`` asks the
        system for the process id (a system call, as costly as the write it would save)."""
        loop = self._scheduled
        return (
            loop is not None
            and self._scheduled_thread == threading.get_ident()
            and loop.is_running()
        )

    def _write(self, waiting: list[str]) -> None:
        """Writes the waiting lines (under the handler's lock)."""
        text = "".join(waiting)
        waiting.clear()
        self.stream.write(text)
        super().flush()

    def _write_waiting(self) -> None:
        """The event loop's turn after lines were left waiting: writes them."""
        with self.lock:  # type: ignore[union-attr] # (created by Handler.__init__)
            self._scheduled = None
            if self._waiting:
                try:
                    self._write(self._waiting)
                except Exception:  # as logging.StreamHandler.emit
                    self.handleError(logging.makeLogRecord({"msg": "(batched lines)"}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._waiting and self.stream is not None:
                self._write(self._waiting)
            else:
                super().flush()

    def close(self) -> None:
        self.flush()
        super().close()

    def _forget_waiting(self) -> None:
        self._waiting.clear()
        self._scheduled, self._scheduled_thread = None, 0


_batching: weakref.WeakSet[BatchedStreamHandler] = weakref.WeakSet()


def _forget_waiting_lines() -> None:
    for handler in list(_batching):
        handler._forget_waiting()


os.register_at_fork(after_in_child=_forget_waiting_lines)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def withhold_payloads(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: hikari hands it the whole interaction payload
    (token included) when it cannot read one; the default handler would log it all."""
    if "payload" in context:
        context = {k: v for k, v in context.items() if k != "payload"}
        context["message"] = f"{context.get('message', '')} (payload withheld: it has a token)"
    loop.default_exception_handler(context)


def install_payload_guard() -> None:
    asyncio.get_running_loop().set_exception_handler(withhold_payloads)
