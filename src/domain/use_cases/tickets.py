"""The ``/link`` ticket: issued in Discord, shown on the web. Confirming it is a Discord round
trip (``StartTicketLink``, then ``CompleteDiscordAuth``): a ticket is a hint, never a credential."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.model import ONE_TIME_SECRET_TTL, Account, DiscordUser, Link, LinkTicket
from domain.ports import Clock, TokenIssuer, UnitOfWorkFactory
from domain.use_cases._secrets import use_secret
from domain.use_cases._shared import digest_of


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
        async with self._uow(read_only=True) as uow:
            return await use_secret(
                uow.link_tickets, digest_of(self._tokens, token), self._clock.now(), spend=False
            )
