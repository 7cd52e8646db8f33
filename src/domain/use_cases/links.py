"""Reading and removing links: the bot's /whoami and /unlink, the account page, the API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from domain import errors
from domain.model import (
    MAX_SNOWFLAKE,
    Account,
    AccountId,
    ApiKey,
    ApiScope,
    AuditEvent,
    AuditKind,
    DiscordId,
    EmailKind,
    Link,
    LinkedRole,
    LinkRow,
    RoleAction,
)
from domain.policies import require_scope, unlink_refusal
from domain.ports import Clock, LinkDirectory, TokenIssuer, UnitOfWork, UnitOfWorkFactory
from domain.use_cases._passwords import Passwords
from domain.use_cases._shared import prove_identity, queue_notice, queue_role_changes
from domain.use_cases._webhooks import NO_WEBHOOKS, WebhookOutbox
from domain.webhooks import link_deleted


@dataclass(frozen=True, slots=True)
class LinkedAccount:
    account: Account
    link: Link


async def _unlink(
    uow: UnitOfWork,
    link: Link,
    clock: Clock,
    *,
    via: str,
    roles: Sequence[LinkedRole],
    webhooks: WebhookOutbox,
    keep_session: str | None = None,
    audit: dict[str, str] | None = None,
) -> LinkedAccount:
    """Remove the link and end the account's sessions (but ``keep_session``, the one asking):
    a session that Discord sign-in opened must not outlive the link. The account is locked
    first, as a Discord sign-in locks it before opening a session (they cannot interleave).
    The linked members' ``roles`` are queued for removal in the same transaction."""
    account = await uow.accounts.lock(link.account_id)
    if account is None:  # the foreign key makes this a concurrent account deletion
        raise errors.NotLinked()
    if keep_session is not None and await uow.sessions.get(keep_session) is None:
        raise errors.NotSignedIn()  # the session asking ended meanwhile
    if (refusal := unlink_refusal(account)) is not None:
        raise refusal()
    if not await uow.links.remove(link):
        raise errors.NotLinked()  # removed concurrently
    now = clock.now()
    # Its /link buttons end: one issued before the link must not link it again.
    await uow.link_tickets.consume_for_discord(link.discord_id, now)
    # Remembered: an email match never links this account again without a proof.
    await uow.accounts.update(replace(account, discord_unlinked_at=now))
    await uow.sessions.remove_for_account(link.account_id, keep=keep_session)
    # Linked Roles: Discord must hear "not linked" (then the kept tokens go), at once.
    await uow.role_connection_tokens.mark_due(link.discord_id, now)
    await uow.audit.record(
        AuditEvent(
            AuditKind.UNLINKED, now, link.account_id, link.discord_id, {"via": via, **(audit or {})}
        )
    )
    await queue_role_changes(
        uow,
        roles,
        RoleAction.REMOVE,
        discord_id=link.discord_id,
        account_id=link.account_id,
        now=now,
    )
    await webhooks.publish(uow, link_deleted(link, now=now, via=via))
    await queue_notice(
        uow,
        account,
        EmailKind.DISCORD_UNLINKED,
        now,
        discord_username=link.discord_username,
        discord_id=str(link.discord_id),
    )
    await uow.commit()
    return LinkedAccount(account, link)


class UnlinkAccount:
    """The account page's "unlink Discord": a sensitive change (see ``prove_identity``)."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        passwords: Passwords,
        *,
        linked_roles: Sequence[LinkedRole] = (),
        webhooks: WebhookOutbox = NO_WEBHOOKS,
    ) -> None:
        self._uow, self._tokens, self._clock, self._passwords = uow, tokens, clock, passwords
        self._roles = tuple(linked_roles)
        self._webhooks = webhooks

    async def execute(self, *, session_token: str | None, current_password: str | None) -> Link:
        session, account = await prove_identity(
            self._uow,
            self._tokens,
            self._clock,
            self._passwords,
            session_token=session_token,
            current_password=current_password,
        )
        async with self._uow() as uow:
            link = await uow.links.get_by_account(account.id)
            if link is None:
                raise errors.NotLinked()
            unlinked = await _unlink(
                uow,
                link,
                self._clock,
                via="web",
                roles=self._roles,
                webhooks=self._webhooks,
                keep_session=session.digest,
            )
        return unlinked.link


class UnlinkDiscord:
    """``/unlink`` in Discord: the invoker's Discord id names the link."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        *,
        linked_roles: Sequence[LinkedRole] = (),
        webhooks: WebhookOutbox = NO_WEBHOOKS,
    ) -> None:
        self._uow, self._clock, self._webhooks = uow, clock, webhooks
        self._roles = tuple(linked_roles)

    async def execute(self, discord_id: DiscordId) -> LinkedAccount:
        async with self._uow() as uow:
            link = await uow.links.get_by_discord_id(discord_id)
            if link is None:
                raise errors.NotLinked("This Discord account is not linked to TaskFlow.")
            return await _unlink(
                uow, link, self._clock, via="discord", roles=self._roles, webhooks=self._webhooks
            )


