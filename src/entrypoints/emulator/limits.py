"""Discord's per-route rate limits as the emulator keeps them
(https://discord.com/developers/docs/topics/rate-limits): a window of so many calls from the
first, and the headers every answer carries, ``X-RateLimit-Limit``, ``-Remaining``,
``-Reset`` (epoch seconds), ``-Reset-After`` (seconds) and ``-Bucket``; a call past the limit
is a 429 (``retry_after``, ``Retry-After``, ``X-RateLimit-Scope: user``). Shared by the member
roles route (per server) and the role connection push (per user)."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from litestar.response import Response


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
