"""Keeping secrets out of logs, whoever writes them.

An interaction's token can answer and edit the reply (with its /link button) for 15 minutes,
and it travels in callback and webhook URLs and in the interaction payload. hikari logs
payloads it cannot read through the event loop's exception handler, and URLs in its HTTP
errors; our own code logs neither, and these two nets catch what others might.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

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


def configure_logging(level: str) -> None:
    """The process's logging (the CLI's commands): one handler, secrets redacted."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactTokens())


def withhold_payloads(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: hikari hands it the whole interaction payload
    (token included) when it cannot read one; the default handler would log it all."""
    if "payload" in context:
        context = {k: v for k, v in context.items() if k != "payload"}
        context["message"] = f"{context.get('message', '')} (payload withheld: it has a token)"
    loop.default_exception_handler(context)


def install_payload_guard() -> None:
    asyncio.get_running_loop().set_exception_handler(withhold_payloads)