class UnlinkWithApiKey:
    """``DELETE /api/v1/links/{discord_id}``: a service unlinks, with a key allowed to
    (``links:write``). The audit trail names the key that asked."""

    LOCK_OUT = (
        "Discord is the only way to sign in to this account: unlinking it would lock its "
        "owner out. Once they have set a password (on their account page), it can be unlinked."
    )

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        *,
        linked_roles: Sequence[LinkedRole] = (),
        webhooks: WebhookOutbox = NO_WEBHOOKS,
    ) -> None:
        self._uow, self._clock, self._webhooks = uow, clock, webhooks
        self._roles = tuple(linked_roles)

    async def execute(self, discord_id: DiscordId, key: ApiKey) -> LinkedAccount:
        require_scope(key, ApiScope.LINKS_WRITE)
        try:
            async with self._uow() as uow:
                link = await uow.links.get_by_discord_id(discord_id)
                if link is None:
                    raise self.not_linked(key)
                return await _unlink(
                    uow,
                    link,
                    self._clock,
                    via="api",
                    roles=self._roles,
                    webhooks=self._webhooks,
                    audit={"api_key": key.name, "api_key_id": str(key.id)},
                )
        except (errors.NotLinked, errors.UnlinkWouldLockOut) as refused:
            if ApiScope.LINKS_READ not in key.scopes:
                raise errors.NothingUnlinked() from refused
            if isinstance(refused, errors.UnlinkWouldLockOut):
                # Said to the service that asked: the account's owner is not reading.
                raise errors.UnlinkWouldLockOut(self.LOCK_OUT) from refused
            raise

    @staticmethod
    def not_linked(key: ApiKey) -> errors.DomainError:
        """The refusal for an id linked to nothing, as ``key`` may be told it."""
        if ApiScope.LINKS_READ in key.scopes:
            return errors.NotLinked("This Discord account is not linked to TaskFlow.")
        return errors.NothingUnlinked()


class WhoAmI:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self, discord_id: DiscordId) -> LinkedAccount | None:
        async with self._uow(read_only=True) as uow:
            link = await uow.links.get_by_discord_id(discord_id)
            account = await uow.accounts.get(link.account_id) if link else None
        return LinkedAccount(account, link) if account and link else None


class LookUpLink:
    """The API's question: which TaskFlow account is this Discord id? One query."""

    def __init__(self, directory: LinkDirectory) -> None:
        self._directory = directory

    async def execute(self, discord_id: str | int | DiscordId) -> Link:
        parsed = DiscordId.parse(discord_id)
        link = await self._directory.link_by_discord_id(parsed)
        if link is None:
            raise errors.NotFound(f"Discord id {parsed} is not linked to a TaskFlow account.")
        return link


MAX_BULK_LOOKUP = 1000


@dataclass(frozen=True, slots=True)
class BulkLookup:
    links: Sequence[LinkRow]  # in the order the ids were asked for, each once
    missing: Sequence[int]  # the ids asked for that are not linked, in that order


class LookUpLinks:
    """The same question for up to ``MAX_BULK_LOOKUP`` ids at once, in one query."""

    def __init__(self, directory: LinkDirectory) -> None:
        self._directory = directory

    async def execute(self, discord_ids: Sequence[object]) -> BulkLookup:
        if not discord_ids:
            raise errors.InvalidInput("Send at least one Discord id.")
        if len(discord_ids) > MAX_BULK_LOOKUP:
            raise errors.InvalidInput(
                f"Send at most {MAX_BULK_LOOKUP} Discord ids at once ({len(discord_ids)} sent)."
            )
        # Each once, in the order asked, as numbers. Ids that are already Discord ids' numbers
        # (the API's) are taken as they are (a DiscordId made for each was a tenth of the
        # request's CPU); anything else is read as DiscordId.parse reads it, and refused so.
        numbers = [d for d in discord_ids if type(d) is int and 0 < d <= MAX_SNOWFLAKE]
        if len(numbers) < len(discord_ids):
            numbers = [DiscordId.parse(d).value for d in discord_ids]
        wanted = list(dict.fromkeys(numbers))
        found = {row[0]: row for row in await self._directory.link_rows_by_discord_ids(wanted)}
        return BulkLookup(
            [found[d] for d in wanted if d in found], [d for d in wanted if d not in found]
        )


class LinkOfAccount:
    def __init__(self, uow: UnitOfWorkFactory, *, role_connections: bool = False) -> None:
        """``role_connections``: Linked Roles is on; otherwise a loss of its connection
        recorded while it was is not reported (nothing can connect again)."""
        self._uow, self._role_connections = uow, role_connections

    async def execute(self, account_id: AccountId) -> Link | None:
        async with self._uow(read_only=True) as uow:
            link = await uow.links.get_by_account(account_id)
        if link is not None and not self._role_connections:
            link = replace(link, role_connection_lost_at=None, role_connection_lost_why=None)
        return link
