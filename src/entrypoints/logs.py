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
import re
import time
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
    text = _IN_URL.sub(r"/\1/\2/<token>", text)
    return _IN_PAYLOAD.sub(r"\1<token>\2", text)


class RedactTokens(logging.Filter):
    """A handler filter: the formatted message and any exception text, tokens removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
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
    ``stack_info=True`` needs: no code of ours asks for it.) The process and thread ids stay
    (each a cheap call): a server's own formatter may write them as numbers, and gunicorn's
    ("[%(process)d]") failed at every line of its uvicorn workers without them."""
    logging._srcfile = None  # the documented switch
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler])
    for name in QUIET_BELOW_INFO:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))
    for installed in logging.getLogger().handlers:  # once each, however often this is called
        for kind in (RedactTokens, AddRequestId):
            if not any(isinstance(f, kind) for f in installed.filters):
                installed.addFilter(kind())


def withhold_payloads(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: hikari hands it the whole interaction payload
    (token included) when it cannot read one; the default handler would log it all."""
    if "payload" in context:
        context = {k: v for k, v in context.items() if k != "payload"}
        context["message"] = f"{context.get('message', '')} (payload withheld: it has a token)"
    loop.default_exception_handler(context)


def install_payload_guard() -> None:
    asyncio.get_running_loop().set_exception_handler(withhold_payloads)
