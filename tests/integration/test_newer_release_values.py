"""Values a newer release writes in the enum columns a CHECK constraint bounds (its migration
widens the constraint; this version runs beside it during a rolling upgrade, or on its schema
after a code-only rollback). Each read of such a row raised (the value read into this
version's enum): a 500 on the page, a worker's pass stopped. On SQLite and Postgres, the rows
written by SQL as the newer release would (the constraints dropped here, as its migration
would widen them), and read by the real code."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.sql import SqlDatabase, migrate
from adapters.sql.tables import (
    discord_role_changes,
    email_tokens,
    outgoing_emails,
    pending_login,
    webhook_deliveries,
    webhook_events,
)
from adapters.tokens import SecretsTokenIssuer
from domain import errors
from domain.model import (
    DiscordId,
    EmailKind,
    EmailPurpose,
    LinkedRole,
    RoleAction,
    RoleChangeStatus,
)
from domain.use_cases import (
    ApplyRoleChanges,
    BrowserCookies,
    CompleteDiscordAuth,
    CountRoleChanges,
    RequestRolesForLinks,
    RequeueWebhooks,
    RoleQueue,
    ShowEmailStatus,
    ShowRoleQueue,
)
from entrypoints.role_worker import NEWER, tally
from entrypoints.web.email_pages import email_status_line
from tests.contracts.repositories import NOW, account, link
from tests.fakes.clock import ManualClock
from tests.fakes.discord_oauth import InMemoryDiscordOAuth
from tests.fakes.guild_roles import FakeGuildRoles
from tests.harness import TEST_SECRET_KEY

# The CHECK constraints of the enum columns, as the naming convention names them.
CHECKS = [
    ("pending_login", "ck_pending_login_purpose_known"),
    ("email_tokens", "ck_email_tokens_purpose_known"),
    ("outgoing_emails", "ck_outgoing_emails_status_known"),
    ("discord_role_changes", "ck_discord_role_changes_action_known"),
    ("discord_role_changes", "ck_discord_role_changes_status_known"),
    ("webhook_deliveries", "ck_webhook_deliveries_state_known"),
]
ROLE = LinkedRole(DiscordId(111), DiscordId(222))


@pytest.fixture(params=["sqlite_url", "empty_pg_url"])
def fresh_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(request.param)
    return url


@pytest.fixture
async def widened(fresh_url: str) -> AsyncIterator[SqlDatabase]:
    """A database of its own at the head, whose enum columns take any value (a newer
    release's migration widened them): SQLite ignores its CHECK constraints on the
    connection that writes (``_newer``), Postgres drops them."""
    database = SqlDatabase(fresh_url)
    try:
        await migrate.upgrade(database)
        if database.engine.dialect.name == "postgresql":
            async with database.engine.begin() as conn:
                for table, check in CHECKS:
                    await conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {check}"))
        yield database
    finally:
        await database.dispose()


async def _newer(database: SqlDatabase, *rows: tuple[Any, dict[str, Any]]) -> None:
    """Write ``rows`` as the newer release would."""
    async with database.engine.begin() as conn:
        await _unchecked(conn)
        for table, values in rows:
            await conn.execute(insert(table).values(**values))


async def _unchecked(conn: AsyncConnection) -> None:
    if conn.dialect.name == "sqlite":
        await conn.execute(text("PRAGMA ignore_check_constraints = ON"))


async def test_a_discord_round_trip_a_newer_release_started_is_refused_and_left_unspent(
    widened: SqlDatabase,
) -> None:
    """Its callback on this version: read into the enum, a 500 after the state was spent.
    Refused as started by another version, and left for an instance of that release."""
    tokens = SecretsTokenIssuer(TEST_SECRET_KEY)
    state, browser = tokens.issue(), tokens.issue()
    clock = ManualClock(NOW)
    await _newer(
        widened,
        (
            pending_login,
            {
                "state_hash": state.digest,
                "purpose": "passkey_enrol",
                "browser_hash": browser.digest,
                "destination": "/account",
                "created_at": NOW,
                "expires_at": NOW + timedelta(minutes=10),
            },
        ),
    )
    complete = CompleteDiscordAuth(widened.unit_of_work, tokens, clock, InMemoryDiscordOAuth())
    with pytest.raises(errors.StartedByAnotherVersion):
        await complete.execute(
            state=state.token,
            code="code",
            error=None,
            browser=BrowserCookies(bindings=(browser.token,)),
        )
    async with widened.unit_of_work(read_only=True) as uow:
        found = await uow.pending_logins.get(state.digest)
    assert found is not None
    assert (found.purpose, found.consumed_at) == ("passkey_enrol", None)

    # Spent by the newer release, its callback loaded again here: the same refusal.
    async with widened.engine.begin() as conn:
        await conn.execute(pending_login.update().values(consumed_at=NOW))
    with pytest.raises(errors.StartedByAnotherVersion):
        await complete.execute(
            state=state.token,
            code="code",
            error=None,
            browser=BrowserCookies(bindings=(browser.token,)),
        )


async def test_an_emailed_link_of_a_newer_purpose_is_no_link_of_this_version(
    widened: SqlDatabase,
) -> None:
    """Looked up, it was a 500 on its page; it is not found (every reader asks for one
    purpose of its own), and no purpose of this version's spends it."""
    owner = account()
    async with widened.unit_of_work() as uow:
        await uow.accounts.add(owner)
        await uow.commit()
    await _newer(
        widened,
        (
            email_tokens,
            {
                "token_hash": "e" * 64,
                "purpose": "delete",
                "account_id": owner.id.value,
                "email": "alice@example.com",
                "created_at": NOW,
                "expires_at": NOW + timedelta(hours=1),
            },
        ),
    )
    async with widened.unit_of_work() as uow:
        assert await uow.email_tokens.get("e" * 64) is None
        for purpose in EmailPurpose:
            assert await uow.email_tokens.consume("e" * 64, purpose, NOW) is None
        await uow.commit()
    async with widened.engine.connect() as conn:
        spent = await conn.execute(select(email_tokens.c.consumed_at))
        assert spent.scalars().all() == [None]


async def test_an_email_of_a_newer_status_reads_as_text_on_the_account_page(
    widened: SqlDatabase,
) -> None:
    """The account's last confirmation email, in a status this version does not know: the
    account page (``ShowEmailStatus``) was a 500. It offers a new link."""
    owner = replace(account(), email_verified=False)
    async with widened.unit_of_work() as uow:
        await uow.accounts.add(owner)
        await uow.commit()
    await _newer(
        widened,
        (
            outgoing_emails,
            {
                "id": uuid.uuid4(),
                "kind": EmailKind.VERIFY_EMAIL.value,
                "recipient": "alice@example.com",
                "account_id": owner.id.value,
                "created_at": NOW,
                "status": "bounced",
                "next_attempt_at": NOW,
                "attempts": 1,
                "detail": {},
            },
        ),
    )
    status = await ShowEmailStatus(widened.unit_of_work).execute(owner.id)
    assert status.latest_verification is not None
    assert status.latest_verification.status == "bounced"
    assert email_status_line(status) == ("Not confirmed yet. Ask for a confirmation link.", True)
    # The workers never claim it (it is no pending one).
    async with widened.unit_of_work() as uow:
        assert await uow.outgoing_emails.claim_due(NOW, NOW + timedelta(minutes=1), 10) == []


def _role_row(discord_id: int, action: str, status: str) -> tuple[Any, dict[str, Any]]:
    return (
        discord_role_changes,
        {
            "discord_id": discord_id,
            "guild_id": ROLE.guild_id.value,
            "role_id": ROLE.role_id.value,
            "action": action,
            "status": status,
            "attempts": 0,
            "version": 1,
            "requested_at": NOW,
            "next_attempt_at": NOW,
        },
    )


async def test_role_changes_of_a_newer_action_or_status_are_left_to_the_newer_release(
    widened: SqlDatabase,
) -> None:
    """A due change of an action this version does not know stopped every pass of the role
    workers (claimed, then read into the enum), and `roles sync`'s counts: it stays pending,
    unclaimed, for an instance that knows it; the known change beside it is applied."""
    await _newer(
        widened,
        _role_row(501, "resync", RoleChangeStatus.PENDING.value),
        _role_row(502, RoleAction.ADD.value, RoleChangeStatus.PENDING.value),
        _role_row(503, RoleAction.ADD.value, "superseded"),
    )
    discord = FakeGuildRoles()
    clock = ManualClock(NOW)
    apply = ApplyRoleChanges(widened.unit_of_work, clock, discord, linked_roles=[ROLE])
    report = await apply.execute()
    assert [c.discord_id for c in report.done] == [DiscordId(502)], report
    assert [call.member for call in discord.calls] == [DiscordId(502)]
    async with widened.engine.connect() as conn:
        rows = await conn.execute(
            select(
                discord_role_changes.c.discord_id,
                discord_role_changes.c.status,
                discord_role_changes.c.claimed_until,
            ).order_by(discord_role_changes.c.discord_id)
        )
        assert [(r.discord_id, r.status, r.claimed_until) for r in rows] == [
            (501, "pending", None),
            (502, "done", None),
            (503, "superseded", None),
        ]
    async with widened.unit_of_work() as uow:
        refused = await uow.role_changes.refuse_queued(ROLE, NOW, "unknown_role")
        assert refused == []  # none of this version's left; the newer one stays its own
        assert await uow.role_changes.get(DiscordId(501), ROLE) is None
        assert await uow.role_changes.get(DiscordId(503), ROLE) is None
    counts = await CountRoleChanges(widened.unit_of_work, linked_roles=[ROLE]).execute(NOW)
    # The newer ones under their own text (they were left out: `roles sync` said nothing of
    # them), as `webhooks status` counts a newer state.
    assert sorted((str(c.action), str(c.status), c.count) for c in counts) == [
        ("add", "superseded", 1),
        ("remove", "done", 1),  # its member is not linked
        ("resync", "pending", 1),
    ]
    totals = tally(counts, Counter())
    assert totals[NEWER] == 2
    assert totals[f"{NEWER}:resync/pending"] == 1
    assert totals[f"{NEWER}:add/superseded"] == 1
    assert totals["still_queued"] == 0  # nothing of this version's left to wait for
    assert totals["remove:done"] == 1
    # Not pending for this version: never claimed here, `roles sync` would wait for it in
    # vain (it counted it pending).
    assert await ShowRoleQueue(widened.unit_of_work, linked_roles=[ROLE]).execute() == (
        RoleQueue(0, None)
    )


@pytest.mark.parametrize("every", [False, True])
async def test_roles_sync_never_overwrites_a_newer_release_role_change(
    widened: SqlDatabase, every: bool
) -> None:
    """`roles sync` asks for the role of every linked member missing it: a row of its action
    (add) but a newer release's status was not 'pending or done' to it, so it was asked for
    again, overwritten with this release's values (that release's change lost); a newer
    action's too with ``--every``. Both are left as they are; the others are asked for."""
    owners = [account(f"member{n}", f"member{n}@example.com") for n in range(3)]
    async with widened.unit_of_work() as uow:
        for n, owner in enumerate(owners):
            await uow.accounts.add(owner)
            await uow.links.add(link(601 + n, owner.id))
        await uow.commit()
    await _newer(
        widened,
        _role_row(601, RoleAction.ADD.value, "superseded"),
        _role_row(602, "resync", RoleChangeStatus.DONE.value),
    )
    clock = ManualClock(NOW + timedelta(minutes=5))
    asked = await RequestRolesForLinks(widened.unit_of_work, clock, linked_roles=[ROLE]).execute(
        every=every
    )
    assert asked.additions == 1  # member 603's only
    async with widened.engine.connect() as conn:
        rows = await conn.execute(
            select(
                discord_role_changes.c.discord_id,
                discord_role_changes.c.action,
                discord_role_changes.c.status,
                discord_role_changes.c.version,
            ).order_by(discord_role_changes.c.discord_id)
        )
        assert [tuple(r) for r in rows] == [
            (601, "add", "superseded", 1),
            (602, "resync", "done", 1),
            (603, "add", "pending", 1),
        ]


async def test_a_webhook_delivery_of_a_newer_state_is_counted_as_text_and_not_sent_again(
    widened: SqlDatabase,
) -> None:
    """`webhooks status` read every delivery's state into the enum (a traceback), and
    `webhooks retry --id` too: counted under its text, and refused as none to send again."""
    event, delivery = uuid.uuid4(), uuid.uuid4()
    await _newer(
        widened,
        (
            webhook_events,
            {"id": event, "type": "account.linked", "occurred_at": NOW, "payload": "{}"},
        ),
        (
            webhook_deliveries,
            {
                "id": delivery,
                "event_id": event,
                "endpoint": "a" * 64,
                "host": "a.example",
                "created_at": NOW,
                "state": "paused",
                "next_attempt_at": NOW,
                "attempts": 0,
            },
        ),
    )
    async with widened.unit_of_work(read_only=True) as uow:
        [summary] = await uow.webhooks.summary()
        found = await uow.webhooks.get(delivery)
        claimed = await uow.webhooks.claim_due(NOW, NOW + timedelta(minutes=1), 10, ["a" * 64])
    assert summary.counts == {"paused": 1}
    assert found is not None
    assert found.state == "paused"
    assert claimed == []
    with pytest.raises(errors.NotFound):
        await RequeueWebhooks(widened.unit_of_work, ManualClock(NOW)).execute(delivery)
    async with widened.engine.connect() as conn:
        states = await conn.execute(select(webhook_deliveries.c.state))
        assert states.scalars().all() == ["paused"]
