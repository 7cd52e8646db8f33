"""Discord's answers that mean "stop calling for a while", read alike by every adapter that
calls Discord in the background (the bot's role calls, Linked Roles' pushes and refreshes).

- Discord's 429: JSON with ``retry_after`` (seconds) and ``global`` (every route waits, not
  only the one called), and ``X-RateLimit-Scope``: ``user`` (the caller's own limit of the
  route: its token's), ``global`` (the caller's global limit), ``shared`` (a resource's limit,
  every caller's); Cloudflare's 429 is an HTML page that says none of them.
- A block of the address: Cloudflare's HTML 403, or Discord's JSON code 40333 "internal
  network error" (since 2023, discord/discord-api-docs#6473), answered to every call while it
  lasts, and, alike, any 401 or 403 that is not Discord's own answer: whatever stands between
  the process and Discord (a proxy) may answer every call so. Nothing the caller did (its
  token, its member): such an answer must pause the calls, never be taken as a refusal (each
  refusal a caller acts on ends or refreshes something, each call prolongs the block).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.discord_oauth import Answer, DiscordHttp

log = logging.getLogger(__name__)

# Discord's JSON for an address Cloudflare blocks.
BLOCKED_CODE = 40333


@dataclass(frozen=True, slots=True)
class Limit:
    """Discord (or Cloudflare) asked for no more calls: until ``retry_after`` seconds from now
    (for every route with ``global_limit``; for every caller of the resource with
    ``shared_limit``), or, without it, for as long as a block lasts."""

    status: int
    retry_after: float | None = None
    global_limit: bool = False
    shared_limit: bool = False


def limit_of(
    http: DiscordHttp, endpoint: str, response: Answer, *, from_discord: bool
) -> Limit | None:
    """The limit ``response`` sets, or ``None``. ``from_discord``: the body is Discord's own
    answer (its API's JSON with a ``code``; the token endpoint's OAuth JSON): a 401 or 403
    without it is not Discord's word on the call (counted as an unreadable answer)."""
    status = response.status_code
    if status == 429:
        return Limit(status, retry_after(response), is_global(response), is_shared(response))
    if status not in (401, 403):
        return None
    code = error_code(response)
    if from_discord and not (status == 403 and code == BLOCKED_CODE):
        return None
    if not from_discord:
        http.unreadable(endpoint)
    log.warning("Discord %s answered %s (code %s): blocked?", endpoint, status, code)
    return Limit(status)


def json_body(response: Answer) -> Any:
    """The body as JSON; ``None`` when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def error_code(response: Answer) -> int | None:
    """Discord's error ``code`` (an integer in a JSON object), or ``None``."""
    body = json_body(response)
    code = body.get("code") if isinstance(body, dict) else None
    return code if type(code) is int else None


def is_global(response: Answer) -> bool:
    """Whether a 429 is Discord's global limit (every route waits): the JSON body's
    ``global``, or the ``X-RateLimit-Global`` / ``X-RateLimit-Scope: global`` headers."""
    body = json_body(response)
    if isinstance(body, dict) and body.get("global") is True:
        return True
    headers = response.headers
    return (
        headers.get("x-ratelimit-global", "").lower() == "true"
        or headers.get("x-ratelimit-scope", "").lower() == "global"
    )


def is_shared(response: Answer) -> bool:
    """Whether a 429 is a limit shared per resource (``X-RateLimit-Scope: shared``): every
    caller of the resource meets it, whatever its token (and it does not count towards
    Discord's limit of invalid requests)."""
    return response.headers.get("x-ratelimit-scope", "").lower() == "shared"


def used_up_for(response: Answer) -> float | None:
    """Seconds until the route's limit resets when ``response`` says it has no call left
    (``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset-After``, which Discord sends with
    its answers: "not making requests on exhausted buckets until after they have reset"
    avoids the 429s that count towards its limit of invalid requests); ``None`` otherwise."""
    headers = response.headers
    try:
        remaining = int(headers.get("x-ratelimit-remaining", ""))
        seconds = float(headers.get("x-ratelimit-reset-after", ""))
    except ValueError:
        return None
    if remaining > 0 or not seconds >= 0:  # NaN says nothing
        return None
    return seconds


def retry_after(response: Answer) -> float | None:
    """Seconds to wait: the JSON body's ``retry_after`` (a float), else the ``Retry-After``
    header; ``None`` when neither says (Cloudflare's HTML 429)."""
    body = json_body(response)
    value = body.get("retry_after") if isinstance(body, dict) else None
    if value is None:
        value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and seconds >= 0 else None
