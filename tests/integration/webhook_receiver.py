"""A webhook receiver for the tests: a small ASGI app (run under uvicorn) that checks every
request's Standard Webhooks signature with the official ``standardwebhooks`` library and the
secret, records what came, and answers from a script (then 204).

The library's ``verify`` also compares ``webhook-timestamp`` with the wall clock; the services
under test run on a manual clock, so the receiver computes the expected signature with the
library's ``sign`` for the timestamp it was sent, compares in constant time, and records the
timestamp for the test to check against that clock."""

from __future__ import annotations

import hmac
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from standardwebhooks import Webhook


@dataclass(frozen=True)
class Hook:
    """One request the receiver got."""

    path: str
    message_id: str
    timestamp: int
    signatures: str
    body: bytes
    verified: bool
    answered: int

    @property
    def type(self) -> str:
        return str(self.payload["type"])

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    secrets: tuple[str, ...]
    answers: list[int] = field(default_factory=list)  # scripted statuses, then 204
    received: list[Hook] = field(default_factory=list)
    other_paths: list[str] = field(default_factory=list)  # anything that is not a POST
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def verified(self, message_id: str, timestamp: str, signatures: str, body: bytes) -> bool:
        if not (message_id and timestamp.isdecimal() and signatures):
            return False
        moment = datetime.fromtimestamp(int(timestamp), UTC)
        for secret in self.secrets:
            expected = Webhook(secret).sign(message_id, moment, body.decode()).encode()
            for versioned in signatures.split(" "):
                if hmac.compare_digest(versioned.encode(), expected):
                    return True
        return False

    def hooks(self, kind: str | None = None) -> list[Hook]:
        with self._lock:
            return [h for h in self.received if kind in (None, h.type)]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope["method"] != "POST":
            with self._lock:
                self.other_paths.append(scope["path"])
            await self._answer(send, 404)
            return
        ok = self.verified(
            headers.get("webhook-id", ""),
            headers.get("webhook-timestamp", ""),
            headers.get("webhook-signature", ""),
            body,
        )
        with self._lock:
            status = (self.answers.pop(0) if self.answers else 204) if ok else 401
            self.received.append(
                Hook(
                    scope["path"],
                    headers.get("webhook-id", ""),
                    int(headers.get("webhook-timestamp", "0") or 0),
                    headers.get("webhook-signature", ""),
                    body,
                    ok,
                    status,
                )
            )
        await self._answer(send, status)

    @staticmethod
    async def _answer(send: Any, status: int) -> None:
        extra = [(b"location", b"/followed")] if 300 <= status < 400 else []
        await send({"type": "http.response.start", "status": status, "headers": extra})
        body = b"" if status in (204, 304) else b"a body nobody reads" * 10
        await send({"type": "http.response.body", "body": body})
