"""The ``/link`` ticket: issued in Discord, shown on the web. Confirming it is a Discord round
trip (``StartTicketLink``, then ``CompleteDiscordAuth``): a ticket is a hint, never a credential."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain import errors
from domain.model import ONE_TIME_SECRET_TTL, Account, DiscordUser, Link, LinkTicket
from domain.policies import SecretStatus
from domain.ports import Clock, LinkTicketRepository, TokenIssuer, UnitOfWorkFactory
from domain.use_cases._secrets import default_refusal, use_secret
from domain.use_cases._shared import digest_of

TICKET_SPENT = (
    "This button has already been used, or it was replaced: a newer /link, or linking or "
    "unlinking its Discord account, ends the earlier buttons."
)


@dataclass(frozen=True, slots=True)
class TicketIssued:
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AlreadyLinked:
    account: Account
    link: Link


def ticket_refusal(status: SecretStatus) -> errors.DomainError:
    """A spent ticket was used, or ended unused: by a newer ``/link``, a link or an unlink.
    Each refusal is a ``TicketRefused``: the page back from Discord says to run ``/link``
    again, not to start again from the sign-in page (the state's refusals)."""
    if status is SecretStatus.CONSUMED:
        return errors.TicketSpent(TICKET_SPENT)
    if status is SecretStatus.EXPIRED:
        return errors.TicketExpired()
    if status is SecretStatus.UNKNOWN:
        return errors.TicketUnknown()
    return default_refusal(status)  # a ticket is bound to no browser: never reached


async def refuse_replaced(tickets: LinkTicketRepository, ticket: LinkTicket) -> None:
    """Only the newest button works. A /link spends the tickets committed before it, so two
    /link commands of one Discord account at once may each leave its own live: the older one
    (by ``created_at``, then digest) is refused here, on its page and at its redemption, in the
    transaction that spends it. No cost on /link itself (no lock, no extra round trip): a
    redemption is rare and a Discord round trip long, a /link is a button press."""
    if await tickets.replaced(ticket):
        raise errors.TicketReplaced()


class IssueLinkTicket:
    """A new button ends the Discord account's earlier ones: a forwarded or leaked older one
    must not outlive it (nor a link or an unlink, which end them too)."""

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
            # One live button per Discord account: the earlier ones end here. The spend never
            # sees the new one, nor one a concurrent /link adds before it commits: of two such,
            # both left live, the older is refused where it is used (``refuse_replaced``).
            secret = self._tokens.issue()
            expires_at = now + ONE_TIME_SECRET_TTL
            ticket = LinkTicket(secret.digest, discord, now, expires_at)
            await uow.link_tickets.add_replacing(ticket)
            await uow.commit()
        return TicketIssued(secret.token, expires_at)


class ShowLinkTicket:
    """Look at a ticket without using it (the confirm page)."""

    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, token: str) -> LinkTicket:
        async with self._uow(read_only=True) as uow:
            ticket = await use_secret(
                uow.link_tickets,
                digest_of(self._tokens, token),
                self._clock.now(),
                spend=False,
                refusal=ticket_refusal,
            )
            await refuse_replaced(uow.link_tickets, ticket)
            return ticket
