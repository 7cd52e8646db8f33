"""One contract per repository port. Subclass ``RepositoryContract`` and provide a
``uow_factory`` fixture; the in-memory adapter and the SQL adapters run the same tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from adapters.queue_listener import (
    EMAIL_QUEUE_CHANNEL,
    ROLE_CONNECTION_CHANNEL,
    WEBHOOK_QUEUE_CHANNEL,
    QueueBell,
)
from domain import errors
from domain.model import (
    Account,
    AccountId,
    ApiKey,
    ApiScope,
    AuditEvent,
    AuditKind,
    AuthPurpose,
    DeliveryStatus,
    DiscordId,
    DiscordUser,
    EmailKind,
    EmailPurpose,
    EmailToken,
    Link,
    LinkProposal,
    LinkTicket,
    LostRoleConnection,
    OutgoingEmail,
    PendingLogin,
    RoleConnectionCounts,
    RoleConnectionLoss,
    RoleConnectionLossCount,
    RoleConnectionToken,
    Session,
    SignInMethod,
)
from domain.ports import UnitOfWork, UnitOfWorkFactory
from domain.webhooks import (
    GoneEndpoint,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookEventType,
    WebhookState,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
LATER = NOW + timedelta(minutes=10)


def account(username: str = "alice", email: str | None = "alice@example.com") -> Account:
    return Account(AccountId.new(), username, email, True, "argon2-hash", NOW)


def link(discord_id: int, account_id: AccountId) -> Link:
    return Link(DiscordId(discord_id), account_id, NOW, f"d{discord_id}", "Global", "avatarhash")


def pending(digest: str = "s" * 64, **changes: object) -> PendingLogin:
    row = PendingLogin(digest, AuthPurpose.LOGIN, "b" * 64, "/account", NOW, LATER)
    return replace(row, **changes)  # type: ignore[arg-type]


def role_token(discord_id: int, *, due: datetime = NOW, sealed: str = "") -> RoleConnectionToken:
    return RoleConnectionToken(
        DiscordId(discord_id),
        sealed or f"v1.kid.sealed-{discord_id}",
        expires_at=LATER,
        next_push_at=due,
        created_at=NOW,
        updated_at=NOW,
    )


def ticket(digest: str = "t" * 64) -> LinkTicket:
    return LinkTicket(digest, DiscordUser(DiscordId(77), "dee", "Dee", None), NOW, LATER)


HOOK_A = WebhookEndpoint("a" * 64, "a.example")
HOOK_B = WebhookEndpoint("b" * 64, "b.example")


def webhook(
    at: datetime = NOW, *endpoints: WebhookEndpoint
) -> tuple[WebhookEvent, list[WebhookDelivery]]:
    """An event and its deliveries (to ``HOOK_A`` unless endpoints are named)."""
    event = WebhookEvent(uuid.uuid4(), WebhookEventType.LINK_CREATED, at, '{"type":"x"}')
    deliveries = [
        WebhookDelivery(uuid.uuid4(), event, e.key, e.host, at, at) for e in endpoints or (HOOK_A,)
    ]
    return event, deliveries


async def _add_pending(uow: UnitOfWork, *rows: PendingLogin) -> None:
    for row in rows:
        await uow.pending_logins.add(row)


async def write(
    factory: UnitOfWorkFactory, step: Callable[[UnitOfWork], Awaitable[object]]
) -> None:
    async with factory() as uow:
        await step(uow)
        await uow.commit()


class RepositoryContract:
    @pytest.fixture
    def uow_factory(self) -> UnitOfWorkFactory:
        raise NotImplementedError

    @pytest.fixture
    def bell(self) -> QueueBell:
        """The bell the units of work of ``uow_factory`` ring."""
        raise NotImplementedError

    # -- unit of work ----------------------------------------------------------------------

    async def test_a_commit_that_queued_work_rings_its_queues_and_nothing_else_does(
        self, uow_factory: UnitOfWorkFactory, bell: QueueBell
    ) -> None:
        """This process's workers are woken by the commits that queued work for them: once
        per commit, only for the queues written to, and never by a rollback or a conflict."""
        heard: list[str] = []
        channels = (EMAIL_QUEUE_CHANNEL, WEBHOOK_QUEUE_CHANNEL, ROLE_CONNECTION_CHANNEL)
        stops = [bell.subscribe(c, lambda c=c: heard.append(c)) for c in channels]  # type: ignore[misc]

        async def rung() -> list[str]:
            for _ in range(5):  # the wake-ups are scheduled on this loop
                await asyncio.sleep(0)
            found = sorted(heard)
            heard.clear()
            return found

        owner = account()
        try:
            await write(uow_factory, lambda uow: uow.accounts.add(owner))
            assert await rung() == []  # nothing queued
            emails = [
                OutgoingEmail(uuid.uuid4(), EmailKind.VERIFY_EMAIL, "a@b.c", owner.id, NOW, NOW)
                for _ in range(2)
            ]
            async with uow_factory() as uow:
                await uow.outgoing_emails.add(emails[0])
                await uow.webhooks.add(*webhook())
                await uow.rollback()
                await uow.outgoing_emails.add(emails[1])
                await uow.commit()
            assert await rung() == [EMAIL_QUEUE_CHANNEL]  # the rolled back webhook: nothing
            async with uow_factory() as uow:
                await uow.outgoing_emails.add(emails[0])
                await uow.outgoing_emails.add(replace(emails[0], id=uuid.uuid4()))
                await uow.webhooks.add(*webhook())
                await uow.commit()
            assert await rung() == [EMAIL_QUEUE_CHANNEL, WEBHOOK_QUEUE_CHANNEL]  # once each
            with pytest.raises(errors.Conflict):  # the same email again
                await write(uow_factory, lambda uow: uow.outgoing_emails.add(emails[0]))
            async with uow_factory() as uow:
                await uow.outgoing_emails.add(replace(emails[0], id=uuid.uuid4()))
                # Abandoned without a commit (an exception, a refusal): nothing rings.
            assert await rung() == []
            await write(uow_factory, lambda uow: uow.role_connection_tokens.add(role_token(5)))
            assert await rung() == []  # a first grant is pushed by its own flow
            missing = DiscordId(6)
            await write(uow_factory, lambda uow: uow.role_connection_tokens.mark_due(missing, NOW))
            assert await rung() == []  # no such row: nothing made due
            await write(
                uow_factory, lambda uow: uow.role_connection_tokens.mark_due(DiscordId(5), LATER)
            )
            assert await rung() == [ROLE_CONNECTION_CHANNEL]
        finally:
            for stop in stops:
                stop()

    async def test_changes_are_discarded_unless_committed(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        first = account()
        async with uow_factory() as uow:
            await uow.accounts.add(first)
        async with uow_factory() as uow:
            assert await uow.accounts.get(first.id) is None

    async def test_an_exception_rolls_back(self, uow_factory: UnitOfWorkFactory) -> None:
        first = account()

        async def fail_midway() -> None:
            async with uow_factory() as uow:
                await uow.accounts.add(first)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await fail_midway()
        async with uow_factory() as uow:
            assert await uow.accounts.get(first.id) is None

    async def test_rollback_discards_and_commit_keeps(self, uow_factory: UnitOfWorkFactory) -> None:
        kept, dropped = account("kept", None), account("dropped", None)
        async with uow_factory() as uow:
            await uow.accounts.add(kept)
            await uow.commit()
            await uow.accounts.add(dropped)
            await uow.rollback()
        async with uow_factory() as uow:
            assert await uow.accounts.get(kept.id) == kept
            assert await uow.accounts.get(dropped.id) is None

    async def test_a_read_only_unit_of_work_reads_and_never_commits(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        first = account()
        await write(uow_factory, lambda uow: uow.accounts.add(first))
        async with uow_factory(read_only=True) as uow:
            assert await uow.accounts.get(first.id) == first
            with pytest.raises(RuntimeError):
                await uow.commit()

    # -- accounts ---------------------------------------------------------------------------

    async def test_account_round_trip(self, uow_factory: UnitOfWorkFactory) -> None:
        first = account()
        await write(uow_factory, lambda uow: uow.accounts.add(first))
        async with uow_factory() as uow:
            assert await uow.accounts.get(first.id) == first
            assert await uow.accounts.get_by_username("ALICE") == first
            assert await uow.accounts.get(AccountId.new()) is None

    async def test_usernames_are_unique_case_insensitively(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        await write(uow_factory, lambda uow: uow.accounts.add(account("Alice")))
        async with uow_factory() as uow:
            stored = await uow.accounts.get_by_username("alice")
            assert stored is not None
            assert stored.username == "alice"  # stored lower-cased by every adapter
        with pytest.raises(errors.Conflict):
            await write(uow_factory, lambda uow: uow.accounts.add(account("Alice", "x@y.z")))

    async def test_find_by_email_is_case_insensitive_and_returns_all(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        # Imported accounts sharing an address (marked so): find_by_email returns both.
        a = replace(account("a1", "Same@Example.com"), email_shared=True)
        b = replace(account("a2", " same@example.COM "), email_shared=True)
        c = account("a3", "other@example.com")
        d = account("a4", "ÄRGER@Example.de")

        async def add_all(uow: UnitOfWork) -> None:
            for row in (a, b, c, d):
                await uow.accounts.add(row)

        await write(uow_factory, add_all)
        async with uow_factory() as uow:
            found = await uow.accounts.find_by_email("SAME@example.com")
            assert {x.id for x in found} == {a.id, b.id}
            assert [x.id for x in await uow.accounts.find_by_email("ärger@example.de")] == [d.id]
            assert await uow.accounts.find_by_email("none@example.com") == []
            assert await uow.accounts.usernames_starting_with("a") == {"a1", "a2", "a3", "a4"}
            assert await uow.accounts.usernames_starting_with("A1") == {"a1"}

    async def test_an_address_is_on_one_account_only(self, uow_factory: UnitOfWorkFactory) -> None:
        first = account("first", "One@Example.com")
        await write(uow_factory, lambda uow: uow.accounts.add(first))
        with pytest.raises(errors.Conflict):
            await write(uow_factory, lambda uow: uow.accounts.add(account("b", "one@example.COM")))
        other = account("other", "other@example.com")
        await write(uow_factory, lambda uow: uow.accounts.add(other))
        taken = replace(other, email="ONE@example.com")
        with pytest.raises(errors.Conflict):
            await write(uow_factory, lambda uow: uow.accounts.update(taken))
        # Imported accounts marked as sharing an address stay out of the rule.
        shared = replace(account("legacy", "one@example.com"), email_shared=True)
        await write(uow_factory, lambda uow: uow.accounts.add(shared))
        no_email = account("none", None)
        await write(uow_factory, lambda uow: uow.accounts.add(no_email))
        await write(uow_factory, lambda uow: uow.accounts.add(account("none2", None)))
        async with uow_factory() as uow:
            assert {a.id for a in await uow.accounts.find_by_email("one@example.com")} == {
                first.id,
                shared.id,
            }
            assert await uow.accounts.get(shared.id) == shared

    async def test_concurrent_accounts_with_one_address_have_one_winner(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        async def add(i: int) -> None:
            await write(
                uow_factory, lambda uow: uow.accounts.add(account(f"racer{i}", "race@example.com"))
            )

        results = await asyncio.gather(*(add(i) for i in range(10)), return_exceptions=True)
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, errors.Conflict) for r in results if r is not None)

    async def test_update_account(self, uow_factory: UnitOfWorkFactory) -> None:
        first = account()
        await write(uow_factory, lambda uow: uow.accounts.add(first))
        changed = replace(
            first,
            email_verified=False,
            password_hash=None,
            email=None,
            device_epoch=3,
            discord_unlinked_at=NOW,
        )
        await write(uow_factory, lambda uow: uow.accounts.update(changed))
        async with uow_factory() as uow:
            assert await uow.accounts.get(first.id) == changed

    # -- links -----------------------------------------------------------------------------------

    async def test_link_round_trip_and_remove(self, uow_factory: UnitOfWorkFactory) -> None:
        owner = account()
        row = link(2**63 - 1, owner.id)

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(owner)
            await uow.links.add(row)

        await write(uow_factory, add)
        async with uow_factory() as uow:
            assert await uow.links.get_by_discord_id(row.discord_id) == row
            assert await uow.links.get_by_account(owner.id) == row
            assert await uow.links.get_by_discord_id(DiscordId(5)) is None
            assert await uow.links.hold_by_discord_id(row.discord_id) == row
            assert await uow.links.hold_by_discord_id(DiscordId(5)) is None
        async with uow_factory() as uow:
            # A link to another account under the same Discord id is not this link.
            assert await uow.links.remove(replace(row, account_id=AccountId.new())) is False
            assert await uow.links.remove(row) is True
            assert await uow.links.remove(row) is False
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.links.get_by_account(owner.id) is None

    async def test_a_links_lost_role_connection_is_recorded_and_cleared(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        owner = account()
        row = link(2**63 - 2, owner.id)

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(owner)
            await uow.links.add(row)

        await write(uow_factory, add)
        lost = replace(
            row, role_connection_lost_at=NOW, role_connection_lost_why=RoleConnectionLoss.REVOKED
        )
        await write(
            uow_factory,
            lambda uow: uow.links.set_role_connection_lost(
                row.discord_id, NOW, RoleConnectionLoss.REVOKED
            ),
        )
        # Nothing for a Discord id linked to nothing.
        await write(
            uow_factory,
            lambda uow: uow.links.set_role_connection_lost(
                DiscordId(6), NOW, RoleConnectionLoss.UNREADABLE
            ),
        )
        async with uow_factory() as uow:
            assert await uow.links.get_by_discord_id(row.discord_id) == lost
            assert await uow.links.get_by_account(owner.id) == lost
            assert await uow.links.get_by_discord_id(DiscordId(6)) is None
        await write(
            uow_factory, lambda uow: uow.links.set_role_connection_lost(row.discord_id, None, None)
        )
        async with uow_factory() as uow:
            assert await uow.links.get_by_discord_id(row.discord_id) == row

    async def test_one_account_per_discord_and_one_discord_per_account(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        alice, bob = account("alice", None), account("bob", None)

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(alice)
            await uow.accounts.add(bob)
            await uow.links.add(link(10, alice.id))

        await write(uow_factory, add)
        with pytest.raises(errors.Conflict):
            await write(uow_factory, lambda uow: uow.links.add(link(10, bob.id)))
        with pytest.raises(errors.Conflict):
            await write(uow_factory, lambda uow: uow.links.add(link(11, alice.id)))

    async def test_link_to_a_missing_account_is_refused(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        with pytest.raises(errors.Conflict):
            await write(uow_factory, lambda uow: uow.links.add(link(12, AccountId.new())))
        with pytest.raises(errors.Conflict):
            await write(
                uow_factory,
                lambda uow: uow.sessions.add(Session("z" * 64, AccountId.new(), NOW, LATER)),
            )

    # -- one-time secrets --------------------------------------------------------------------------

    async def test_pending_login_round_trip_and_single_consumption(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        owner = account()
        row = pending(account_id=owner.id, purpose=AuthPurpose.TICKET, ticket_digest="t" * 64)

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(owner)
            await uow.pending_logins.add(row)

        await write(uow_factory, add)
        async with uow_factory() as uow:
            assert await uow.pending_logins.get(row.state_digest) == row
            consumed = await uow.pending_logins.consume(row.state_digest, NOW)
            assert consumed == replace(row, consumed_at=NOW)
            assert await uow.pending_logins.consume(row.state_digest, NOW) is None
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.pending_logins.consume(row.state_digest, NOW) is None
            assert await uow.pending_logins.consume("u" * 64, NOW) is None
            stored = await uow.pending_logins.get(row.state_digest)
            assert stored is not None
            assert stored.consumed_at == NOW

    async def test_a_spent_pending_login_is_marked_failed_and_an_unspent_one_is_not(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        spent, unspent = pending("s" * 64, consumed_at=NOW), pending("v" * 64)
        await write(uow_factory, lambda uow: uow.pending_logins.add(spent))
        await write(uow_factory, lambda uow: uow.pending_logins.add(unspent))
        later = NOW + timedelta(seconds=3)
        async with uow_factory() as uow:
            for digest in (spent.state_digest, unspent.state_digest, "u" * 64):
                await uow.pending_logins.mark_failed(digest, later)
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.pending_logins.get(spent.state_digest) == replace(
                spent, failed_at=later
            )
            assert await uow.pending_logins.get(unspent.state_digest) == unspent
            assert await uow.pending_logins.get("u" * 64) is None

    async def test_a_failed_pending_login_keeps_why(self, uow_factory: UnitOfWorkFactory) -> None:
        """The refusal's code is kept with the failure (told again by its callback's second
        load), and a code this version does not know reads back as it was written."""
        known, newer = pending("s" * 64, consumed_at=NOW), pending("n" * 64, consumed_at=NOW)
        await write(uow_factory, lambda uow: uow.pending_logins.add(known))
        await write(uow_factory, lambda uow: uow.pending_logins.add(newer))
        later = NOW + timedelta(seconds=3)
        async with uow_factory() as uow:
            await uow.pending_logins.mark_failed(known.state_digest, later, "ambiguous_email")
            await uow.pending_logins.mark_failed(newer.state_digest, later, "a_newer_reason")
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.pending_logins.get(known.state_digest) == replace(
                known, failed_at=later, failure="ambiguous_email"
            )
            assert await uow.pending_logins.get(newer.state_digest) == replace(
                newer, failed_at=later, failure="a_newer_reason"
            )

    async def test_a_spent_sign_in_records_its_account_and_an_unspent_one_does_not(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        owner = account()
        spent, unspent = pending("s" * 64, consumed_at=NOW), pending("v" * 64)
        await write(uow_factory, lambda uow: uow.accounts.add(owner))
        await write(uow_factory, lambda uow: uow.pending_logins.add(spent))
        await write(uow_factory, lambda uow: uow.pending_logins.add(unspent))
        async with uow_factory() as uow:
            for digest in (spent.state_digest, unspent.state_digest, "u" * 64):
                await uow.pending_logins.mark_signed_in(digest, owner.id)
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.pending_logins.get(spent.state_digest) == replace(
                spent, account_id=owner.id
            )
            assert await uow.pending_logins.get(unspent.state_digest) == unspent
            assert await uow.pending_logins.get("u" * 64) is None

    async def test_a_sign_in_locks_its_round_trip_and_reads_it_or_nothing(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """``lock`` returns the state's own row (as ``get`` reads it), whatever browser digests
        it holds besides; ``None`` for an unknown state, even when the browser has others."""
        mine, other = pending("s" * 64, consumed_at=NOW), pending("v" * 64)
        elsewhere = pending("w" * 64, browser_digest="c" * 64)
        await write(uow_factory, lambda uow: _add_pending(uow, mine, other, elsewhere))
        async with uow_factory() as uow:
            assert await uow.pending_logins.lock(mine.state_digest) == mine
            assert await uow.pending_logins.lock(mine.state_digest, {"b" * 64}) == mine
            assert await uow.pending_logins.lock(mine.state_digest, {"c" * 64, "d" * 64}) == mine
            assert await uow.pending_logins.lock("u" * 64) is None
            assert await uow.pending_logins.lock("u" * 64, {"b" * 64, "c" * 64}) is None
            await uow.commit()
        async with uow_factory() as uow:  # reading changed nothing
            for row in (mine, other, elsewhere):
                assert await uow.pending_logins.get(row.state_digest) == row

    async def test_a_sign_in_supersedes_its_browsers_other_round_trips(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """``supersede`` records the account on every round trip bound to the browser digests
        (spent or not, already superseded by someone else or not) but ``but``; rows of other
        browsers are left alone; it counts what it changed, so once more changes nothing."""
        first, second = account("first", None), account("second", None)
        signing_in = pending("s" * 64, consumed_at=NOW)
        waiting = pending("v" * 64, consumed_at=NOW)  # a first load still waiting on Discord
        unspent = pending("w" * 64)
        by_another = pending("x" * 64, superseded_by=second.id)
        old_binding = pending("y" * 64, browser_digest="c" * 64)
        other_browser = pending("z" * 64, browser_digest="d" * 64)
        rows = (signing_in, waiting, unspent, by_another, old_binding, other_browser)
        await write(uow_factory, lambda uow: _add_pending(uow, *rows))
        browser = {"b" * 64, "c" * 64}
        async with uow_factory() as uow:
            assert await uow.pending_logins.lock(signing_in.state_digest, browser) == signing_in
            count = await uow.pending_logins.supersede(browser, first.id, but="s" * 64)
            assert count == 4
            await uow.commit()
        async with uow_factory() as uow:
            get = uow.pending_logins.get
            assert await get(signing_in.state_digest) == signing_in
            for row in (waiting, unspent, by_another, old_binding):
                assert await get(row.state_digest) == replace(row, superseded_by=first.id)
            assert await get(other_browser.state_digest) == other_browser
            # Once more: nothing left to change.
            assert await uow.pending_logins.supersede(browser, first.id, but="s" * 64) == 0
            assert await uow.pending_logins.supersede((), first.id, but="s" * 64) == 0
            assert await uow.pending_logins.supersede({"e" * 64}, first.id, but="s" * 64) == 0
            # Another account's later sign-in records itself over it, its own row left out.
            assert await uow.pending_logins.supersede(browser, second.id, but="v" * 64) == 4
            await uow.commit()
        async with uow_factory() as uow:
            get = uow.pending_logins.get
            assert await get(signing_in.state_digest) == replace(
                signing_in, superseded_by=second.id
            )
            assert await get(waiting.state_digest) == replace(waiting, superseded_by=first.id)
            for row in (unspent, by_another, old_binding):
                assert await get(row.state_digest) == replace(row, superseded_by=second.id)
            assert await get(other_browser.state_digest) == other_browser

    async def test_a_sign_out_marks_its_browsers_round_trips_once(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """``mark_signed_out`` records ``now`` on the round trips bound to the browser digests
        that have none yet (an earlier sign-out's time is kept); rows of other browsers are
        left alone; it counts what it changed, so once more changes nothing."""
        earlier = NOW + timedelta(seconds=1)
        now = NOW + timedelta(seconds=3)
        spent, unspent = pending("s" * 64, consumed_at=NOW), pending("v" * 64)
        marked = pending("w" * 64, signed_out_at=earlier)
        old_binding = pending("y" * 64, browser_digest="c" * 64)
        other_browser = pending("z" * 64, browser_digest="d" * 64)
        rows = (spent, unspent, marked, old_binding, other_browser)
        await write(uow_factory, lambda uow: _add_pending(uow, *rows))
        browser = {"b" * 64, "c" * 64}
        async with uow_factory() as uow:
            assert await uow.pending_logins.mark_signed_out(browser, now) == 3
            await uow.commit()
        async with uow_factory() as uow:
            get = uow.pending_logins.get
            for row in (spent, unspent, old_binding):
                assert await get(row.state_digest) == replace(row, signed_out_at=now)
            assert await get(marked.state_digest) == marked
            assert await get(other_browser.state_digest) == other_browser
            assert await uow.pending_logins.mark_signed_out(browser, LATER) == 0
            assert await uow.pending_logins.mark_signed_out((), LATER) == 0
            assert await uow.pending_logins.mark_signed_out({"e" * 64}, LATER) == 0

    async def test_a_sign_out_waits_for_the_sign_in_that_holds_its_round_trips(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """A sign-in that locked its round trip with the browser's digests holds the browser's
        other round trips too (here one bound to the browser's other binding value, which the
        sign-out marks and the sign-in's own row is not): the sign-out marks it once the
        sign-in has ended, and so sees (and keeps) what that recorded."""
        owner = account()
        signing_in = pending("s" * 64, browser_digest="c" * 64, consumed_at=NOW)
        other = pending("v" * 64)
        await write(uow_factory, lambda uow: _add_pending(uow, signing_in, other))
        now = NOW + timedelta(seconds=3)
        browser = {"b" * 64, "c" * 64}

        async def sign_out() -> int:
            async with uow_factory() as uow:
                count = await uow.pending_logins.mark_signed_out({"b" * 64}, now)
                await uow.commit()
                return count

        async with uow_factory() as holder:
            assert await holder.pending_logins.lock("s" * 64, browser) == signing_in
            waiting = asyncio.create_task(sign_out())
            await asyncio.sleep(0.2)
            assert not waiting.done()
            assert await holder.pending_logins.supersede(browser, owner.id, but="s" * 64) == 1
            await holder.commit()
        assert await waiting == 1
        async with uow_factory() as uow:
            assert await uow.pending_logins.get("s" * 64) == signing_in
            assert await uow.pending_logins.get("v" * 64) == replace(
                other, signed_out_at=now, superseded_by=owner.id
            )

    async def test_uncommitted_consumption_is_undone(self, uow_factory: UnitOfWorkFactory) -> None:
        await write(uow_factory, lambda uow: uow.link_tickets.add(ticket()))
        async with uow_factory() as uow:
            assert await uow.link_tickets.consume("t" * 64, NOW) is not None
        async with uow_factory() as uow:
            assert await uow.link_tickets.consume("t" * 64, NOW) is not None

    async def test_ticket_round_trip(self, uow_factory: UnitOfWorkFactory) -> None:
        row = ticket()
        await write(uow_factory, lambda uow: uow.link_tickets.add(row))
        async with uow_factory() as uow:
            assert await uow.link_tickets.get(row.digest) == row
            assert await uow.link_tickets.consume(row.digest, NOW) == replace(row, consumed_at=NOW)

    async def test_a_discord_accounts_live_tickets_are_spent_together(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        dee, other = ticket().discord, DiscordUser(DiscordId(78), "eve")
        rows = {
            "live1": ticket("a" * 64),
            "live2": ticket("b" * 64),
            "used": replace(ticket("c" * 64), consumed_at=NOW - timedelta(minutes=1)),
            "expired": replace(ticket("d" * 64), expires_at=NOW),
            "other": replace(ticket("e" * 64), discord=other),
        }

        async def add(uow: UnitOfWork) -> None:
            for row in rows.values():
                await uow.link_tickets.add(row)

        await write(uow_factory, add)
        async with uow_factory() as uow:  # rolled back: nothing spent
            assert await uow.link_tickets.consume_for_discord(dee.id, NOW) == 2
        async with uow_factory() as uow:
            assert await uow.link_tickets.consume_for_discord(dee.id, NOW) == 2
            assert await uow.link_tickets.consume_for_discord(dee.id, NOW) == 0
            await uow.commit()
        async with uow_factory() as uow:
            found = {name: await uow.link_tickets.get(row.digest) for name, row in rows.items()}
            assert found == {
                "live1": replace(rows["live1"], consumed_at=NOW),
                "live2": replace(rows["live2"], consumed_at=NOW),
                "used": rows["used"],  # keeps when it was used
                "expired": rows["expired"],  # still says "expired"
                "other": rows["other"],
            }
            assert await uow.link_tickets.consume("a" * 64, NOW) is None

    async def test_a_replacing_ticket_spends_only_the_earlier_live_ones(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """Spent whole rows compared: a spend that rewrote other columns would show here."""
        dee = ticket().discord
        other = DiscordUser(DiscordId(78), "eve")
        rows = {
            "live": replace(ticket("a" * 64), created_at=NOW - timedelta(minutes=2)),
            "used": replace(ticket("c" * 64), consumed_at=NOW - timedelta(minutes=1)),
            "expired": replace(ticket("d" * 64), expires_at=NOW),
            "other": replace(ticket("e" * 64), discord=other),
        }
        newer = replace(
            ticket("f" * 64),
            discord=DiscordUser(dee.id, "dee2", "Dee", "avatarhash"),
            expires_at=NOW + timedelta(minutes=10),
        )

        async def add(uow: UnitOfWork) -> None:
            for row in rows.values():
                await uow.link_tickets.add(row)

        await write(uow_factory, add)
        await write(uow_factory, lambda uow: uow.link_tickets.add_replacing(newer))
        async with uow_factory() as uow:
            found = {name: await uow.link_tickets.get(row.digest) for name, row in rows.items()}
            assert found == rows | {"live": replace(rows["live"], consumed_at=NOW)}
            assert await uow.link_tickets.get(newer.digest) == newer  # live, as added
        with pytest.raises(errors.Conflict):  # the same secret twice: refused, nothing spent
            await write(uow_factory, lambda uow: uow.link_tickets.add_replacing(newer))
        async with uow_factory() as uow:
            assert await uow.link_tickets.consume(newer.digest, NOW) == replace(
                newer, consumed_at=NOW
            )

    async def test_a_later_link_command_on_a_host_whose_clock_is_behind_still_replaces(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """Two /link commands one after the other on two instances, the first one's clock
        ahead by more than the time between them: the second spends the first (at its own
        ``created_at``), so the first is refused as spent and the second, though made
        "earlier", is not taken as replaced by it. Only commands whose transactions overlap
        (neither sees the other's ticket) are ordered by the instances' clocks (README:
        keep every host on NTP)."""
        first = replace(ticket("z" * 64), created_at=NOW + timedelta(seconds=5))
        second = replace(ticket("a" * 64), created_at=NOW)
        await write(uow_factory, lambda uow: uow.link_tickets.add_replacing(first))
        await write(uow_factory, lambda uow: uow.link_tickets.add_replacing(second))
        async with uow_factory() as uow:
            assert await uow.link_tickets.get(first.digest) == replace(first, consumed_at=NOW)
            assert not await uow.link_tickets.replaced(second)
            assert await uow.link_tickets.consume(first.digest, NOW) is None
            assert await uow.link_tickets.consume(second.digest, NOW) is not None

    async def test_a_ticket_is_replaced_by_a_newer_one_live_when_it_was_made(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """Newer: made later, or at the same moment with a greater digest; used or not, unless
        it was spent by the time the ticket was made (two /link commands one after the other
        within a tick: the later one spent the earlier, which replaces nothing)."""
        other = DiscordUser(DiscordId(78), "eve")
        at = NOW - timedelta(minutes=1)
        mid = replace(ticket("m" * 64), created_at=at)
        rows = {
            "older": replace(ticket("z" * 64), created_at=at - timedelta(seconds=1)),
            "mid": mid,
            "tied_below": replace(ticket("a" * 64), created_at=at),
            "other": replace(ticket("y" * 64), discord=other, created_at=NOW),
        }

        async def add(uow: UnitOfWork, *added: LinkTicket) -> None:
            for row in added:
                await uow.link_tickets.add(row)

        await write(uow_factory, lambda uow: add(uow, *rows.values()))
        async with uow_factory() as uow:
            assert await uow.link_tickets.replaced(rows["older"])  # by mid (later)
            assert await uow.link_tickets.replaced(rows["tied_below"])  # by mid (greater digest)
            assert not await uow.link_tickets.replaced(mid)
            assert not await uow.link_tickets.replaced(rows["other"])  # another Discord account
        # A tied one with a greater digest, spent as ``mid`` was made: replaces nothing.
        spent_then = replace(ticket("n" * 64), created_at=at, consumed_at=at)
        await write(uow_factory, lambda uow: add(uow, spent_then))
        async with uow_factory() as uow:
            assert not await uow.link_tickets.replaced(mid)
        # A later one, used since (its redemption refused, a forwarded button): replaces it.
        used = replace(ticket("b" * 64), created_at=NOW, consumed_at=NOW)
        await write(uow_factory, lambda uow: add(uow, used))
        async with uow_factory() as uow:
            assert await uow.link_tickets.replaced(mid)
            assert not await uow.link_tickets.replaced(used)

    async def test_concurrent_consumers_have_exactly_one_winner(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        await write(uow_factory, lambda uow: uow.pending_logins.add(pending()))
        await write(uow_factory, lambda uow: uow.link_tickets.add(ticket()))

        async def consume_state() -> bool:
            async with uow_factory() as uow:
                won = await uow.pending_logins.consume("s" * 64, NOW)
                await uow.commit()
                return won is not None

        async def consume_ticket() -> bool:
            async with uow_factory() as uow:
                won = await uow.link_tickets.consume("t" * 64, NOW)
                await uow.commit()
                return won is not None

        states = await asyncio.gather(*(consume_state() for _ in range(20)))
        tickets = await asyncio.gather(*(consume_ticket() for _ in range(20)))
        assert states.count(True) == 1
        assert tickets.count(True) == 1

    async def test_purge_expired_removes_only_expired(self, uow_factory: UnitOfWorkFactory) -> None:
        owner = account()

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(owner)
            await uow.pending_logins.add(pending("old" + "s" * 61, expires_at=NOW))
            await uow.pending_logins.add(pending("new" + "s" * 61, expires_at=LATER))
            await uow.link_tickets.add(replace(ticket("old" + "t" * 61), expires_at=NOW))
            await uow.link_tickets.add(ticket("new" + "t" * 61))
            await uow.sessions.add(Session("old" + "x" * 61, owner.id, NOW, NOW))
            await uow.sessions.add(Session("new" + "x" * 61, owner.id, NOW, LATER))

        await write(uow_factory, add)
        async with uow_factory() as uow:
            assert await uow.pending_logins.purge_expired(NOW) == 1
            assert await uow.link_tickets.purge_expired(NOW) == 1
            assert await uow.sessions.purge_expired(NOW) == 1
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.pending_logins.get("new" + "s" * 61) is not None
            assert await uow.link_tickets.get("old" + "t" * 61) is None
            assert await uow.sessions.get("new" + "x" * 61) is not None

    # -- sessions ---------------------------------------------------------------------------------

    async def test_sessions(self, uow_factory: UnitOfWorkFactory) -> None:
        owner, other = account("owner", None), account("other", None)
        rows = [Session(f"{i}" * 64, owner.id, NOW, LATER) for i in range(3)]
        foreign = Session("9" * 64, other.id, NOW, LATER)

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(owner)
            await uow.accounts.add(other)
            for row in [*rows, foreign]:
                await uow.sessions.add(row)

        await write(uow_factory, add)
        async with uow_factory() as uow:
            # The account's and those named (another account's too), in the digests' order,
            # once each; a digest naming none is left out.
            lock = uow.sessions.lock
            assert await lock([], account_id=owner.id) == rows
            named = ["9" * 64, "0" * 64, "x" * 64]
            assert await lock(named, account_id=owner.id) == [*rows, foreign]
            assert await lock(named) == [rows[0], foreign]
            assert await lock([], account_id=other.id) == [foreign]
            assert await lock([]) == []
        async with uow_factory() as uow:
            assert await uow.sessions.get(rows[0].digest) == rows[0]
            assert await uow.sessions.remove(rows[0].digest) is True
            assert await uow.sessions.remove(rows[0].digest) is False
            assert await uow.sessions.remove_for_account(owner.id, keep=rows[1].digest) == 1
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.sessions.get(rows[1].digest) == rows[1]
            assert await uow.sessions.get(rows[2].digest) is None
            assert await uow.sessions.get(foreign.digest) == foreign
            # Renewed (a proof of identity, a password change): the same session, its
            # handle kept, under a new digest.
            renewed = replace(
                rows[1],
                digest="r" * 64,
                last_seen_at=LATER,
                proved_at=LATER,
                proved_with=SignInMethod.PASSWORD,
            )
            renew = uow.sessions.renew
            assert await renew(rows[1].digest, "r" * 64, LATER, SignInMethod.PASSWORD)
            assert not await renew(rows[1].digest, "q" * 64, LATER, None)  # no more
            assert await renew("r" * 64, "s" * 64, LATER, None)  # the proof stays
            assert await renew("s" * 64, "r" * 64, LATER, None)
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.sessions.get(rows[1].digest) is None
            assert await uow.sessions.get(renewed.digest) == renewed
            assert [s.id for s in await uow.sessions.list_for_account(owner.id)] == [rows[1].id]

    # -- API keys and audit ------------------------------------------------------------------------

    async def test_api_keys(self, uow_factory: UnitOfWorkFactory) -> None:
        key = ApiKey(uuid.uuid4(), "bot", "k" * 64, NOW)
        await write(uow_factory, lambda uow: uow.api_keys.add(key))
        with pytest.raises(errors.Conflict):
            await write(
                uow_factory,
                lambda uow: uow.api_keys.add(ApiKey(uuid.uuid4(), "bot", "j" * 64, NOW)),
            )
        async with uow_factory() as uow:
            assert await uow.api_keys.get_by_digest("k" * 64) == key
            assert await uow.api_keys.revoke(key.id, LATER) is True
            assert await uow.api_keys.revoke(key.id, LATER) is False
            await uow.commit()
        replacement = ApiKey(uuid.uuid4(), "bot", "j" * 64, LATER)
        await write(uow_factory, lambda uow: uow.api_keys.add(replacement))
        async with uow_factory() as uow:
            assert [k.revoked_at for k in await uow.api_keys.list()] == [LATER, None]

    async def test_api_key_scopes_expiry_and_last_use(self, uow_factory: UnitOfWorkFactory) -> None:
        key = ApiKey(
            uuid.uuid4(),
            "writer",
            "w" * 64,
            NOW,
            scopes=frozenset({ApiScope.LINKS_READ, ApiScope.LINKS_WRITE}),
            expires_at=LATER,
        )
        await write(uow_factory, lambda uow: uow.api_keys.add(key))
        async with uow_factory() as uow:
            assert await uow.api_keys.get_by_digest("w" * 64) == key
            # Recorded when none is, or when the one recorded is not after `unless_since`.
            assert await uow.api_keys.record_use(key.id, NOW, unless_since=NOW) is True
            assert await uow.api_keys.record_use(key.id, LATER, unless_since=NOW) is True
            later = LATER + timedelta(seconds=30)
            assert await uow.api_keys.record_use(key.id, later, unless_since=NOW) is False
            assert await uow.api_keys.record_use(uuid.uuid4(), NOW, unless_since=NOW) is False
            await uow.commit()
        async with uow_factory() as uow:
            stored = await uow.api_keys.get_by_digest("w" * 64)
        assert stored == replace(key, last_used_at=LATER)

    async def test_audit_log(self, uow_factory: UnitOfWorkFactory) -> None:
        owner = account()
        event = AuditEvent(AuditKind.LINKED, NOW, owner.id, DiscordId(3), {"via": "ticket"})

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(owner)
            await uow.audit.record(event)
            await uow.audit.record(AuditEvent(AuditKind.API_KEY_CREATED, NOW, detail={"n": "x"}))
            await uow.audit.record(second)  # same timestamp: insertion order must hold

        second = AuditEvent(AuditKind.UNLINKED, NOW, owner.id, DiscordId(3), {"via": "web"})
        await write(uow_factory, add)
        async with uow_factory() as uow:
            assert list(await uow.audit.for_account(owner.id)) == [event, second]

    async def test_link_proposals_round_trip_single_use_and_purge(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        owner = account()
        user = DiscordUser(DiscordId(2**63 - 1), "dee", "Dee", "a_avatar")
        proposal = LinkProposal("p" * 64, user, owner.id, "/account", NOW, LATER)

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(owner)
            await uow.link_proposals.add(proposal)

        await write(uow_factory, add)
        async with uow_factory() as uow:
            assert await uow.link_proposals.get(proposal.digest) == proposal
            assert await uow.link_proposals.consume(proposal.digest, NOW) == replace(
                proposal, consumed_at=NOW
            )
            assert await uow.link_proposals.consume(proposal.digest, NOW) is None
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.link_proposals.purge_expired(NOW) == 0
            assert await uow.link_proposals.purge_expired(LATER) == 1
            await uow.commit()
        orphan = replace(proposal, digest="q" * 64, account_id=AccountId.new())
        with pytest.raises(errors.Conflict):  # the foreign key to accounts
            await write(uow_factory, lambda uow: uow.link_proposals.add(orphan))

    # -- email ------------------------------------------------------------------------------

    async def test_email_tokens_are_consumed_once_and_only_for_their_purpose(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        owner = account()
        verify = EmailToken("v" * 64, EmailPurpose.VERIFY, owner.id, "a@b.c", NOW, LATER)
        reset = EmailToken("r" * 64, EmailPurpose.RESET, owner.id, "a@b.c", NOW, LATER)
        older = EmailToken("o" * 64, EmailPurpose.RESET, owner.id, "a@b.c", NOW, LATER)
        link = EmailToken(
            "l" * 64, EmailPurpose.LINK, owner.id, "a@b.c", NOW, LATER, proposal_digest="p" * 64
        )

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(owner)
            for token in (verify, reset, older, link):
                await uow.email_tokens.add(token)

        await write(uow_factory, add)
        async with uow_factory() as uow:
            assert await uow.email_tokens.get(link.digest) == link
            assert await uow.email_tokens.get(verify.digest) == verify
            assert await uow.email_tokens.consume(verify.digest, EmailPurpose.RESET, NOW) is None
            assert await uow.email_tokens.get(verify.digest) == verify  # not spent by that
            used = await uow.email_tokens.consume(verify.digest, EmailPurpose.VERIFY, NOW)
            assert used == replace(verify, consumed_at=NOW)
            assert await uow.email_tokens.consume(verify.digest, EmailPurpose.VERIFY, NOW) is None
            assert await uow.email_tokens.consume_all(owner.id, EmailPurpose.RESET, NOW) == 2
            assert await uow.email_tokens.consume(reset.digest, EmailPurpose.RESET, NOW) is None
            assert await uow.email_tokens.remove(older.digest) is True
            assert await uow.email_tokens.remove(older.digest) is False
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.email_tokens.purge_expired(LATER) == 3
            assert await uow.email_tokens.get(reset.digest) is None

    async def test_declined_addresses_are_per_account_and_kept_once(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """A decline is of one address (however it is written) for one account; declined
        again, the first is kept; an account that does not exist is the foreign key's
        ``Conflict``."""
        mallory, other = account("mallory", None), account("other", None)

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(mallory)
            await uow.accounts.add(other)
            await uow.declined_addresses.add(mallory.id, "Victim@Example.com", NOW)

        await write(uow_factory, add)
        await write(
            uow_factory,
            lambda uow: uow.declined_addresses.add(mallory.id, " victim@example.com", LATER),
        )
        async with uow_factory(read_only=True) as uow:
            assert await uow.declined_addresses.declined(mallory.id, "victim@example.com")
            assert await uow.declined_addresses.declined(mallory.id, "VICTIM@example.COM")
            assert not await uow.declined_addresses.declined(mallory.id, "other@example.com")
            assert not await uow.declined_addresses.declined(other.id, "victim@example.com")
        with pytest.raises(errors.Conflict):  # the foreign key to accounts
            await write(
                uow_factory,
                lambda uow: uow.declined_addresses.add(AccountId.new(), "a@b.c", NOW),
            )
        async with uow_factory() as uow:  # rolled back: nothing kept
            await uow.declined_addresses.add(other.id, "victim@example.com", NOW)
        async with uow_factory(read_only=True) as uow:
            assert not await uow.declined_addresses.declined(other.id, "victim@example.com")

    async def test_a_lifted_decline_is_of_that_account_and_address_only(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """``remove`` (the operator lifts a decline) matches the address however it is
        written, says whether there was one, leaves the other accounts' and addresses'
        declines, and is undone by a rollback."""
        mallory, other = account("mallory", None), account("other", None)

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(mallory)
            await uow.accounts.add(other)
            await uow.declined_addresses.add(mallory.id, "victim@example.com", NOW)
            await uow.declined_addresses.add(mallory.id, "else@example.com", NOW)
            await uow.declined_addresses.add(other.id, "victim@example.com", NOW)

        await write(uow_factory, add)
        async with uow_factory() as uow:  # rolled back: nothing lifted
            assert await uow.declined_addresses.remove(mallory.id, "victim@example.com")
        removed: list[bool] = []

        async def remove(uow: UnitOfWork) -> None:
            removed.append(await uow.declined_addresses.remove(mallory.id, " Victim@EXAMPLE.com"))
            removed.append(await uow.declined_addresses.remove(mallory.id, "victim@example.com"))
            removed.append(await uow.declined_addresses.remove(AccountId.new(), "else@example.com"))

        await write(uow_factory, remove)
        assert removed == [True, False, False]
        async with uow_factory(read_only=True) as uow:
            assert not await uow.declined_addresses.declined(mallory.id, "victim@example.com")
            assert await uow.declined_addresses.declined(mallory.id, "else@example.com")
            assert await uow.declined_addresses.declined(other.id, "victim@example.com")

    async def test_concurrent_email_token_consumers_have_exactly_one_winner(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        owner = account()
        token = EmailToken("w" * 64, EmailPurpose.RESET, owner.id, "a@b.c", NOW, LATER)

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(owner)
            await uow.email_tokens.add(token)

        await write(uow_factory, add)

        async def consume() -> bool:
            async with uow_factory() as uow:
                won = await uow.email_tokens.consume(token.digest, EmailPurpose.RESET, NOW)
                await uow.commit()
            return won is not None

        results = await asyncio.gather(*(consume() for _ in range(8)))
        assert sorted(results) == [False] * 7 + [True]

    async def test_email_queue_claim_save_and_history(self, uow_factory: UnitOfWorkFactory) -> None:
        owner = account()
        lease_end = NOW + timedelta(minutes=2)

        def queued(kind: EmailKind, at: datetime) -> OutgoingEmail:
            return OutgoingEmail(
                uuid.uuid4(), kind, "a@b.c", owner.id, at, at, detail={"has_password": "yes"}
            )

        first = queued(EmailKind.VERIFY_EMAIL, NOW)
        second = queued(EmailKind.VERIFY_EMAIL, NOW)  # same time: the later insert is newer
        notice = queued(EmailKind.PASSWORD_CHANGED, LATER)
        await write(uow_factory, lambda uow: uow.accounts.add(owner))
        for email in (first, second, notice):
            await write(uow_factory, lambda uow, e=email: uow.outgoing_emails.add(e))  # type: ignore[misc]
        async with uow_factory() as uow:
            latest = await uow.outgoing_emails.latest(owner.id, EmailKind.VERIFY_EMAIL)
            assert latest == second
            since = NOW - timedelta(seconds=1)
            assert (
                await uow.outgoing_emails.count_since(owner.id, EmailKind.VERIFY_EMAIL, since) == 2
            )
            assert (
                await uow.outgoing_emails.count_since(owner.id, EmailKind.VERIFY_EMAIL, LATER) == 0
            )

            [claimed] = await uow.outgoing_emails.claim_due(NOW, lease_end, 1)
            assert claimed == replace(first, next_attempt_at=lease_end)
            # The next claim gets the next one; the notice is not due yet; then nothing is left.
            assert await uow.outgoing_emails.claim_due(NOW, lease_end, 10) == [
                replace(second, next_attempt_at=lease_end)
            ]
            assert await uow.outgoing_emails.claim_due(NOW, lease_end, 10) == []
            sent = replace(claimed, status=DeliveryStatus.SENT, attempts=1, finished_at=NOW)
            assert await uow.outgoing_emails.save(sent, leased_until=claimed.next_attempt_at)
            await uow.commit()
        async with uow_factory() as uow:
            # Later, the second's lease has run out (its sender died) and the notice is due;
            # the sent one is never claimed again.
            again = await uow.outgoing_emails.claim_due(LATER, LATER + timedelta(minutes=2), 10)
            assert [e.id for e in again] == [second.id, notice.id]
            assert await uow.outgoing_emails.purge_finished(NOW) == 0
            assert await uow.outgoing_emails.purge_finished(LATER) == 1
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.outgoing_emails.latest(owner.id, EmailKind.DISCORD_LINKED) is None
            assert (
                await uow.outgoing_emails.count_since(owner.id, EmailKind.VERIFY_EMAIL, since) == 1
            )

    async def test_emails_to_an_address_are_counted_across_accounts_by_kind_since_a_moment(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """The limit per address nobody has proved counts every account's emails to it."""
        one, two = account("one", None), account("two", None)
        confirm, reset = EmailKind.VERIFY_EMAIL, EmailKind.RESET_PASSWORD

        def queued(kind: EmailKind, to: str, owner: Account | None, at: datetime) -> OutgoingEmail:
            return OutgoingEmail(uuid.uuid4(), kind, to, owner.id if owner else None, at, at)

        emails = [
            queued(confirm, "v@example.com", one, NOW - timedelta(hours=2)),
            queued(confirm, "v@example.com", one, NOW),
            queued(confirm, "v@example.com", two, NOW),
            queued(reset, "v@example.com", two, LATER),
            queued(EmailKind.PASSWORD_CHANGED, "v@example.com", two, LATER),  # another kind
            queued(confirm, "w@example.com", one, LATER),  # another address
            queued(confirm, "v@example.com", None, NOW),  # no account (the record outlives it)
        ]
        for email in emails:
            await write(uow_factory, lambda uow, e=email: uow.outgoing_emails.add(e))  # type: ignore[misc]
        async with uow_factory() as uow:
            await uow.outgoing_emails.lock_recipient("v@example.com")
            await uow.outgoing_emails.lock_recipient("v@example.com")  # again: it holds it
            count = uow.outgoing_emails.count_to_since
            both = {confirm, reset}
            assert await count("v@example.com", both, NOW - timedelta(days=1)) == 5
            assert await count("v@example.com", both, NOW) == 4
            assert await count("v@example.com", {confirm}, NOW) == 3
            assert await count("v@example.com", both, LATER) == 1
            assert await count("v@example.com", both, LATER + timedelta(seconds=1)) == 0
            assert await count("w@example.com", both, NOW) == 1
            assert await count("nobody@example.com", both, NOW) == 0
            await uow.commit()  # the lock ends with the transaction
        async with uow_factory() as uow:
            await uow.outgoing_emails.lock_recipient("v@example.com")

    async def test_a_claim_is_renewed_only_while_it_is_the_holders(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        email = OutgoingEmail(uuid.uuid4(), EmailKind.PASSWORD_CHANGED, "a@b.c", None, NOW, NOW)
        lease = timedelta(minutes=2)
        await write(uow_factory, lambda uow: uow.outgoing_emails.add(email))
        async with uow_factory() as uow:
            [held] = await uow.outgoing_emails.claim_due(NOW, NOW + lease, 10)
            renewed = await uow.outgoing_emails.renew_claim(held, NOW + 2 * lease)
            assert renewed == replace(email, next_attempt_at=NOW + 2 * lease)
            await uow.commit()
        # The holder stalls until its lease has run out, and another sender claims the email.
        stalled = NOW + 2 * lease
        async with uow_factory() as uow:
            [taken] = await uow.outgoing_emails.claim_due(stalled, stalled + lease, 10)
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.outgoing_emails.renew_claim(renewed, stalled + lease) is None
            # The stalled holder's outcome is not written: the email is the other's now.
            stale = replace(renewed, attempts=1, next_attempt_at=stalled + timedelta(seconds=30))
            assert not await uow.outgoing_emails.save(stale, leased_until=renewed.next_attempt_at)
            mine = await uow.outgoing_emails.renew_claim(taken, stalled + lease)
            assert mine is not None
            done = replace(mine, status=DeliveryStatus.SENT, attempts=1, finished_at=stalled)
            assert await uow.outgoing_emails.save(done, leased_until=mine.next_attempt_at)
            await uow.commit()
        async with uow_factory() as uow:  # a finished email is nobody's
            assert await uow.outgoing_emails.renew_claim(mine, stalled + 2 * lease) is None
            # Nor does a late outcome of the stalled holder undo it.
            assert not await uow.outgoing_emails.save(stale, leased_until=stalled + lease)
            await uow.commit()
        async with uow_factory() as uow:  # still sent: never due again, and purged as such
            far = stalled + timedelta(days=1)
            assert await uow.outgoing_emails.claim_due(far, far + lease, 10) == []
            assert await uow.outgoing_emails.purge_finished(far) == 1
            await uow.commit()

    async def test_a_claim_let_go_is_due_at_once_for_anyone_and_wakes_the_workers(
        self, uow_factory: UnitOfWorkFactory, bell: QueueBell
    ) -> None:
        """A worker whose process stops lets go of what it claimed and did not finish: due
        again at once, not after its lease, and the workers told (another instance's, on
        Postgres by NOTIFY). Only the holder's lease lets go."""
        heard: list[str] = []
        channels = (EMAIL_QUEUE_CHANNEL, WEBHOOK_QUEUE_CHANNEL)
        stops = [bell.subscribe(c, lambda c=c: heard.append(c)) for c in channels]  # type: ignore[misc]
        email = OutgoingEmail(uuid.uuid4(), EmailKind.PASSWORD_CHANGED, "a@b.c", None, NOW, NOW)
        event, [delivery] = webhook()
        lease = timedelta(minutes=2)
        try:
            await write(uow_factory, lambda uow: uow.outgoing_emails.add(email))
            await write(uow_factory, lambda uow: uow.webhooks.add(event, [delivery]))
            async with uow_factory() as uow:
                [held] = await uow.outgoing_emails.claim_due(NOW, NOW + lease, 10)
                [hook] = await uow.webhooks.claim_due(NOW, NOW + lease, 10, [HOOK_A.key])
                await uow.commit()
            for _ in range(5):  # the wake-ups are scheduled on this loop
                await asyncio.sleep(0)
            heard.clear()
            let_go = NOW + timedelta(seconds=1)
            async with uow_factory() as uow:
                other = replace(held, next_attempt_at=NOW + 2 * lease)  # not this lease
                assert not await uow.outgoing_emails.release(other, let_go)
                assert not await uow.webhooks.release(replace(hook, next_attempt_at=NOW), let_go)
                assert await uow.outgoing_emails.release(held, let_go)
                assert await uow.webhooks.release(hook, let_go)
                assert not await uow.outgoing_emails.release(held, let_go)  # let go already
                await uow.commit()
            for _ in range(5):
                await asyncio.sleep(0)
            assert sorted(set(heard)) == sorted(channels)
            async with uow_factory() as uow:  # due at once, as they were: no attempt counted
                again = await uow.outgoing_emails.claim_due(let_go, let_go + lease, 10)
                assert again == [replace(email, next_attempt_at=let_go + lease)]
                hooks = await uow.webhooks.claim_due(let_go, let_go + lease, 10, [HOOK_A.key])
                assert hooks == [replace(delivery, next_attempt_at=let_go + lease)]
                await uow.commit()
        finally:
            for stop in stops:
                stop()

    async def test_concurrent_claims_of_an_email_have_exactly_one_winner(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        email = OutgoingEmail(uuid.uuid4(), EmailKind.PASSWORD_CHANGED, "a@b.c", None, NOW, NOW)
        await write(uow_factory, lambda uow: uow.outgoing_emails.add(email))

        async def claim() -> bool:
            async with uow_factory() as uow:
                won = await uow.outgoing_emails.claim_due(NOW, LATER, 5)
                await uow.commit()
            return bool(won)

        results = await asyncio.gather(*(claim() for _ in range(8)))
        assert sorted(results) == [False] * 7 + [True]

    async def test_concurrent_batch_claims_take_every_email_exactly_once(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        emails = [
            OutgoingEmail(uuid.uuid4(), EmailKind.PASSWORD_CHANGED, f"{n}@b.c", None, NOW, NOW)
            for n in range(12)
        ]

        async def add_all(uow: UnitOfWork) -> None:
            for email in emails:
                await uow.outgoing_emails.add(email)

        await write(uow_factory, add_all)

        async def claim() -> list[uuid.UUID]:
            async with uow_factory() as uow:
                batch = await uow.outgoing_emails.claim_due(NOW, LATER, 3)
                await uow.commit()
            return [e.id for e in batch]

        batches = await asyncio.gather(*(claim() for _ in range(6)))  # room for 18
        claimed = [email_id for batch in batches for email_id in batch]
        assert sorted(claimed) == sorted(e.id for e in emails)  # all of them, none twice
        assert all(len(batch) <= 3 for batch in batches)

    async def test_given_up_emails_are_requeued_all_or_one(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        def email(status: DeliveryStatus, **changes: object) -> OutgoingEmail:
            row = OutgoingEmail(
                uuid.uuid4(),
                EmailKind.PASSWORD_CHANGED,
                "a@b.c",
                None,
                NOW,
                NOW,
                status=status,
                attempts=5,
                finished_at=NOW,
                last_error="email_not_sent",
            )
            return replace(row, **changes)  # type: ignore[arg-type]

        failed = [email(DeliveryStatus.FAILED) for _ in range(3)]
        sent = email(DeliveryStatus.SENT, last_error=None)
        cancelled = email(DeliveryStatus.CANCELLED, attempts=0, last_error=None)
        pending = email(  # retried, its next attempt later
            DeliveryStatus.PENDING, attempts=2, finished_at=None, next_attempt_at=LATER
        )

        async def add_all(uow: UnitOfWork) -> None:
            for row in (*failed, sent, cancelled, pending):
                await uow.outgoing_emails.add(row)

        await write(uow_factory, add_all)
        async with uow_factory() as uow:
            assert await uow.outgoing_emails.requeue_failed(NOW, failed[0].id) == 1
            for other in (sent, cancelled, pending):  # only given-up emails, even by id
                assert await uow.outgoing_emails.requeue_failed(NOW, other.id) == 0
            assert await uow.outgoing_emails.requeue_failed(NOW, uuid.uuid4()) == 0
            await uow.commit()
        async with uow_factory() as uow:
            [first] = await uow.outgoing_emails.claim_due(NOW, LATER, 10)
            assert first == replace(
                failed[0],
                status=DeliveryStatus.PENDING,
                attempts=0,
                finished_at=None,
                last_error=None,
                next_attempt_at=LATER,
            )
            assert await uow.outgoing_emails.requeue_failed(NOW) == 2  # the other two
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.outgoing_emails.requeue_failed(NOW) == 0
            again = await uow.outgoing_emails.claim_due(NOW, LATER, 10)
            assert {e.id for e in again} == {failed[1].id, failed[2].id}

    # -- audit trail: search and retention -----------------------------------------------------

    async def test_audit_search_filters_newest_first_and_limits(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        one, two = AccountId.new(), AccountId.new()
        events = [
            AuditEvent(AuditKind.ACCOUNT_CREATED, NOW, one),
            AuditEvent(AuditKind.LINKED, NOW, one, DiscordId(7), {"via": "ticket"}),
            AuditEvent(AuditKind.SIGNED_IN, NOW + timedelta(minutes=1), two),
            AuditEvent(AuditKind.UNLINKED, LATER, one, DiscordId(7), {"via": "web"}),
            AuditEvent(AuditKind.LINKED, LATER, two, DiscordId(7), {"via": "oauth"}),
        ]

        async def add_all(uow: UnitOfWork) -> None:
            for event in events:
                await uow.audit.record(event)

        await write(uow_factory, add_all)
        async with uow_factory(read_only=True) as uow:
            assert list(await uow.audit.search()) == events[::-1]
            # Equal times: the one recorded last comes first.
            assert list(await uow.audit.search(account_id=one)) == [
                events[3],
                events[1],
                events[0],
            ]
            assert list(await uow.audit.search(discord_id=DiscordId(7), limit=2)) == [
                events[4],
                events[3],
            ]
            assert list(await uow.audit.search(account_id=two, discord_id=DiscordId(7))) == [
                events[4]
            ]
            since = NOW + timedelta(minutes=1)
            assert list(await uow.audit.search(since=since)) == events[:1:-1]
            assert list(await uow.audit.search(discord_id=DiscordId(8))) == []

    async def test_audit_search_finds_the_events_of_a_login(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """``audit --login``: the events whose detail names the login as recorded (its HMAC,
        which only the use case makes), among others with the same value elsewhere."""
        one = AccountId.new()
        failed = AuditKind.SIGN_IN_FAILED
        events = [
            AuditEvent(failed, NOW, None, None, {"login": "A-b_c", "client": "10.0.0.1"}),
            AuditEvent(failed, NOW, one, None, {"login": "a-b_c", "client": "10.0.0.2"}),
            AuditEvent(failed, LATER, one, None, {"login": "A-b_c", "client": "10.0.0.3"}),
            AuditEvent(failed, LATER, None, None, {"client": "A-b_c"}),
            AuditEvent(AuditKind.SIGNED_IN, LATER, one),
        ]

        async def add_all(uow: UnitOfWork) -> None:
            for event in events:
                await uow.audit.record(event)

        await write(uow_factory, add_all)
        async with uow_factory(read_only=True) as uow:
            assert list(await uow.audit.search(login="A-b_c")) == [events[2], events[0]]
            assert list(await uow.audit.search(login="A-b_c", account_id=one)) == [events[2]]
            assert list(await uow.audit.search(login="A-b_c", since=LATER)) == [events[2]]
            assert list(await uow.audit.search(login="A-b_c", limit=1)) == [events[2]]
            assert list(await uow.audit.search(login="A-b")) == []
            assert list(await uow.audit.search(login="A-b_%")) == []

    async def test_audit_events_of_a_kind_are_counted_per_account_since_a_moment(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        one, two = AccountId.new(), AccountId.new()
        refused = AuditKind.EMAIL_CHANGE_REFUSED
        events = [
            AuditEvent(refused, NOW - timedelta(hours=2), one),
            AuditEvent(refused, NOW - timedelta(hours=1), one),  # at the moment: counted
            AuditEvent(refused, NOW, one),
            AuditEvent(AuditKind.EMAIL_CHANGED, NOW, one),
            AuditEvent(refused, NOW, two),
        ]

        async def add_all(uow: UnitOfWork) -> None:
            for event in events:
                await uow.audit.record(event)

        await write(uow_factory, add_all)
        async with uow_factory(read_only=True) as uow:
            assert await uow.audit.count_since(one, refused, NOW - timedelta(hours=1)) == 2
            assert await uow.audit.count_since(one, refused, NOW - timedelta(days=1)) == 3
            assert await uow.audit.count_since(two, refused, NOW - timedelta(hours=1)) == 1
            assert await uow.audit.count_since(two, AuditKind.EMAIL_CHANGED, LATER) == 0

    async def test_audit_events_before_a_moment_are_purged(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        old = AuditEvent(AuditKind.SIGNED_IN, NOW - timedelta(days=400), AccountId.new())
        edge = AuditEvent(AuditKind.SIGNED_IN, NOW - timedelta(days=365), AccountId.new())
        new = AuditEvent(AuditKind.SIGNED_IN, NOW, AccountId.new())

        async def add_all(uow: UnitOfWork) -> None:
            for event in (old, edge, new):
                await uow.audit.record(event)

        await write(uow_factory, add_all)
        async with uow_factory() as uow:
            assert await uow.audit.purge_before(NOW - timedelta(days=365)) == 1
            await uow.commit()
        async with uow_factory(read_only=True) as uow:
            assert list(await uow.audit.search()) == [new, edge]

    # -- webhook outbox --------------------------------------------------------------------------

    async def test_webhook_events_are_queued_per_endpoint_and_claimed_once(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        lease_end = NOW + timedelta(minutes=2)
        first, first_deliveries = webhook(NOW, HOOK_A, HOOK_B)
        later, later_deliveries = webhook(LATER, HOOK_A)
        await write(uow_factory, lambda uow: uow.webhooks.add(first, first_deliveries))
        await write(uow_factory, lambda uow: uow.webhooks.add(later, later_deliveries))
        async with uow_factory() as uow:
            assert await uow.webhooks.get(first_deliveries[1].id) == first_deliveries[1]
            # Only the endpoints asked for; only what is due; the lease moves the next attempt.
            [claimed] = await uow.webhooks.claim_due(NOW, lease_end, 10, [HOOK_A.key])
            assert claimed == replace(first_deliveries[0], next_attempt_at=lease_end)
            assert claimed.event == first  # with the exact body
            assert await uow.webhooks.claim_due(NOW, lease_end, 10, [HOOK_A.key]) == []
            assert await uow.webhooks.claim_due(NOW, lease_end, 10, []) == []
            delivered = replace(
                claimed,
                state=WebhookState.DELIVERED,
                attempts=1,
                last_attempt_at=NOW,
                finished_at=NOW,
            )
            assert await uow.webhooks.save(delivered, leased_until=claimed.next_attempt_at)
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.webhooks.get(claimed.id) == delivered
            both = [HOOK_A.key, HOOK_B.key]
            due = await uow.webhooks.claim_due(LATER, LATER + timedelta(minutes=2), 10, both)
            assert [d.id for d in due] == [first_deliveries[1].id, later_deliveries[0].id]

    async def test_webhook_claims_renew_only_while_held(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        event, [delivery] = webhook()
        lease = timedelta(minutes=2)
        await write(uow_factory, lambda uow: uow.webhooks.add(event, [delivery]))
        async with uow_factory() as uow:
            [held] = await uow.webhooks.claim_due(NOW, NOW + lease, 10, [HOOK_A.key])
            renewed = await uow.webhooks.renew_claim(held, NOW + 2 * lease)
            assert renewed == replace(delivery, next_attempt_at=NOW + 2 * lease)
            await uow.commit()
        stalled = NOW + 2 * lease
        async with uow_factory() as uow:
            [taken] = await uow.webhooks.claim_due(stalled, stalled + lease, 10, [HOOK_A.key])
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.webhooks.renew_claim(renewed, stalled + lease) is None
            mine = await uow.webhooks.renew_claim(taken, stalled + lease)
            assert mine is not None
            # A stalled holder's late outcome is never written (a retry it would schedule
            # would send the delivery again after what the other worker sent since).
            stale = replace(renewed, attempts=1, next_attempt_at=stalled + timedelta(seconds=5))
            assert not await uow.webhooks.save(stale, leased_until=renewed.next_attempt_at)
            done = replace(mine, state=WebhookState.DELIVERED, attempts=1, finished_at=stalled)
            assert await uow.webhooks.save(done, leased_until=mine.next_attempt_at)
            await uow.commit()
        async with uow_factory() as uow:
            assert not await uow.webhooks.save(stale, leased_until=mine.next_attempt_at)
            assert await uow.webhooks.get(delivery.id) == done

    async def test_an_endpoints_deliveries_are_claimed_from_its_first_pending_one_only(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """One endpoint's deliveries go one after another: while its first pending delivery
        is under a claim's lease or waits for its retry, nothing of that endpoint is taken."""
        lease = timedelta(minutes=2)
        queued = [webhook(NOW) for _ in range(3)]
        other, [to_b] = webhook(NOW, HOOK_B)

        async def add_all(uow: UnitOfWork) -> None:
            for event, deliveries in (*queued, (other, [to_b])):
                await uow.webhooks.add(event, deliveries)

        await write(uow_factory, add_all)
        first, second, third = (ds[0] for _, ds in queued)
        keys = [HOOK_A.key, HOOK_B.key]
        async with uow_factory() as uow:
            [held] = await uow.webhooks.claim_due(NOW, NOW + lease, 1, [HOOK_A.key])
            assert held.id == first.id
            # The second is due, but the first is still being sent: only HOOK_B's goes.
            assert [d.id for d in await uow.webhooks.claim_due(NOW, NOW + lease, 10, keys)] == [
                to_b.id
            ]
            retry_at = NOW + timedelta(seconds=5)
            failed_once = replace(held, attempts=1, last_attempt_at=NOW, next_attempt_at=retry_at)
            assert await uow.webhooks.save(failed_once, leased_until=held.next_attempt_at)
            await uow.commit()
        async with uow_factory() as uow:  # waiting for its retry, it holds back the others
            assert await uow.webhooks.claim_due(NOW, NOW + lease, 10, keys) == []
            await uow.commit()
        async with uow_factory() as uow:
            due = await uow.webhooks.claim_due(retry_at, retry_at + lease, 10, keys)
            assert [d.id for d in due] == [first.id, second.id, third.id]
            await uow.commit()
        async with uow_factory() as uow:  # given up: the next is first in line
            given_up = replace(due[0], state=WebhookState.FAILED, finished_at=NOW)
            assert await uow.webhooks.save(given_up, leased_until=due[0].next_attempt_at)
            let_go = replace(due[1], next_attempt_at=retry_at)
            assert await uow.webhooks.save(let_go, leased_until=due[1].next_attempt_at)
            await uow.commit()
        async with uow_factory() as uow:
            # The third is still leased: only what is due from the first on is taken.
            [taken] = await uow.webhooks.claim_due(retry_at, retry_at + lease, 10, keys)
            assert taken.id == second.id

    async def test_concurrent_webhook_claims_never_share_an_endpoint(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """Of claimers racing for the same endpoints, one gets each endpoint's first
        deliveries, in the order they were queued; the others get nothing of it (they would
        send the later ones while the earlier ones are on their way)."""
        queued = [webhook(NOW, HOOK_A, HOOK_B) for _ in range(6)]

        async def add_all(uow: UnitOfWork) -> None:
            for event, deliveries in queued:
                await uow.webhooks.add(event, deliveries)

        await write(uow_factory, add_all)

        async def claim(keys: list[str]) -> list[WebhookDelivery]:
            async with uow_factory() as uow:
                batch = await uow.webhooks.claim_due(NOW, LATER, 3, keys)
                await uow.commit()
            return list(batch)

        orders = ([HOOK_A.key, HOOK_B.key], [HOOK_B.key, HOOK_A.key])
        batches = await asyncio.gather(*(claim(orders[n % 2]) for n in range(6)))
        for endpoint in (HOOK_A, HOOK_B):
            first_three = [d.id for _, ds in queued[:3] for d in ds if d.endpoint == endpoint.key]
            taken = [[d.id for d in b if d.endpoint == endpoint.key] for b in batches]
            assert [ids for ids in taken if ids] == [first_three]

    async def test_gone_endpoints_and_requeuing(self, uow_factory: UnitOfWorkFactory) -> None:
        def finished(state: WebhookState) -> tuple[WebhookEvent, list[WebhookDelivery]]:
            event, [delivery] = webhook()
            done = replace(
                delivery,
                state=state,
                attempts=3,
                last_attempt_at=NOW,
                finished_at=NOW,
                last_error="http_410" if state is WebhookState.GONE else "http_500",
            )
            return event, [done]

        failed = [finished(WebhookState.FAILED) for _ in range(2)]
        gone = finished(WebhookState.GONE)
        delivered = finished(WebhookState.DELIVERED)

        async def add_all(uow: UnitOfWork) -> None:
            for event, deliveries in (*failed, gone, delivered):
                await uow.webhooks.add(event, deliveries)
            await uow.webhooks.mark_gone(HOOK_A, NOW)
            await uow.webhooks.mark_gone(HOOK_A, LATER)  # once is enough; a second changes nothing

        await write(uow_factory, add_all)
        async with uow_factory() as uow:
            assert list(await uow.webhooks.gone_endpoints()) == [
                GoneEndpoint(HOOK_A.key, HOOK_A.host, NOW)
            ]
            assert await uow.webhooks.requeue(LATER, delivered[1][0].id) == 0
            assert await uow.webhooks.requeue(LATER, uuid.uuid4()) == 0
            assert await uow.webhooks.requeue(LATER, gone[1][0].id) == 1
            assert await uow.webhooks.forget_gone(HOOK_B.key) == 0
            assert await uow.webhooks.forget_gone(HOOK_A.key) == 1
            await uow.commit()
        async with uow_factory() as uow:
            assert list(await uow.webhooks.gone_endpoints()) == []
            again = await uow.webhooks.get(gone[1][0].id)
            assert again is not None
            assert (again.state, again.attempts, again.next_attempt_at) == (
                WebhookState.PENDING,
                0,
                LATER,
            )
            assert again.finished_at is None
            assert again.last_error == "http_410"  # the history stays until the next attempt
            assert await uow.webhooks.requeue(LATER) == 2  # the failed ones
            assert await uow.webhooks.requeue(LATER) == 0

    async def test_webhook_summary_counts_states_and_keeps_the_newest_error(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        def row(
            endpoint: WebhookEndpoint, state: WebhookState, error: str | None, at: datetime
        ) -> tuple[WebhookEvent, list[WebhookDelivery]]:
            event, [delivery] = webhook(NOW, endpoint)
            return event, [
                replace(delivery, state=state, last_error=error, last_attempt_at=at, attempts=1)
            ]

        rows = [
            row(HOOK_A, WebhookState.DELIVERED, None, NOW),
            row(HOOK_A, WebhookState.DELIVERED, "http_500", NOW),
            row(HOOK_A, WebhookState.PENDING, "timeout", LATER),
            row(HOOK_A, WebhookState.FAILED, "http_503", NOW + timedelta(minutes=1)),
            row(HOOK_B, WebhookState.PENDING, None, NOW),
        ]

        async def add_all(uow: UnitOfWork) -> None:
            for event, deliveries in rows:
                await uow.webhooks.add(event, deliveries)

        await write(uow_factory, add_all)
        async with uow_factory(read_only=True) as uow:
            a, b = await uow.webhooks.summary()
        assert (a.endpoint, a.host, b.endpoint, b.host) == (
            HOOK_A.key,
            HOOK_A.host,
            HOOK_B.key,
            HOOK_B.host,
        )
        assert a.counts == {
            WebhookState.DELIVERED: 2,
            WebhookState.PENDING: 1,
            WebhookState.FAILED: 1,
        }
        assert (a.last_error, a.last_error_at, a.delivered_since_error) == ("timeout", LATER, False)
        assert b.counts == {WebhookState.PENDING: 1}
        assert (b.last_error, b.last_error_at) == (None, None)

    async def test_webhook_summary_says_when_the_newest_error_was_delivered_since(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """An error stays on its delivery after a later attempt delivers it, and its time is
        that attempt's: `webhooks status` said "last error: http_410 at" the time of the
        delivery that `webhooks retry` made, as if the retry had been refused again."""
        event, [delivery] = webhook(NOW, HOOK_A)
        delivered = replace(
            delivery,
            state=WebhookState.DELIVERED,
            last_error="http_410",
            last_attempt_at=LATER,
            finished_at=LATER,
            attempts=2,
        )

        async def add(uow: UnitOfWork) -> None:
            await uow.webhooks.add(event, [delivered])

        await write(uow_factory, add)
        async with uow_factory(read_only=True) as uow:
            [a] = await uow.webhooks.summary()
        assert (a.last_error, a.last_error_at, a.delivered_since_error) == ("http_410", LATER, True)

    async def test_finished_and_stuck_webhook_deliveries_are_purged_with_their_events(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """Finished deliveries go 30 days after they finished; pending ones only when their
        endpoint is no longer configured, 30 days after they were queued (``created_at``:
        the oldest must go first), and not while an instance still has any of that queue in
        hand (one tried or let go in those 30 days: its settings may still name the URL). A
        configured endpoint's queue is never cut, nor any queue when none is named
        (``None``)."""
        hook_c = WebhookEndpoint("c" * 64, "c.example")
        hook_d = WebhookEndpoint("d" * 64, "d.example")
        cutoff = NOW - timedelta(days=30)
        month_ago = NOW - timedelta(days=40)
        old_done, [old_delivery] = webhook(month_ago)
        # Queued a month ago to an endpoint no longer configured, untouched since.
        stuck, [stuck_delivery] = webhook(month_ago, HOOK_B)
        # Another, whose first delivery an instance that still names it let go just now: its
        # whole queue stays, the month-old one behind it too.
        handled, [handled_delivery] = webhook(month_ago, hook_c)
        behind, [behind_delivery] = webhook(month_ago, hook_c)
        recent, [recent_delivery] = webhook(NOW - timedelta(days=2), HOOK_B)
        # A configured endpoint down for a month: its backlog waits, however old.
        backlog, [backlog_delivery] = webhook(month_ago)
        fresh_done, [fresh_delivery] = webhook(NOW)
        half, half_deliveries = webhook(month_ago, HOOK_A, HOOK_B)
        rows = [
            (
                old_done,
                [
                    replace(
                        old_delivery,
                        state=WebhookState.DELIVERED,
                        finished_at=NOW - timedelta(days=31),
                    )
                ],
            ),
            (stuck, [stuck_delivery]),
            (handled, [replace(handled_delivery, next_attempt_at=NOW)]),
            (behind, [behind_delivery]),
            # Queued out of time order (instances' clocks apart): only the run of old ones
            # from the head goes, never one behind a younger one.
            *(webhook(at, hook_d) for at in (month_ago, NOW - timedelta(days=1), month_ago)),
            (recent, [recent_delivery]),
            (backlog, [backlog_delivery]),
            (fresh_done, [replace(fresh_delivery, state=WebhookState.FAILED, finished_at=NOW)]),
            (
                half,
                [
                    replace(half_deliveries[0], next_attempt_at=NOW + timedelta(seconds=5)),
                    replace(
                        half_deliveries[1],
                        state=WebhookState.GONE,
                        finished_at=NOW - timedelta(days=31),
                    ),
                ],
            ),
        ]

        async def add_all(uow: UnitOfWork) -> None:
            for event, deliveries in rows:
                await uow.webhooks.add(event, deliveries)

        await write(uow_factory, add_all)
        async with uow_factory() as uow:  # no endpoint named: only what finished goes
            assert await uow.webhooks.purge_finished(cutoff, None) == 2
            await uow.rollback()
        async with uow_factory() as uow:
            assert await uow.webhooks.purge_finished(cutoff, [HOOK_A.key]) == 4
            await uow.commit()
        async with uow_factory(read_only=True) as uow:
            for kept_id in (
                fresh_delivery.id,
                recent_delivery.id,
                backlog_delivery.id,
                handled_delivery.id,
                behind_delivery.id,
            ):
                assert await uow.webhooks.get(kept_id) is not None
            kept = await uow.webhooks.get(half_deliveries[0].id)
            assert kept is not None
            assert kept.event == half  # an event stays while one of its deliveries does
            for purged in (old_delivery, stuck_delivery, half_deliveries[1]):
                assert await uow.webhooks.get(purged.id) is None
            summary = await uow.webhooks.summary()
            assert sum(n for s in summary for n in s.counts.values()) == 8
            left_d = next(s for s in summary if s.endpoint == hook_d.key)
            assert left_d.counts[WebhookState.PENDING] == 2  # the younger one and the one behind
        # HOOK_A no longer configured either: its month-old backlog stays all the same, as
        # one of its queue is due in five seconds (some instance has it in hand).
        async with uow_factory() as uow:
            assert await uow.webhooks.purge_finished(cutoff, []) == 0
            await uow.commit()
        async with uow_factory(read_only=True) as uow:
            left = [
                await uow.webhooks.get(i)
                for i in (
                    fresh_delivery.id,
                    recent_delivery.id,
                    backlog_delivery.id,
                    handled_delivery.id,
                    behind_delivery.id,
                    half_deliveries[0].id,
                )
            ]
            assert all(left)

    async def test_a_stopped_endpoints_refused_delivery_outlives_the_purge(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """An attacker's review: the delivery an endpoint answered 410 to went 30 days after,
        while the endpoint stayed stopped and its later deliveries waited behind it, so
        `webhooks retry` then started the stream after it (a hole: the event never sent).
        It stays while its endpoint is stopped and configured (or none is named); another
        endpoint's 410'd delivery (started again since) goes, and so does it once its URL is
        no longer configured."""
        cutoff = NOW - timedelta(days=30)
        month_ago = NOW - timedelta(days=40)
        refused, [refused_delivery] = webhook(month_ago)
        behind, [behind_delivery] = webhook(month_ago)
        other, [other_delivery] = webhook(month_ago, HOOK_B)

        def refused_then(delivery: WebhookDelivery) -> WebhookDelivery:
            return replace(delivery, state=WebhookState.GONE, finished_at=NOW - timedelta(days=31))

        async def add_all(uow: UnitOfWork) -> None:
            await uow.webhooks.add(refused, [refused_then(refused_delivery)])
            await uow.webhooks.add(behind, [behind_delivery])
            await uow.webhooks.add(other, [refused_then(other_delivery)])
            await uow.webhooks.mark_gone(HOOK_A, NOW - timedelta(days=31))

        await write(uow_factory, add_all)
        async with uow_factory() as uow:
            assert await uow.webhooks.purge_finished(cutoff, None) == 1
            await uow.rollback()
        async with uow_factory() as uow:
            assert await uow.webhooks.purge_finished(cutoff, [HOOK_A.key, HOOK_B.key]) == 1
            await uow.commit()
        async with uow_factory(read_only=True) as uow:
            kept = await uow.webhooks.get(refused_delivery.id)
            assert kept is not None
            assert kept.state is WebhookState.GONE
            assert kept.event == refused
            assert await uow.webhooks.get(other_delivery.id) is None
        async with uow_factory() as uow:  # HOOK_A no longer configured: its queue goes
            assert await uow.webhooks.purge_finished(cutoff, []) == 2
            await uow.commit()
        async with uow_factory(read_only=True) as uow:
            for purged in (refused_delivery, behind_delivery):
                assert await uow.webhooks.get(purged.id) is None

    # -- the purge, in batches ------------------------------------------------------------------

    async def test_each_purge_deletes_at_most_its_limit_and_the_rest_at_the_next_call(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """A purge deletes in batches (``limit`` rows per transaction): each repository's
        purge deletes at most that many of what it would delete, and fewer only when none is
        left; what stays is left alone."""
        owner = account()
        old = NOW - timedelta(days=400)

        def email(n: int, finished: datetime) -> OutgoingEmail:
            return OutgoingEmail(
                uuid.uuid4(),
                EmailKind.VERIFY_EMAIL,
                "a@b.c",
                owner.id,
                old,
                old,
                status=DeliveryStatus.SENT,
                attempts=1,
                finished_at=finished,
            )

        async def add(uow: UnitOfWork) -> None:
            await uow.accounts.add(owner)
            for n in range(3):  # three expired of each, and one live
                await uow.pending_logins.add(pending(f"{n}" * 64, expires_at=NOW))
                await uow.link_tickets.add(replace(ticket(f"{n}" * 64), expires_at=NOW))
                await uow.sessions.add(Session(f"{n}" * 64, owner.id, NOW, NOW))
                await uow.email_tokens.add(
                    EmailToken(f"{n}" * 64, EmailPurpose.VERIFY, owner.id, "a@b.c", NOW, NOW)
                )
                user = DiscordUser(DiscordId(10 + n), "dee", None, None)
                await uow.link_proposals.add(
                    LinkProposal(f"{n}" * 64, user, owner.id, "/account", NOW, NOW)
                )
                await uow.outgoing_emails.add(email(n, old))
                await uow.audit.record(AuditEvent(AuditKind.SIGNED_IN, old, owner.id))
            await uow.pending_logins.add(pending("l" * 64))
            await uow.link_tickets.add(ticket("l" * 64))
            await uow.sessions.add(Session("l" * 64, owner.id, NOW, LATER))
            await uow.email_tokens.add(
                EmailToken("l" * 64, EmailPurpose.VERIFY, owner.id, "a@b.c", NOW, LATER)
            )
            await uow.outgoing_emails.add(email(9, NOW))
            await uow.audit.record(AuditEvent(AuditKind.SIGNED_IN, NOW, owner.id))

        await write(uow_factory, add)
        month = NOW - timedelta(days=30)
        purges: list[Callable[[UnitOfWork], Awaitable[int]]] = [
            lambda u: u.pending_logins.purge_expired(NOW, 2),
            lambda u: u.link_tickets.purge_expired(NOW, 2),
            lambda u: u.sessions.purge_expired(NOW, 2),
            lambda u: u.email_tokens.purge_expired(NOW, 2),
            lambda u: u.link_proposals.purge_expired(NOW, 2),
            lambda u: u.outgoing_emails.purge_finished(month, 2),
            lambda u: u.audit.purge_before(month, 2),
        ]
        for purge in purges:
            counts = []
            for _ in range(3):
                async with uow_factory() as uow:
                    counts.append(await purge(uow))
                    await uow.commit()
            assert counts == [2, 1, 0]
        async with uow_factory(read_only=True) as uow:
            assert await uow.pending_logins.get("l" * 64) is not None
            assert await uow.link_tickets.get("l" * 64) is not None
            assert await uow.sessions.get("l" * 64) is not None
            assert await uow.email_tokens.get("l" * 64) is not None
            assert await uow.outgoing_emails.latest(owner.id, EmailKind.VERIFY_EMAIL) is not None
            assert len(await uow.audit.search()) == 1

    async def test_a_webhook_purge_in_batches_takes_the_head_of_an_abandoned_queue_first(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """Finished deliveries first, then the pending ones of an endpoint no longer
        configured in what is left of the batch, from the head of its queue (never a hole in
        its middle); events go with their last delivery."""
        cutoff = NOW - timedelta(days=30)
        month_ago = NOW - timedelta(days=40)
        done, [done_delivery] = webhook(month_ago)
        queue = [webhook(month_ago, HOOK_B) for _ in range(4)]

        async def add_all(uow: UnitOfWork) -> None:
            finished = NOW - timedelta(days=31)
            await uow.webhooks.add(
                done, [replace(done_delivery, state=WebhookState.DELIVERED, finished_at=finished)]
            )
            for event, deliveries in queue:
                await uow.webhooks.add(event, deliveries)

        await write(uow_factory, add_all)
        seen = []
        for _ in range(3):
            async with uow_factory() as uow:
                seen.append(await uow.webhooks.purge_finished(cutoff, [HOOK_A.key], 2))
                await uow.commit()
            async with uow_factory(read_only=True) as uow:
                left = [await uow.webhooks.get(d.id) for _, [d] in queue]
                # What is left of the queue is its tail: the head went first.
                assert left == sorted(left, key=lambda d: d is not None)
        assert seen == [2, 2, 1]
        async with uow_factory(read_only=True) as uow:
            assert await uow.webhooks.get(done_delivery.id) is None
            assert await uow.webhooks.summary() == []
        async with uow_factory() as uow:
            assert await uow.webhooks.purge_finished(cutoff, [HOOK_A.key], 2) == 0

    async def test_uncommitted_webhooks_are_rolled_back(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        event, deliveries = webhook()
        async with uow_factory() as uow:
            await uow.webhooks.add(event, deliveries)
        async with uow_factory() as uow:
            assert await uow.webhooks.get(deliveries[0].id) is None
            assert await uow.webhooks.claim_due(LATER, LATER, 10, [HOOK_A.key]) == []

    # -- Linked Roles: the kept tokens --------------------------------------------------------

    async def test_role_tokens_round_trip_and_compare_before_writing(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        first = role_token(501)
        await write(uow_factory, lambda uow: uow.role_connection_tokens.add(first))
        with pytest.raises(errors.Conflict):  # one row per Discord user
            await write(uow_factory, lambda uow: uow.role_connection_tokens.add(role_token(501)))
        async with uow_factory() as uow:
            tokens = uow.role_connection_tokens
            stored = await tokens.get(DiscordId(501))
            assert stored == first
            assert await tokens.get(DiscordId(502)) is None
            moved = await tokens.replace(replace(stored, next_push_at=LATER, failures=2))
            assert moved == replace(first, next_push_at=LATER, failures=2, version=2)
            # A writer that read version 1 changes nothing.
            assert await tokens.replace(replace(stored, failures=9)) is None
            assert not await tokens.remove(stored)
            assert await tokens.mark_due(DiscordId(501), NOW)
            assert not await tokens.mark_due(DiscordId(502), NOW)
            due = await tokens.get(DiscordId(501))
            assert due is not None
            assert (due.next_push_at, due.version, due.failures) == (NOW, 3, 0)
            # Refreshed tokens are stored whatever else changed, if the old ones are there.
            swapped = await tokens.swap_sealed(stored, "v1.kid.new", LATER + (LATER - NOW), LATER)
            assert swapped is not None
            assert (swapped.sealed, swapped.version, swapped.updated_at) == ("v1.kid.new", 4, LATER)
            assert swapped.next_push_at == NOW  # the unlink's "due now" is kept
            assert await tokens.swap_sealed(stored, "v1.kid.other", LATER, LATER) is None
            assert not await tokens.remove_sealed(DiscordId(501), first.sealed)
            assert await tokens.remove(swapped)
            assert await tokens.get(DiscordId(501)) is None
            await tokens.add(role_token(503, sealed="v1.kid.dead"))
            assert await tokens.remove_sealed(DiscordId(503), "v1.kid.dead")
            await uow.commit()
        async with uow_factory(read_only=True) as uow:
            assert await uow.role_connection_tokens.page(None, 10) == []

    async def test_role_tokens_are_claimed_when_due_and_paged_in_order(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        rows = [role_token(600 + n, due=NOW - timedelta(minutes=n)) for n in range(4)]
        rows.append(role_token(700, due=LATER))

        async def add_all(uow: UnitOfWork) -> None:
            for row in rows:
                await uow.role_connection_tokens.add(row)

        await write(uow_factory, add_all)
        async with uow_factory() as uow:
            tokens = uow.role_connection_tokens
            claimed = await tokens.claim_due(NOW, LATER, 3)  # the longest-waiting first
            assert {t.discord_id.value for t in claimed} == {603, 602, 601}
            assert all(t.claimed_until == LATER and t.version == 2 for t in claimed)
            assert all(t.next_push_at < NOW for t in claimed)  # a claim is not a schedule
            [last] = await tokens.claim_due(NOW, LATER, 3)
            assert last.discord_id == DiscordId(600)
            assert await tokens.claim_due(NOW, LATER, 3) == []
            assert await tokens.mark_all_due(NOW) == 5
            # Due again, the claimed ones stay their claimants' until the lease ends.
            [free] = await tokens.claim_due(NOW, LATER, 10)
            assert free.discord_id == DiscordId(700)
            assert len(await tokens.claim_due(LATER, LATER + timedelta(minutes=5), 10)) == 5
            first = await tokens.page(None, 2)
            assert [t.discord_id.value for t in first] == [600, 601]
            rest = await tokens.page(first[-1].discord_id, 10)
            assert [t.discord_id.value for t in rest] == [602, 603, 700]
            await uow.commit()

    async def test_a_role_token_claim_stays_until_its_holder_lets_it_go(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        await write(uow_factory, lambda uow: uow.role_connection_tokens.add(role_token(950)))
        async with uow_factory() as uow:
            tokens = uow.role_connection_tokens
            [held] = await tokens.claim_due(NOW, LATER, 5)
            assert await tokens.mark_due(DiscordId(950), NOW)  # an unlink: due, still held
            marked = await tokens.get(DiscordId(950))
            assert marked is not None
            assert (marked.next_push_at, marked.claimed_until) == (NOW, LATER)
            assert await tokens.claim_due(NOW, LATER, 5) == []
            # The holder's write finds a newer version; it can still let go of its claim.
            assert await tokens.replace(replace(held, claimed_until=None)) is None
            assert not await tokens.release(replace(held, claimed_until=NOW))  # not this claim
            assert await tokens.release(held)
            assert not await tokens.release(held)  # once
            released = await tokens.get(DiscordId(950))
            assert released is not None
            assert (released.next_push_at, released.claimed_until) == (NOW, None)
            assert released.version == marked.version + 1
            [again] = await tokens.claim_due(NOW, LATER, 5)
            done = await tokens.replace(replace(again, next_push_at=LATER, claimed_until=None))
            assert done is not None
            assert done.claimed_until is None
            assert await tokens.get(DiscordId(950)) == done
            await uow.commit()

    async def test_a_role_token_is_taken_by_its_holder_or_when_nobody_holds_it(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        later = LATER + timedelta(minutes=5)
        await write(uow_factory, lambda uow: uow.role_connection_tokens.add(role_token(960)))
        async with uow_factory() as uow:
            tokens = uow.role_connection_tokens
            free = await tokens.get(DiscordId(960))
            assert free is not None
            held = await tokens.take(free, LATER, NOW)  # nobody held it
            assert held is not None
            assert (held.claimed_until, held.version) == (LATER, free.version + 1)
            assert await tokens.take(free, later, NOW) is None  # held by another
            assert await tokens.mark_due(DiscordId(960), NOW)
            renewed = await tokens.take(held, later, NOW)  # its holder, whatever changed
            assert renewed is not None
            assert renewed.claimed_until == later
            assert renewed.version == held.version + 2
            assert await tokens.take(held, later, NOW) is None  # not its claim any more
            taken_over = await tokens.take(free, LATER, later)  # run out: anyone's
            assert taken_over is not None
            assert taken_over.claimed_until == LATER
            assert await tokens.take(role_token(961), LATER, NOW) is None  # no such row
            await uow.commit()

    async def test_concurrent_role_token_claims_take_each_row_once(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        async def add_all(uow: UnitOfWork) -> None:
            for n in range(12):
                await uow.role_connection_tokens.add(role_token(800 + n))

        await write(uow_factory, add_all)

        async def claim() -> list[int]:
            async with uow_factory() as uow:
                batch = await uow.role_connection_tokens.claim_due(NOW, LATER, 3)
                await uow.commit()
            return [t.discord_id.value for t in batch]

        batches = await asyncio.gather(*(claim() for _ in range(6)))
        claimed = [discord_id for batch in batches for discord_id in batch]
        assert len(claimed) == len(set(claimed))  # none twice
        while more := await claim():  # and the rest afterwards
            claimed += more
        assert sorted(claimed) == list(range(800, 812))

    async def test_concurrent_writers_of_one_role_token_have_one_winner(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        row = role_token(900)
        await write(uow_factory, lambda uow: uow.role_connection_tokens.add(row))

        async def write_once(n: int) -> bool:
            async with uow_factory() as uow:
                won = await uow.role_connection_tokens.replace(replace(row, failures=n))
                await uow.commit()
            return won is not None

        results = await asyncio.gather(*(write_once(n) for n in range(8)))
        assert sorted(results) == [False] * 7 + [True]

    # -- Linked Roles: what `role-connections status` reads ----------------------------------

    async def test_role_tokens_are_counted_once_each_by_where_they_stand(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        async with uow_factory(read_only=True) as uow:
            assert await uow.role_connection_tokens.counts(NOW) == RoleConnectionCounts()
        minute = timedelta(minutes=1)
        rows = [
            role_token(1001, due=LATER),  # current
            replace(role_token(1002, due=LATER), failures=2),  # retrying
            replace(role_token(1003, due=NOW - minute), failures=1),  # a retry whose time came
            role_token(1004, due=NOW),  # due at exactly now
            replace(role_token(1005, due=NOW), claimed_until=LATER),  # being pushed
            replace(role_token(1006, due=LATER), failures=3, claimed_until=LATER),  # too
            replace(role_token(1007, due=NOW), claimed_until=NOW),  # a claim run out: due
            # Said lost to their members (no key opens them): kept, tried now and then.
            replace(role_token(1008, due=LATER), failures=4),
            role_token(1009, due=NOW),
            replace(role_token(1010, due=NOW), claimed_until=LATER),  # being pushed
            role_token(1011, due=LATER),  # lost as revoked (its tokens then went): current
        ]
        owners = [account(f"kept{n}", None) for n in range(4)]

        async def add_all(uow: UnitOfWork) -> None:
            for row in rows:
                await uow.role_connection_tokens.add(row)
            for owner, discord_id in zip(owners, (1008, 1009, 1010, 1011), strict=True):
                await uow.accounts.add(owner)
                await uow.links.add(link(discord_id, owner.id))
                why = RoleConnectionLoss.UNREADABLE
                if discord_id == 1011:
                    why = RoleConnectionLoss.REVOKED
                await uow.links.set_role_connection_lost(DiscordId(discord_id), NOW, why)

        await write(uow_factory, add_all)
        async with uow_factory(read_only=True) as uow:
            counts = await uow.role_connection_tokens.counts(NOW)
        assert counts == RoleConnectionCounts(current=2, due=3, retrying=1, pushing=3, unreadable=2)
        assert counts.kept == len(rows)

    async def test_lost_role_connections_are_listed_and_counted(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        hour = timedelta(hours=1)
        owners = [account(f"lost{n}", None) for n in range(5)]
        losses = {  # Discord id: (since, why, tokens kept)
            1101: (NOW - 2 * hour, RoleConnectionLoss.REVOKED, False),
            1103: (NOW - hour, RoleConnectionLoss.UNREADABLE, True),
            1102: (NOW - hour, RoleConnectionLoss.UNREADABLE, False),
            1104: (NOW, RoleConnectionLoss.UNREADABLE, True),
        }

        async def add_all(uow: UnitOfWork) -> None:
            for n, owner in enumerate(owners):
                await uow.accounts.add(owner)
                await uow.links.add(link(1101 + n, owner.id))  # 1105: nothing lost
            for discord_id, (since, why, kept) in losses.items():
                await uow.links.set_role_connection_lost(DiscordId(discord_id), since, why)
                if kept:
                    await uow.role_connection_tokens.add(role_token(discord_id))
            await uow.role_connection_tokens.add(role_token(1105))
            await uow.role_connection_tokens.add(role_token(1199))  # no link (an unlink's)

        async with uow_factory(read_only=True) as uow:
            assert await uow.links.role_connection_losses() == []
            assert await uow.links.lost_role_connections(10) == []
        await write(uow_factory, add_all)
        async with uow_factory(read_only=True) as uow:
            counted = await uow.links.role_connection_losses()
            listed = await uow.links.lost_role_connections(10)
            first = await uow.links.lost_role_connections(2)
        assert sorted(counted, key=lambda c: (c.why, c.tokens_kept)) == [
            RoleConnectionLossCount(RoleConnectionLoss.REVOKED, False, 1),
            RoleConnectionLossCount(RoleConnectionLoss.UNREADABLE, False, 1),
            RoleConnectionLossCount(RoleConnectionLoss.UNREADABLE, True, 2),
        ]
        expected = [LostRoleConnection(DiscordId(d), *losses[d]) for d in (1101, 1102, 1103, 1104)]
        assert listed == expected  # the longest lost first, then by Discord id
        assert first == expected[:2]

    async def test_audit_events_of_a_kind_are_counted_by_reason_since(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        deleted = AuditKind.ROLE_TOKENS_DELETED
        events = [
            AuditEvent(deleted, NOW, None, DiscordId(1), {"reason": "given_up"}),
            AuditEvent(deleted, LATER, None, DiscordId(2), {"reason": "given_up"}),
            AuditEvent(deleted, NOW, None, DiscordId(3), {"reason": "invalid_grant"}),
            AuditEvent(deleted, NOW, None, DiscordId(4)),  # no reason
            AuditEvent(deleted, NOW - timedelta(seconds=1), None, None, {"reason": "given_up"}),
            AuditEvent(AuditKind.ROLE_TOKENS_STORED, NOW, None, None, {"reason": "given_up"}),
        ]

        async def record_all(uow: UnitOfWork) -> None:
            for event in events:
                await uow.audit.record(event)

        async with uow_factory(read_only=True) as uow:
            assert await uow.audit.reasons_since(deleted, NOW) == {}
        await write(uow_factory, record_all)
        async with uow_factory(read_only=True) as uow:
            found = await uow.audit.reasons_since(deleted, NOW)
        assert dict(found) == {"given_up": 2, "invalid_grant": 1, "": 1}
