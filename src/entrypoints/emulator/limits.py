"""Discord's per-route rate limits as the emulator keeps them
(https://discord.com/developers/docs/topics/rate-limits): a window of so many calls from the
first, and the headers every answer carries, ``X-RateLimit-Limit``, ``-Remaining``,
``-Reset`` (epoch seconds), ``-Reset-After`` (seconds) and ``-Bucket``; a call past the limit
is a 429 (``retry_after``, ``Retry-After``, ``X-RateLimit-Scope: user``). Shared by the member
roles route (per server) and the role connection push (per user), which refuse a call past
their limit; every other route of the API carries the headers too (``route_limits``), of a
limit generous enough that no test meets it, which the emulator does not enforce."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from litestar.enums import ScopeType
from litestar.response import Response
from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, Scope, Send

# The limit every route without one of its own announces: as many calls a second as
# Discord's global limit of a bot allows (its routes' own numbers are its own, and change).
ROUTE_CALLS, ROUTE_SECONDS = 50, 1.0
# Windows kept before the ended ones are forgotten (each interaction's webhook is a route's
# parameters of its own: a long demo would keep one per interaction otherwise).
KEPT_WINDOWS = 1000


def bucket_of(route: str) -> str:
    """What Discord's X-RateLimit-Bucket names: the route, without its top-level resource."""
    return hashlib.sha256(route.encode()).hexdigest()[:32]


@dataclass
class Window:
    """A route's limit for one caller (or resource): ``calls`` in ``seconds`` from the
    first; the window under way (its end on the monotonic clock, the calls made in it)."""

    calls: int
    seconds: float
    ends: float = 0.0
    made: int = 0

    def take(self, bucket: str) -> dict[str, str]:
        """Count a call; its rate limit headers (``X-RateLimit-Remaining`` is negative past
        the limit: the caller is answered 429, ``over``)."""
        now = time.monotonic()
        if self.ends <= now:
            self.ends, self.made = now + self.seconds, 0
        self.made += 1
        reset_after = max(self.ends - now, 0.0)
        return {
            "X-RateLimit-Limit": str(self.calls),
            "X-RateLimit-Remaining": str(self.calls - self.made),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }


def over(limits: dict[str, str]) -> bool:
    """Whether the call ``limits`` counted was past the limit."""
    return int(limits["X-RateLimit-Remaining"]) < 0


def rate_limited(limits: dict[str, str]) -> Response[Any]:
    """Discord's 429 to a call past the route's limit, with its headers."""
    wait = float(limits["X-RateLimit-Reset-After"])
    headers = limits | {
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Scope": "user",
        "Retry-After": str(math.ceil(wait)),
    }
    body = {"message": "You are being rate limited.", "retry_after": wait, "global": False}
    return Response(body, status_code=429, headers=headers)


def globally_limited(reset_after: float) -> Response[Any]:
    """Discord's 429 to a caller whose token met its global limit (a bot's or a user's:
    "individuals are determined using a request's authentication"): ``"global": true``,
    ``X-RateLimit-Global: true`` and ``X-RateLimit-Scope: global``, no bucket's headers."""
    headers = {
        "Retry-After": str(math.ceil(reset_after)),
        "X-RateLimit-Global": "true",
        "X-RateLimit-Scope": "global",
    }
    body = {"message": "You are being rate limited.", "retry_after": reset_after, "global": True}
    return Response(body, status_code=429, headers=headers)


def limit_asked(data: dict[str, Any]) -> tuple[int, float] | Response[Any]:
    """A test's ``{"calls": int, "window": seconds}`` for a route's limit, or the 400 that
    says what is wrong with it."""
    calls, window = data.get("calls"), data.get("window")
    if (
        not isinstance(calls, int)
        or isinstance(calls, bool)
        or calls < 1
        or not isinstance(window, int | float)
        or isinstance(window, bool)
        or not 0 < window < 3600  # NaN too
    ):
        return Response(
            {"error": "calls must be a positive integer and window 0 to 3600 seconds"},
            status_code=400,
        )
    return calls, float(window)


def route_limits(app: ASGIApp) -> ASGIApp:
    """The emulator's middleware that gives each answer of Discord's API (``/api/...``) the
    ``X-RateLimit-*`` headers Discord sends with it, as the member roles and role
    connection routes already do: a bucket per route (its method and path template), a
    window per route's parameters and caller (Discord limits a route per major parameter,
    and per token). Not on a 429 (it carries its own, or the global one's, which has none),
    nor a 5xx or a body other than JSON (Cloudflare's pages), nor an answer that has them."""
    windows: dict[tuple[str, str, int], Window] = {}

    async def with_limits(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not scope["path"].startswith("/api/"):
            await app(scope, receive, send)
            return
        template = scope.get("path_template") or scope["path"]
        bucket = bucket_of(f"{scope['method']} {template}")
        caller = hash(dict(scope["headers"]).get(b"authorization", b""))
        key = (bucket, scope["path"], caller)

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start" and _limited_answer(message):
                if key not in windows and len(windows) >= KEPT_WINDOWS:
                    _forget_ended(windows)
                window = windows.setdefault(key, Window(ROUTE_CALLS, ROUTE_SECONDS))
                limits = window.take(bucket)
                limits["X-RateLimit-Remaining"] = str(max(int(limits["X-RateLimit-Remaining"]), 0))
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.lower().encode(), v.encode()) for k, v in limits.items()),
                ]
            await send(message)

        await app(scope, receive, send_with_limits)

    return with_limits


def _limited_answer(start: HTTPResponseStartEvent) -> bool:
    """Whether an answer gets the route's rate limit headers (see ``route_limits``)."""
    headers = {bytes(k).lower(): bytes(v) for k, v in start.get("headers", [])}
    if start["status"] == 429 or start["status"] >= 500 or b"x-ratelimit-bucket" in headers:
        return False
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip()
    return start["status"] == 204 or content_type == b"application/json"


def _forget_ended(windows: dict[Any, Window]) -> None:
    now = time.monotonic()
    for key in [k for k, window in windows.items() if window.ends <= now]:
        del windows[key]
