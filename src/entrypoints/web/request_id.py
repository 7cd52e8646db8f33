"""A request id on every HTTP request: in the ``X-Request-ID`` response header and in every log
line written while handling the request (the access log's too).

A proxy or client may send its own id, to follow one request across services; it is taken only
when it is short and plain (at most 64 of ``A-Z a-z 0-9 . _ -``), since it goes into every log
line: anything else (control characters, JSON, a line break to forge a log line, a huge
value) is replaced by a fresh id, never echoed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from litestar.types import HTTPResponseStartEvent

HEADER = b"x-request-id"
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# A fresh id is 16 random bytes in hex, as secrets.token_hex(16) makes it, taken from a batch
# read from os.urandom at once: each read is a system call (getrandom), and a lookup makes
# few others. A forked child starts a batch of its own (it must not hand out its parent's).
_ID_BYTES = 16
_BATCH = 256 * _ID_BYTES
_unused: list[bytes] = []


def _new_id() -> str:
    while True:
        try:
            return _unused.pop().hex()
        except IndexError:  # (another thread may take the last one between look and take)
            batch = os.urandom(_BATCH)
            _unused.extend(batch[i : i + _ID_BYTES] for i in range(0, _BATCH, _ID_BYTES))


os.register_at_fork(after_in_child=_unused.clear)


def choose_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` when it is safe to log, else a new random one. (ASGI
    servers give header names in lower case.)"""
    sent = next((value for name, value in headers if name == HEADER), None)
    if sent is not None:
        text = sent.decode("latin-1")
        if _SAFE.fullmatch(text):
            return text
    return _new_id()


# Where the web app leaves the request's id, in its scope, for the ``before_send`` hook.
SCOPE_KEY = "taskflow_link.request_id"


def with_request_id(message: HTTPResponseStartEvent, current: str) -> None:
    """A response's start, with the request id among its headers (in place of any the app set
    itself), last. Called by the app's ``before_send`` hook (see ``security``) rather than by
    one more wrapper around ``send``: each costs a coroutine per message of every answer."""
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
    message["headers"] = [*headers, (HEADER, current.encode("ascii"))]
