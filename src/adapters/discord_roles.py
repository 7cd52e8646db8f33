"""Discord's guild member roles over HTTP, with the bot's token, on the process's one
``DiscordHttp`` client (its User-Agent, timeouts and metrics).

https://discord.com/developers/docs/resources/guild#add-guild-member-role: ``PUT`` / ``DELETE
/guilds/{guild}/members/{user}/roles/{role}`` answer 204; a reason goes in
``X-Audit-Log-Reason`` (URL-encoded). Every answer, or the lack of one, becomes a
``RoleCallResult``; the token is never logged.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from adapters.discord_oauth import Answer, DiscordHttp, HttpFailure
from domain.model import DiscordId, LinkedRole
from domain.ports import RoleCallOutcome, RoleCallResult

log = logging.getLogger(__name__)

# Discord's JSON error codes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
_CODES = {
    10004: RoleCallOutcome.UNKNOWN_GUILD,  # Unknown Guild
    10007: RoleCallOutcome.NOT_A_MEMBER,  # Unknown Member
    10011: RoleCallOutcome.UNKNOWN_ROLE,  # Unknown Role
    10013: RoleCallOutcome.NOT_A_MEMBER,  # Unknown User
    50001: RoleCallOutcome.UNKNOWN_GUILD,  # Missing Access (the bot is not in the server)
    50013: RoleCallOutcome.MISSING_PERMISSIONS,  # Missing Permissions
}
_REASON_MAX = 512  # Discord's limit for X-Audit-Log-Reason
# Discord's JSON for an address Cloudflare blocks ("internal network error", since 2023,
# discord/discord-api-docs#6473; before, and still at times, an HTML page): every call gets a
# 403 while the block lasts.
_BLOCKED = 40333


class HttpDiscordGuildRoles:
    def __init__(self, *, bot_token: str, api_url: str, http: DiscordHttp) -> None:
        self._authorization = f"Bot {bot_token}"
        self._api = api_url.rstrip("/")
        self._http = http

    async def add_role(self, role: LinkedRole, member: DiscordId, *, reason: str) -> RoleCallResult:
        return await self._call("PUT", "member_role_add", role, member, reason)

    async def remove_role(
        self, role: LinkedRole, member: DiscordId, *, reason: str
    ) -> RoleCallResult:
        return await self._call("DELETE", "member_role_remove", role, member, reason)

    async def _call(
        self, method: str, endpoint: str, role: LinkedRole, member: DiscordId, reason: str
    ) -> RoleCallResult:
        url = f"{self._api}/guilds/{role.guild_id}/members/{member}/roles/{role.role_id}"
        headers = {
            "Authorization": self._authorization,
            "X-Audit-Log-Reason": quote(reason[:_REASON_MAX], safe=" "),
        }
        try:
            response = await self._http.request(endpoint, method, url, headers=headers)
        except HttpFailure as exc:
            log.warning("Discord %s failed: %s", endpoint, type(exc).__name__)
            return RoleCallResult(RoleCallOutcome.UNAVAILABLE)
        return self._result(endpoint, response)

    def _result(self, endpoint: str, response: Answer) -> RoleCallResult:
        status = response.status_code
        if 200 <= status < 300:
            return RoleCallResult(RoleCallOutcome.DONE, status=status)
        if status == 429:
            return RoleCallResult(
                RoleCallOutcome.RATE_LIMITED,
                retry_after=_retry_after(response),
                status=status,
                global_limit=_global(response),
            )
        if status >= 500:
            return RoleCallResult(RoleCallOutcome.UNAVAILABLE, status=status)
        code = _error_code(response)
        if code is None and status in (401, 403, 404):
            # Not Discord's JSON (a proxy's page, say): an answer we cannot act on.
            self._http.unreadable(endpoint)
            if status == 404:  # a wrong API address, a proxy's page: tried again, as a 5xx
                return RoleCallResult(RoleCallOutcome.UNAVAILABLE, status=status)
        if (code is None and status in (401, 403)) or (status == 403 and code == _BLOCKED):
            # Cloudflare blocking this address (DISCORD.md: "HTML 429/403"; or Discord's
            # 40333), or a proxy's refusal: nothing this member did, and likely every call's
            # answer for a while. Paused like Cloudflare's 429, never finished as refused (which
            # would end every change asked for while it lasts, each call prolonging it).
            log.warning("Discord %s answered %s (code %s): blocked?", endpoint, status, code)
            return RoleCallResult(RoleCallOutcome.RATE_LIMITED, status=status)
        outcome = _CODES.get(code, RoleCallOutcome.REJECTED) if code else RoleCallOutcome.REJECTED
        if outcome is RoleCallOutcome.REJECTED:
            log.warning("Discord %s answered %s (code %s)", endpoint, status, code)
        return RoleCallResult(outcome, status=status)


def _error_code(response: Answer) -> int | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if type(code) is int else None


def _global(response: Answer) -> bool:
    """Whether a 429 is Discord's global limit (every route waits): the JSON body's
    ``global``, or the ``X-RateLimit-Global`` / ``X-RateLimit-Scope: global`` headers."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("global") is True:
        return True
    headers = response.headers
    return (
        headers.get("x-ratelimit-global", "").lower() == "true"
        or headers.get("x-ratelimit-scope", "").lower() == "global"
    )


def _retry_after(response: Answer) -> float | None:
    """Seconds to wait: the JSON body's ``retry_after`` (a float), else the ``Retry-After``
    header; ``None`` when neither says (Cloudflare's HTML 429)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    value = body.get("retry_after") if isinstance(body, dict) else None
    if value is None:
        value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and seconds >= 0 else None
