"""Discord's guild member roles over HTTP, with the bot's token, on the process's one
``DiscordHttp`` client (its User-Agent, timeouts and metrics).

https://discord.com/developers/docs/resources/guild#add-guild-member-role: ``PUT`` / ``DELETE
/guilds/{guild}/members/{user}/roles/{role}`` answer 204; a reason goes in
``X-Audit-Log-Reason`` (URL-encoded). Every answer, or the lack of one, becomes a
``RoleCallResult``; the token is never logged.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from urllib.parse import quote

from adapters.discord_limits import error_code, limit_of, used_up_for
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
        result = self._result(endpoint, response)
        if result.outcome is RoleCallOutcome.RATE_LIMITED:
            return result  # its retry_after says how long
        return replace(result, reset_after=used_up_for(response))

    def _result(self, endpoint: str, response: Answer) -> RoleCallResult:
        status = response.status_code
        if 200 <= status < 300:
            return RoleCallResult(RoleCallOutcome.DONE, status=status)
        if status >= 500:
            return RoleCallResult(RoleCallOutcome.UNAVAILABLE, status=status)
        code = error_code(response)
        limit = limit_of(self._http, endpoint, response, from_discord=code is not None)
        if limit is not None:
            # A 429, or a block of the address (Cloudflare's, or a proxy's refusal): nothing
            # this member did, and likely every call's answer for a while. Paused, never
            # finished as refused (which would end every change asked for while it lasts,
            # each call prolonging it).
            return RoleCallResult(
                RoleCallOutcome.RATE_LIMITED,
                retry_after=limit.retry_after,
                status=status,
                global_limit=limit.global_limit,
            )
        if code is None and status == 404:
            # Not Discord's JSON (a wrong API address, a proxy's page): tried again, as a 5xx.
            self._http.unreadable(endpoint)
            return RoleCallResult(RoleCallOutcome.UNAVAILABLE, status=status)
        outcome = _CODES.get(code, RoleCallOutcome.REJECTED) if code else RoleCallOutcome.REJECTED
        if outcome is RoleCallOutcome.REJECTED:
            log.warning("Discord %s answered %s (code %s)", endpoint, status, code)
        return RoleCallResult(outcome, status=status)
