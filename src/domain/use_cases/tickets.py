"""The ``/link`` ticket: issued in Discord, shown and redeemed on the web."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain import errors
from domain.model import ONE_TIME_SECRET_TTL, Account, AccountId, DiscordUser, Link, LinkTicket
from domain.ports import Clock, TokenIssuer, UnitOfWorkFactory
from domain.use_cases._secrets import use_secret
from domain.use_cases._shared import LinkResult, apply_link, retry_on_conflict


@dataclass(frozen=True, slots=True)
class TicketIssued:
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AlreadyLinked:
    account: Account
    link: Link


class IssueLinkTicket:
    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, discord: DiscordUser) -> TicketIssued | AlreadyLinked:
        now = self._clock.now()
        async with self._uow() as uow:
            link = await uow.links.get_by_discord_id(discord.id)
            if link is not None:
                account = await uow.accounts.get(link.account_id)
                if account is not None:
                    return AlreadyLinked(account, link)
            secret = self._tokens.issue()
            expires_at = now + ONE_TIME_SECRET_TTL
            await uow.link_tickets.add(LinkTicket(secret.digest, discord, now, expires_at))
            await uow.commit()
        return TicketIssued(secret.token, expires_at)


class ShowLinkTicket:
    """Look at a ticket without using it (the confirm page)."""

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, token: str) -> LinkTicket:
        async with self._uow() as uow:
            return await use_secret(
                uow.link_tickets, self._tokens, token, self._clock.now(), spend=False
            )


class RedeemLinkTicket:
    """Use a ticket once to link its Discord account to the signed-in account.

    Consuming and linking share one transaction: a refused link leaves the ticket unused,
    and of concurrent redeemers exactly one consumes it.
    """

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, token: str, account_id: AccountId) -> LinkResult:
        async def attempt() -> LinkResult:
            now = self._clock.now()
            async with self._uow() as uow:
                ticket = await use_secret(uow.link_tickets, self._tokens, token, now, spend=True)
                if await uow.accounts.get(account_id) is None:
                    raise errors.NotSignedIn()
                result = await apply_link(
                    uow, discord=ticket.discord, account_id=account_id, now=now, via="ticket"
                )
                await uow.commit()
            return result

        return await retry_on_conflict(attempt)
