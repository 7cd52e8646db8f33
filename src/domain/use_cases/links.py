"""Reading and removing links: the bot's /whoami and /unlink, the account page, the API."""

from __future__ import annotations

from dataclasses import dataclass

from domain import errors
from domain.model import Account, AccountId, AuditEvent, AuditKind, DiscordId, EmailKind, Link
from domain.policies import unlink_refusal
from domain.ports import Clock, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._shared import queue_notice


@dataclass(frozen=True, slots=True)
class LinkedAccount:
    account: Account
    link: Link


async def _unlink(uow: UnitOfWork, link: Link, clock: Clock, *, via: str) -> LinkedAccount:
    account = await uow.accounts.get(link.account_id)
    if account is None:  # the foreign key makes this a concurrent account deletion
        raise errors.NotLinked()
    if (refusal := unlink_refusal(account)) is not None:
        raise refusal()
    if not await uow.links.remove(link):
        raise errors.NotLinked()  # removed concurrently
    now = clock.now()
    await uow.audit.record(
        AuditEvent(AuditKind.UNLINKED, now, link.account_id, link.discord_id, {"via": via})
    )
    await queue_notice(
        uow, account, EmailKind.DISCORD_UNLINKED, now, discord_username=link.discord_username
    )
    await uow.commit()
    return LinkedAccount(account, link)


class UnlinkAccount:
    """The account page's "unlink Discord"."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(self, account_id: AccountId) -> Link:
        async with self._uow() as uow:
            link = await uow.links.get_by_account(account_id)
            if link is None:
                raise errors.NotLinked()
            return (await _unlink(uow, link, self._clock, via="web")).link


class UnlinkDiscord:
    """``/unlink`` in Discord: the invoker's Discord id names the link."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(self, discord_id: DiscordId) -> LinkedAccount:
        async with self._uow() as uow:
            link = await uow.links.get_by_discord_id(discord_id)
            if link is None:
                raise errors.NotLinked("This Discord account is not linked to TaskFlow.")
            return await _unlink(uow, link, self._clock, via="discord")


class WhoAmI:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self, discord_id: DiscordId) -> LinkedAccount | None:
        async with self._uow() as uow:
            link = await uow.links.get_by_discord_id(discord_id)
            account = await uow.accounts.get(link.account_id) if link else None
        return LinkedAccount(account, link) if account and link else None


class LookUpLink:
    """The API's question: which TaskFlow account is this Discord id?"""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self, discord_id: str | int | DiscordId) -> Link:
        parsed = DiscordId.parse(discord_id)
        async with self._uow() as uow:
            link = await uow.links.get_by_discord_id(parsed)
        if link is None:
            raise errors.NotFound(f"Discord id {parsed} is not linked to a TaskFlow account.")
        return link


class LinkOfAccount:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self, account_id: AccountId) -> Link | None:
        async with self._uow() as uow:
            return await uow.links.get_by_account(account_id)
