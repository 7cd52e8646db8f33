"""Races on real Postgres, N = 20 concurrent tasks each: every one resolves to exactly one
winner, and the losers get the domain's refusal (never a 500, never a duplicate)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import delete, func, select, update

from adapters.sql import SqlDatabase
from adapters.sql.repositories import SqlSessions
from adapters.sql.tables import (
    accounts,
    email_tokens,
    link_tickets,
    pending_login,
    sessions,
    user_links,
    webhook_deliveries,
    webhook_events,
)
from adapters.webhooks import endpoint_for
from domain import errors
from domain.model import DiscordId, EmailKind, LinkTicket, SignInMethod
from domain.ports import DiscordTokens
from domain.use_cases import AuthCompleted, AuthOutcome, BrowserCookies, TicketIssued
from domain.use_cases._shared import SENT_TWICE_WITHIN
from entrypoints.web import create_app
from tests.harness import PASSWORD, Browser, Harness, sql_harness, webhook_secret
from tests.integration import email_races
from tests.integration.lock_order import first_call_held
from tests.integration.postgres import PostgresServer
from tests.integration.waiting import until_it_waits_for_a_lock
from tests.web_support import post_form

N = 20
_TTL = timedelta(minutes=10)


@pytest.fixture
async def h(postgres: PostgresServer, pg_db: SqlDatabase) -> AsyncIterator[Harness]:
    # Deadlines only: a race's transactions wait on each other's locks (the last of N waits
    # out the N before it), each for a pooled connection meanwhile, which a busy machine
    # drew out past the 5 s default (one StorageError in CI).
    async with sql_harness(
        postgres.url, db_pool_size=N + 10, db_pool_timeout=120, db_statement_timeout_seconds=120
    ) as harness:
        yield harness


async def _count(database: SqlDatabase, table: Any) -> int:
    async with database.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def _outcomes(results: list[Any]) -> tuple[list[Any], list[BaseException]]:
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    return wins, losses


async def _first_logins_at_once(h: Harness, discord_ids: list[Any]) -> list[Any]:
    """A "Sign in with Discord" for each id, each in a browser of its own, all approved by
    Discord first and then completed at once; their outcomes or refusals, in order."""
    browsers = [Browser() for _ in discord_ids]
    approvals = []
    for browser, discord_id in zip(browsers, discord_ids, strict=True):
        started = await h.start_login(browser)
        approvals.append(h.discord.approve(started.authorize_url, discord_id))
    return await asyncio.gather(
        *(
            h.complete(browser, state=a.state, code=a.code)
            for browser, a in zip(browsers, approvals, strict=True)
        ),
        return_exceptions=True,
    )


async def test_one_oauth_state_consumed_by_20_callbacks_has_one_winner(h: Harness) -> None:
    browser = Browser()
    started = await h.start_login(browser)
    approval = h.discord.approve(started.authorize_url, h.discord_user(9001, email="r@x.io").id)

    others = [Browser() for _ in range(N // 2)]
    results = await asyncio.gather(
        *(h.complete(browser, state=approval.state, code=approval.code) for _ in range(N // 2)),
        *(h.complete(other, state=approval.state, code=approval.code) for other in others),
        return_exceptions=True,
    )

    # One sign-in. Its own browser's other loads (a double click) are handed its session, or
    # told to wait while it is under way; every other browser is refused.
    sessions = {r.session_token for r in results[: N // 2] if isinstance(r, AuthCompleted)}
    assert len(sessions - {None}) == 1, results
    assert all(
        r.outcome is AuthOutcome.CONFIRMING or r.session_token in sessions
        for r in results[: N // 2]
        if isinstance(r, AuthCompleted)
    ), results
    refused = (errors.SecretConsumed, errors.WrongBrowser)
    assert all(isinstance(r, refused) for r in results[N // 2 :]), results


async def test_one_ticket_redeemed_20_times_links_once(h: Harness, pg_db: SqlDatabase) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    issued = await h.container.issue_link_ticket().execute(h.discord_user(9002).user)
    assert isinstance(issued, TicketIssued)

    results = await asyncio.gather(
        *(h.confirm_ticket(issued.token, alice.id) for _ in range(N)),
        return_exceptions=True,
    )

    wins, losses = _outcomes(results)
    # One links; the others, back from Discord as the same account for the same TaskFlow
    # account (tabs), find it linked, or are refused before Discord once it is spent.
    assert [w.outcome for w in wins].count(AuthOutcome.LINKED) == 1
    assert {w.outcome for w in wins} <= {AuthOutcome.LINKED, AuthOutcome.ALREADY_LINKED}
    assert all(isinstance(e, errors.SecretConsumed) for e in losses), losses
    assert await _count(pg_db, user_links) == 1


async def test_first_logins_of_new_users_after_one_username_all_make_accounts(
    h: Harness, pg_db: SqlDatabase
) -> None:
    """Eight new Discord users whose usernames make one TaskFlow name sign in at once: each
    gets an account (their names drawn apart after a clash). Half of them were told "Someone
    else changed this at the same moment": each try took the next free name, and one of them
    got it per try (helper-88's review)."""
    stem = "x" * 28
    profiles = [h.discord_user(9100 + n, username=f"{stem}a{n}") for n in range(8)]

    wins, losses = _outcomes(await _first_logins_at_once(h, [p.id for p in profiles]))
    assert losses == []
    assert [w.outcome for w in wins] == [AuthOutcome.CREATED] * 8
    assert await _count(pg_db, accounts) == 8


async def test_first_login_of_one_new_user_through_20_states_makes_one_account(
    h: Harness, pg_db: SqlDatabase
) -> None:
    profile = h.discord_user(9003, username="racer", email="racer@example.com")

    wins, losses = _outcomes(await _first_logins_at_once(h, [profile.id] * N))
    assert losses == []
    assert len({w.account_id for w in wins}) == 1
    assert sorted(w.outcome for w in wins).count(AuthOutcome.CREATED) == 1
    assert await _count(pg_db, accounts) == 1
    assert await _count(pg_db, user_links) == 1


async def test_linking_20_accounts_to_one_discord_id_at_once_has_one_winner(
    h: Harness, pg_db: SqlDatabase
) -> None:
    discord = h.discord_user(9004)
    people = [(await h.sign_up(f"user{i}", f"user{i}@example.com")).account for i in range(N)]
    tickets = []
    for _ in people:
        issued = await h.container.issue_link_ticket().execute(discord.user)
        assert isinstance(issued, TicketIssued)
        tickets.append(issued.token)
    # Each /link spent the one before: all live again, as /link commands at once can leave
    # them (each spends only the tickets committed before its own statement).
    async with pg_db.engine.begin() as conn:
        await conn.execute(update(link_tickets).values(consumed_at=None))

    results = await asyncio.gather(
        *(
            h.confirm_ticket(token, person.id)
            for token, person in zip(tickets, people, strict=True)
        ),
        return_exceptions=True,
    )

    wins, losses = _outcomes(results)
    assert len(wins) == 1
    # Refused by the link, or the winner's link spent the ticket first.
    assert all(
        isinstance(e, errors.DiscordLinkedElsewhere | errors.SecretConsumed) for e in losses
    ), losses
    assert await _count(pg_db, user_links) == 1


async def _live_tickets(database: SqlDatabase, discord_id: int) -> int:
    live = (
        select(func.count())
        .select_from(link_tickets)
        .where(link_tickets.c.discord_id == discord_id, link_tickets.c.consumed_at.is_(None))
    )
    async with database.engine.connect() as conn:
        return int((await conn.execute(live)).scalar_one())


async def test_20_link_commands_at_once_leave_at_least_one_button(
    h: Harness, pg_db: SqlDatabase
) -> None:
    """Each /link spends the tickets committed before its statement, then adds its own: it
    never sees its own nor one a concurrent /link has not committed. Under READ COMMITTED
    several may stay live; never none, only the newest of them works, and the next /link
    ends them all."""
    user = h.discord_user(9005).user
    issue = h.container.issue_link_ticket()
    issued = await asyncio.gather(*(issue.execute(user) for _ in range(N)))

    assert all(isinstance(i, TicketIssued) for i in issued)
    assert 1 <= await _live_tickets(pg_db, 9005) <= N
    # However many stayed live, one of them works: the newest.
    works = [i.token for i in issued if isinstance(i, TicketIssued) and await _works(h, i.token)]
    assert len(works) == 1, works
    newest = await issue.execute(user)
    assert isinstance(newest, TicketIssued)
    assert await _live_tickets(pg_db, 9005) == 1
    await h.container.show_link_ticket().execute(newest.token)


async def _works(h: Harness, token: str) -> bool:
    try:
        await h.container.show_link_ticket().execute(token)
    except errors.SecretConsumed:  # spent, or replaced (TicketReplaced)
        return False
    return True


async def test_of_two_link_commands_at_once_only_the_newest_button_works(
    h: Harness, pg_db: SqlDatabase
) -> None:
    """The interleaving that leaves two live: A spends the old ticket and adds its own; B, a
    /link run meanwhile, waits for A's lock on the old one (spent once A commits), and never
    sees A's new one (not committed when B's statement began). Both new buttons worked, against
    "only the newest /link button works": now the older of the two (by when it was made, then
    by digest) is refused, on its page and at its redemption; the newest links."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    user = h.discord_user(9006).user
    old = await h.container.issue_link_ticket().execute(user)
    assert isinstance(old, TicketIssued)
    mine = h.container.tokens().issue()
    now = h.clock.now()

    async with pg_db.unit_of_work() as a:
        await a.link_tickets.add_replacing(LinkTicket(mine.digest, user, now, now + _TTL))
        other = asyncio.create_task(h.container.issue_link_ticket().execute(user))
        await until_it_waits_for_a_lock(pg_db, other)
        assert not other.done()  # B's /link waits for A's lock on the old ticket
        await a.commit()
    theirs = await asyncio.wait_for(other, timeout=60)
    assert isinstance(theirs, TicketIssued)

    assert await _live_tickets(pg_db, 9006) == 2  # neither spent the other's
    with pytest.raises(errors.SecretConsumed):
        await h.container.show_link_ticket().execute(old.token)
    works = [token for token in (mine.token, theirs.token) if await _works(h, token)]
    assert len(works) == 1, works
    (older,) = {mine.token, theirs.token} - set(works)
    with pytest.raises(errors.TicketReplaced) as refused:
        await h.confirm_ticket(older, alice.id)
    assert "a newer /link button replaced this one" in refused.value.message.lower()
    assert (await h.confirm_ticket(works[0], alice.id)).outcome is AuthOutcome.LINKED


async def test_a_redemption_begun_before_a_newer_link_command_committed_is_refused(
    h: Harness, pg_db: SqlDatabase
) -> None:
    """The older button's round trip to Discord began while it was the newest; two /link
    commands at once then left a newer one live beside it. Back from Discord, the redemption
    finds the newer one in the transaction that spends the older: refused, nothing linked,
    and the newer one links."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    user = h.discord_user(9008).user
    older = await h.container.issue_link_ticket().execute(user)
    assert isinstance(older, TicketIssued)
    browser = Browser()
    started = await h.start_ticket_link(older.token, alice.id, browser)
    h.clock.advance(timedelta(seconds=1))
    newer = h.container.tokens().issue()
    now = h.clock.now()
    async with pg_db.unit_of_work() as uow:  # as a /link beside another leaves it: both live
        await uow.link_tickets.add(LinkTicket(newer.digest, user, now, now + _TTL))
        await uow.commit()

    approval = h.discord.approve(started.authorize_url, user.id)
    with pytest.raises(errors.TicketReplaced):
        await h.complete(browser, state=approval.state, code=approval.code, signed_in=alice.id)
    assert await _count(pg_db, user_links) == 0
    assert await _live_tickets(pg_db, 9008) == 1  # the older one spent by its refusal
    assert (await h.confirm_ticket(newer.token, alice.id)).outcome is AuthOutcome.LINKED


async def test_a_link_command_waits_for_a_redemption_that_then_rolls_back(
    h: Harness, pg_db: SqlDatabase
) -> None:
    """A redemption holds the old ticket (spent, not yet committed) when a new /link runs.
    The /link skipped it, and the redemption then rolled back (its link refused, Discord's
    callback failed): the old button was live again beside the new one, against "only the
    newest button works". The /link now waits for that transaction and spends the old
    ticket once it is live again: one button."""
    user = h.discord_user(9007).user
    old = await h.container.issue_link_ticket().execute(user)
    assert isinstance(old, TicketIssued)
    digest = h.container.tokens().digest(old.token)
    async with pg_db.unit_of_work() as redemption:
        assert await redemption.link_tickets.consume(digest, h.clock.now()) is not None
        command = asyncio.create_task(h.container.issue_link_ticket().execute(user))
        await until_it_waits_for_a_lock(pg_db, command)
        assert not command.done()  # it waits for the redemption, rather than skip its ticket
        await redemption.rollback()
    new = await asyncio.wait_for(command, timeout=60)
    assert isinstance(new, TicketIssued)

    assert await _live_tickets(pg_db, 9007) == 1
    with pytest.raises(errors.SecretConsumed):
        await h.container.show_link_ticket().execute(old.token)
    await h.container.show_link_ticket().execute(new.token)


async def test_a_locked_account_waits_for_the_lock_holder(h: Harness, pg_db: SqlDatabase) -> None:
    """``accounts.lock`` is what keeps a confirmation, a reset, a password change and an email
    change from overwriting each other's read-modify-write: a second locker waits."""
    person = (await h.sign_up("locky", "locky@example.com")).account
    order: list[str] = []

    async def second() -> None:
        async with h.uow() as uow:
            account = await uow.accounts.lock(person.id)
            order.append(f"second saw {account.email if account else None}")

    async with h.uow() as first:
        locked = await first.accounts.lock(person.id)
        assert locked is not None
        waiting = asyncio.create_task(second())
        await until_it_waits_for_a_lock(pg_db, waiting)
        assert not waiting.done()  # it waits for the first transaction
        assert order == []
        await first.accounts.update(replace(locked, email="changed@example.com"))
        # The second may go on as soon as the server has committed, before this coroutine
        # does: what it saw tells that it waited for the commit, not the order of the two.
        await first.commit()
    await asyncio.wait_for(waiting, timeout=60)
    assert order == ["second saw changed@example.com"]


async def test_a_request_cut_off_waiting_for_another_instances_lock_gets_a_503(
    h: Harness, postgres: PostgresServer
) -> None:
    """Another instance holds the account's row lock (a slow or stalled transaction): a
    request here that needs it waits until Postgres cuts its statement off
    (``statement_timeout``, SQLSTATE 57014), and is told to try again (503), as the README
    says, not "something went wrong on our side" (500) with a "storage fault" logged as a
    bug, which is what it got: only the client's own deadline counted as an outage."""
    person = (await h.sign_up("locky", "locky@example.com")).account
    async with (
        sql_harness(postgres.url, db_statement_timeout_seconds=1) as other,
        AsyncTestClient(app=create_app(other.container)) as client,
        h.uow() as holder,
    ):
        assert await holder.accounts.lock(person.id) is not None
        # A reset request locks the account (its email limit, ``within_limits``).
        answer = await post_form(
            client, "/password/reset", "/password/reset", {"email": "locky@example.com"}
        )
    assert answer.status_code == 503, answer.text
    assert "cannot reach its database" in answer.text


async def test_20_sign_ups_with_one_address_are_20_claims(h: Harness) -> None:
    await email_races.simultaneous_sign_ups(h, N)


async def test_sign_ups_and_first_discord_sign_ins_with_one_address_never_mix(
    h: Harness,
) -> None:
    await email_races.sign_ups_and_first_discord_sign_ins(h, N // 2)


async def test_20_email_changes_to_one_address_are_20_claims(h: Harness) -> None:
    await email_races.simultaneous_email_changes(h, N)


async def test_20_confirmations_of_one_address_have_one_owner(h: Harness) -> None:
    await email_races.simultaneous_confirmations(h, N)


async def test_declines_confirmations_and_changes_of_one_address_at_once_use_each_link_once(
    h: Harness,
) -> None:
    await email_races.declines_beside_confirmations_and_changes(h, N // 2)


async def test_proofs_and_claims_of_one_address_at_once_leave_one_owner(h: Harness) -> None:
    await email_races.confirmations_beside_discord_sign_ins_and_claims(h, N // 4)


async def test_simultaneous_reset_requests_queue_one_email(h: Harness) -> None:
    await email_races.simultaneous_reset_requests(h, N)


async def test_simultaneous_confirmation_resends_queue_one_email(
    h: Harness,
) -> None:
    await email_races.simultaneous_confirmation_resends(h, N)


async def test_simultaneous_emails_to_one_unconfirmed_address_keep_to_its_limit(
    h: Harness,
) -> None:
    await email_races.simultaneous_emails_to_one_unconfirmed_address(h, N)


async def test_a_link_beside_a_sign_out_everywhere_under_way_is_refused(
    h: Harness, pg_db: SqlDatabase
) -> None:
    """The callback of "Link Discord" locks the account before it reads the session: a
    password reset or "sign out everywhere" committing meanwhile (it holds the lock) ends the
    session first, and nothing is linked for it. Read before the lock, the session was still
    there, and the link committed right after the reset that took the account back."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    profile = h.discord_user(9100, username="d_alice")
    browser = Browser()
    session = await h.session_for(alice.id)
    started = await h.container.start_discord_link().execute(
        session_token=session, current_password=PASSWORD, browser_tokens=browser.bindings
    )
    approval = h.discord.approve(started.authorize_url, profile.id)
    async with pg_db.engine.connect() as other:
        transaction = await other.begin()  # the reset's (or sign out everywhere's) transaction
        await other.execute(
            select(accounts.c.id).where(accounts.c.id == alice.id.value).with_for_update()
        )
        await other.execute(delete(sessions).where(sessions.c.account_id == alice.id.value))
        callback = asyncio.create_task(
            h.container.complete_discord_auth().execute(
                state=approval.state,
                code=approval.code,
                error=None,
                browser=BrowserCookies(session_token=session, bindings=started.browser_tokens),
            )
        )
        await until_it_waits_for_a_lock(pg_db, callback)
        await transaction.commit()
    with pytest.raises(errors.NotSignedIn):
        await callback
    assert await _count(pg_db, user_links) == 0


async def test_a_renewal_never_waits_for_the_account_a_sign_out_everywhere_holds(
    h: Harness, pg_db: SqlDatabase
) -> None:
    """A copy of the cookie confirms the password while the owner signs out everywhere (the
    account locked first, then its sessions deleted). A renewal that deleted and inserted its
    session waited for the account's lock (the insert's foreign key) while holding the
    session's row, which the sign-out then waited for: a deadlock (an attacker's review). The
    renewal updates its row in place, so it takes no lock on the account."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    copy = h.sessions[alice.id]
    async with pg_db.engine.connect() as other:
        transaction = await other.begin()  # sign out everywhere's transaction
        await other.execute(
            select(accounts.c.id).where(accounts.c.id == alice.id.value).with_for_update()
        )
        confirm = asyncio.create_task(
            h.container.confirm_password().execute(session_token=copy, password=PASSWORD)
        )
        await until_it_waits_for_a_lock(pg_db, confirm)
        assert confirm.done(), "the renewal waited for the account's lock"
        renewed = (await confirm).session_token
        await other.execute(delete(sessions).where(sessions.c.account_id == alice.id.value))
        await transaction.commit()
    assert await _count(pg_db, sessions) == 0
    assert await h.container.current_session().execute(renewed) is None


async def test_a_reset_email_sent_beside_a_sign_out_everywhere_under_way_is_cancelled(
    h: Harness, pg_db: SqlDatabase
) -> None:
    """The sender makes a reset email's link under the account's lock: "sign out everywhere"
    (or a new password) committing meanwhile moved the device epoch on, and the email is
    cancelled. Read without the lock, the old epoch let the sender store a fresh token right
    after the sign-out had ended the account's links: a reset link that outlived it
    (helper-54's review)."""
    alice = (await h.sign_up("alice", "alice@example.com", verified=True)).account
    await h.container.request_password_reset().execute("alice@example.com")
    async with pg_db.engine.connect() as other:
        transaction = await other.begin()  # sign out everywhere's transaction
        await other.execute(
            select(accounts.c.id).where(accounts.c.id == alice.id.value).with_for_update()
        )
        delivery = asyncio.create_task(h.deliver())
        await until_it_waits_for_a_lock(pg_db, delivery)
        assert not delivery.done(), "the sender did not wait for the account's lock"
        await other.execute(
            update(accounts)
            .where(accounts.c.id == alice.id.value)
            .values(device_epoch=accounts.c.device_epoch + 1)
        )
        await transaction.commit()
    report = await asyncio.wait_for(delivery, timeout=60)
    assert [e.kind for e in report.cancelled] == [EmailKind.RESET_PASSWORD]
    assert not report.sent
    async with pg_db.engine.connect() as conn:
        query = select(func.count()).where(email_tokens.c.purpose == "reset")
        assert (await conn.execute(query)).scalar_one() == 0


async def test_confirmations_racing_sign_outs_everywhere_leave_no_session_and_no_error(
    h: Harness, pg_db: SqlDatabase
) -> None:
    """An attacker's review: a renewal that deleted its session and inserted it again took
    the account's lock after the session's, the reverse of "sign out everywhere" (and of a
    password reset): about 1 in 50 such pairs deadlocked, a 500, and when the sign-out was
    the one cancelled every session lived on, the renewed one proved."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    for _ in range(N):
        copy = await h.session_for(alice.id, proved_with=SignInMethod.PASSWORD)
        owner = await h.session_for(alice.id, proved_with=SignInMethod.PASSWORD)
        results = await asyncio.gather(
            h.container.confirm_password().execute(session_token=copy, password=PASSWORD),
            h.container.end_all_sessions().execute(BrowserCookies(session_token=owner)),
            return_exceptions=True,
        )
        _, losses = _outcomes(list(results))
        assert all(isinstance(loss, errors.NotSignedIn) for loss in losses), losses
        assert await _count(pg_db, sessions) == 0


HOOKS = "https://hooks.example.com/in?token=t0ps3cret"
OTHER = "https://other.example.org/hook"


async def _stream(database: SqlDatabase, url: str) -> list[tuple[str, dict[str, str]]]:
    """What the receiver at ``url`` would get, in its queue's order: each event's type and
    data."""
    query = (
        select(webhook_events.c.payload)
        .join(webhook_deliveries, webhook_deliveries.c.event_id == webhook_events.c.id)
        .where(webhook_deliveries.c.endpoint == endpoint_for(url).key)
        .order_by(webhook_deliveries.c.seq)
    )
    async with database.engine.connect() as conn:
        bodies = [json.loads(p) for p in (await conn.execute(query)).scalars()]
    return [(b["type"], b["data"]) for b in bodies]


async def test_links_and_unlinks_through_every_way_at_once_are_each_sent_once(
    postgres: PostgresServer, pg_db: SqlDatabase
) -> None:
    """/unlink, the account page's unlink and the API's, beside a link of the same Discord
    account to another account, all at once, round after round: each change that committed
    is sent exactly once to each receiver (none for one refused), and a receiver replaying
    its stream in queue order ends with the links the table holds."""
    async with sql_harness(
        postgres.url,
        db_pool_size=N + 5,
        webhook_urls=f"{HOOKS},{OTHER}",
        webhook_secret=webhook_secret("races"),
    ) as h:
        alice = (await h.sign_up("alice", "alice@example.com")).account
        bob = (await h.sign_up("bob", "bob@example.com")).account
        dee = h.discord_user(9301)
        made = await h.container.create_api_key().execute("offboarding", ["links:write"])
        key = await h.container.authenticate_api_key().execute(made.token)
        assert key is not None
        changes = 0
        for _ in range(4):
            for person in (alice, bob):
                async with pg_db.engine.connect() as conn:
                    linked = (await conn.execute(select(user_links.c.taskflow_user_id))).all()
                if not linked:
                    await h.discord_link(person.id, dee)
                    changes += 1
                    break
            session = await h.session_for(alice.id)
            results = await asyncio.gather(
                h.container.unlink_discord().execute(dee.id),
                h.container.unlink_with_api_key().execute(dee.id, key),
                h.container.unlink_account().execute(
                    session_token=session, current_password=PASSWORD
                ),
                h.discord_link(bob.id, dee),
                h.container.unlink_discord().execute(dee.id),
                return_exceptions=True,
            )
            wins, losses = _outcomes(list(results))
            changes += len(wins)
            assert all(isinstance(e, errors.DomainError) for e in losses), losses
        async with pg_db.engine.connect() as conn:
            table = {
                str(row.discord_id): str(row.taskflow_user_id)
                for row in await conn.execute(select(user_links))
            }
        for url in (HOOKS, OTHER):
            stream = await _stream(pg_db, url)
            links: dict[str, str] = {}
            for kind, data in stream:
                if kind == "link.created":
                    assert data["discord_id"] not in links, stream
                    links[data["discord_id"]] = data["taskflow_user_id"]
                elif kind == "link.deleted":
                    assert links.pop(data["discord_id"]) == data["taskflow_user_id"], stream
            assert links == table
            assert len([k for k, _ in stream if k.startswith("link.")]) == changes


# -- forms sent twice (a double click, or more) --------------------------------------------
# Every request comes with the same cookie (the browser never received an earlier answer),
# and all of them run at once: each is answered the one session the first made, never
# signed out, and nothing is done twice.
TWICE = 5


async def _sessions_of(database: SqlDatabase, account_id: Any) -> int:
    async with database.engine.connect() as conn:
        query = select(func.count()).where(sessions.c.account_id == account_id.value)
        return int((await conn.execute(query)).scalar_one())


async def test_a_confirmation_sent_at_once_many_times_keeps_one_session(
    h: Harness, pg_db: SqlDatabase
) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    done = await asyncio.gather(
        *(
            h.container.confirm_password().execute(
                session_token=alice.session_token, password=PASSWORD
            )
            for _ in range(TWICE)
        )
    )
    assert [d.sent_twice for d in done].count(False) == 1
    assert len({d.session_token for d in done}) == 1
    assert await h.container.current_session().execute(done[0].session_token) is not None
    assert await _sessions_of(pg_db, alice.account.id) == 1


async def test_a_password_change_sent_at_once_many_times_keeps_one_session(
    h: Harness, pg_db: SqlDatabase
) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    new = "a brand new password"
    done = await asyncio.gather(
        *(
            h.container.set_password().execute(
                session_token=alice.session_token, new_password=new, current_password=PASSWORD
            )
            for _ in range(TWICE)
        )
    )
    assert [d.sent_twice for d in done].count(False) == 1
    assert len({d.session_token for d in done}) == 1
    assert await h.container.current_session().execute(done[0].session_token) is not None
    assert await _sessions_of(pg_db, alice.account.id) == 1
    await h.container.sign_in().execute(login="alice", password=new)


async def test_an_email_change_sent_at_once_many_times_keeps_one_session(
    h: Harness, pg_db: SqlDatabase
) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    done = await asyncio.gather(
        *(
            h.container.change_email().execute(
                session_token=alice.session_token,
                new_email="alice@new.example",
                current_password=PASSWORD,
            )
            for _ in range(TWICE)
        )
    )
    assert [d.sent_twice for d in done].count(False) == 1
    assert len({d.session_token for d in done}) == 1
    assert await h.container.current_session().execute(done[0].session_token) is not None
    assert await _sessions_of(pg_db, alice.account.id) == 1
    assert (await h.account(alice.account.id)).email == "alice@new.example"


async def test_a_reset_sent_at_once_many_times_signs_in_once(
    h: Harness, pg_db: SqlDatabase
) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    await h.container.request_password_reset().execute("alice@example.com")
    await h.deliver()
    reset = h.link_token(h.last_email("alice@example.com"), "/password/reset/")
    new = "a brand new password"
    done = await asyncio.gather(
        *(h.container.reset_password().execute(token=reset, new_password=new) for _ in range(TWICE))
    )
    assert [d.sent_twice for d in done].count(False) == 1
    assert len({d.signed_in.session_token for d in done}) == 1
    assert await _sessions_of(pg_db, alice.account.id) == 1
    assert await h.container.current_session().execute(done[0].signed_in.session_token)


async def test_a_sign_up_sent_at_once_many_times_signs_in_once(
    h: Harness, pg_db: SqlDatabase
) -> None:
    form = "c3" * 64  # the CSRF cookie every request of the form came with
    done = await asyncio.gather(
        *(
            h.container.sign_up().execute(
                username="alice", email="alice@example.com", password=PASSWORD, form_secret=form
            )
            for _ in range(TWICE)
        )
    )
    assert [d.sent_twice for d in done].count(False) == 1
    assert len({d.session_token for d in done}) == 1
    assert len({d.account.id for d in done}) == 1
    assert await _sessions_of(pg_db, done[0].account.id) == 1
    assert await h.container.current_session().execute(done[0].session_token)


async def test_a_link_and_sign_in_sent_at_once_many_times_signs_in_once(
    postgres: PostgresServer, pg_db: SqlDatabase
) -> None:
    async with sql_harness(
        postgres.url, email_linking="confirm", db_pool_size=N + 10, db_pool_timeout=120
    ) as h:
        alice = (await h.sign_up("alice", "alice@example.com")).account
        login = await h.discord_login(h.discord_user(9401, email="alice@example.com"))
        assert login.outcome is AuthOutcome.CONFIRM_NEEDED
        assert login.proposal_token is not None
        before = await _sessions_of(pg_db, alice.id)
        done = await asyncio.gather(
            *(
                h.container.confirm_link_with_password().execute(
                    browser=BrowserCookies(proposal_token=login.proposal_token), password=PASSWORD
                )
                for _ in range(TWICE)
            )
        )
        assert [d.sent_twice for d in done].count(False) == 1
        assert len({d.session_token for d in done}) == 1
        assert await _sessions_of(pg_db, alice.id) == before + 1
        assert await _count(pg_db, user_links) == 1
        assert await h.container.current_session().execute(done[0].session_token)


async def _discord_confirmation_held(
    h: Harness, monkeypatch: pytest.MonkeyPatch, discord_id: int
) -> tuple[Callable[[], Awaitable[AuthCompleted]], Callable[[], Awaitable[AuthCompleted]], Any]:
    """A Discord-only account's "Confirm with Discord", approved at Discord, whose token
    exchange waits until told (``go``: set it, with ``failure`` holding an error or not): its
    callback's load, and the reads of the page a second load answers meanwhile."""
    dora = await h.discord_login(h.discord_user(discord_id, username=f"d{discord_id}"))
    old = dora.session_token
    assert old is not None
    h.clock.advance(timedelta(minutes=11))
    started = await h.container.start_discord_reauth().execute(session_token=old, browser_tokens=[])
    approval = h.discord.approve(started.authorize_url, DiscordId(discord_id))
    exchange = h.discord.exchange_code
    held = SimpleNamespace(asked=asyncio.Event(), go=asyncio.Event(), failure=None)

    async def held_exchange(*, code: str, code_verifier: str) -> DiscordTokens:
        held.asked.set()
        await held.go.wait()
        if held.failure is not None:
            raise held.failure
        return await exchange(code=code, code_verifier=code_verifier)

    monkeypatch.setattr(h.discord, "exchange_code", held_exchange)

    def load() -> Awaitable[AuthCompleted]:
        return h.container.complete_discord_auth().execute(
            state=approval.state,
            code=approval.code,
            error=None,
            browser=BrowserCookies(session_token=old, bindings=started.browser_tokens),
        )

    def page() -> Awaitable[AuthCompleted]:
        return h.container.finish_discord_confirmation().execute(
            state=approval.state, browser_tokens=started.browser_tokens, session_token=old
        )

    return load, page, held


async def test_a_discord_confirmation_loaded_at_once_many_times_keeps_one_session(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loads of one "Confirm with Discord" callback beside its first, still asking Discord:
    each is told to ask again (nothing waits on the server), and then gets the first one's
    session, the only one of the account."""
    load, page, held = await _discord_confirmation_held(h, monkeypatch, 7301)
    first = asyncio.ensure_future(load())
    await held.asked.wait()
    meanwhile = await asyncio.gather(*(load() for _ in range(TWICE)), page())
    assert {d.outcome for d in meanwhile} == {AuthOutcome.CONFIRMING}
    held.go.set()
    done = await first
    assert done.outcome is AuthOutcome.CONFIRMED
    after = await asyncio.gather(*(load() for _ in range(TWICE)), page())
    assert {(d.outcome, d.session_token) for d in after} == {
        (AuthOutcome.CONFIRMED, done.session_token)
    }
    assert await _sessions_of(pg_db, done.account_id) == 1


async def test_a_discord_confirmation_whose_first_load_failed_says_so_when_loaded_again(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    load, page, held = await _discord_confirmation_held(h, monkeypatch, 7302)
    first = asyncio.ensure_future(load())
    await held.asked.wait()
    assert (await page()).outcome is AuthOutcome.CONFIRMING
    held.failure = errors.DiscordUnavailable()
    held.go.set()
    with pytest.raises(errors.DiscordUnavailable):
        await first
    for again in (load, page):
        with pytest.raises(errors.DiscordConfirmationFailed):
            await again()
    async with pg_db.engine.connect() as conn:
        failed = (await conn.execute(select(pending_login.c.failed_at))).scalars().all()
    assert [at is not None for at in failed].count(True) == 1


def _first_read_lets_it_finish(
    monkeypatch: pytest.MonkeyPatch, go: asyncio.Event, first: asyncio.Future[Any]
) -> None:
    """From now on, the first read of a session (the page's), once done, lets the held first
    load go (``go``) and waits for it to finish, before the page's next read."""
    get = SqlSessions.get
    between = SimpleNamespace(armed=True)

    async def get_then_let_the_first_load_finish(repo: SqlSessions, digest: str) -> Any:
        found = await get(repo, digest)
        if between.armed:  # the page's first read of a session, and only that one
            between.armed = False
            go.set()
            await first  # what it made committed, before the page's next read
        return found

    monkeypatch.setattr(SqlSessions, "get", get_then_let_the_first_load_finish)


async def test_a_discord_confirmation_finishing_while_its_page_reads_hands_its_session_over(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page of a "Confirm with Discord" callback loaded twice reads, one statement at a
    time (Postgres' read committed), the renewed session and the old one; the first load
    commits the renewal between two of those reads. The page must not then find neither
    (the renewed one not there yet, the old one ended already) and answer 'already used',
    its browser left with the ended old cookie: signed out, what the hand-over is for."""
    load, page, held = await _discord_confirmation_held(h, monkeypatch, 7303)
    first = asyncio.ensure_future(load())
    await held.asked.wait()
    _first_read_lets_it_finish(monkeypatch, held.go, first)  # the renewal committed
    done = await page()
    renewed = await first
    assert renewed.outcome is AuthOutcome.CONFIRMED
    assert (done.outcome, done.session_token) == (AuthOutcome.CONFIRMED, renewed.session_token)


async def test_a_discord_sign_in_finishing_while_its_page_reads_hands_its_session_over(
    h: Harness, pg_db: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page of a plain "Sign in with Discord" callback loaded twice looks for the session
    the first load starts, one statement at a time (Postgres' read committed), and the first
    load commits it between two of those reads. The page must not then take it for a session
    made long ago and answer 'already used' (a double click on Authorize, its person left
    signed out): not there at its read, it is under way (the page asks again), and the page
    asking again is handed it."""
    h.discord_user(7304, username="d7304", email="d7304@example.com")
    started = await h.container.start_discord_login().execute(next_path=None, browser_tokens=[])
    approval = h.discord.approve(started.authorize_url, DiscordId(7304))
    asked, go = first_call_held(monkeypatch, h.discord, "exchange_code", before=True)
    first = asyncio.ensure_future(
        h.container.complete_discord_auth().execute(
            state=approval.state,
            code=approval.code,
            error=None,
            browser=BrowserCookies(bindings=started.browser_tokens),
        )
    )
    await asked.wait()
    _first_read_lets_it_finish(monkeypatch, go, first)  # the session committed
    done = await h.container.finish_discord_confirmation().execute(
        state=approval.state, browser_tokens=started.browser_tokens, session_token=None
    )
    made = await first
    assert made.outcome is AuthOutcome.CREATED
    assert (done.outcome, done.session_token) == (AuthOutcome.CONFIRMING, None)
    again = await h.container.finish_discord_confirmation().execute(
        state=approval.state, browser_tokens=started.browser_tokens, session_token=None
    )
    assert (again.outcome, again.session_token) == (made.outcome, made.session_token)
    assert again.handed_over


async def test_signing_out_with_the_cookie_a_lost_answer_left_ends_its_session(
    h: Harness, pg_db: SqlDatabase
) -> None:
    """A confirmation sent twice whose answers were both lost (the browser kept the old,
    ended cookie): signing out with that cookie ends the session it was renewed into."""
    alice = await h.sign_up("alice", "alice@example.com")
    await h.container.confirm_password().execute(
        session_token=alice.session_token, password=PASSWORD
    )
    assert await _sessions_of(pg_db, alice.account.id) == 1
    await h.container.sign_out().execute(BrowserCookies(session_token=alice.session_token))
    assert await _sessions_of(pg_db, alice.account.id) == 0


@pytest.mark.parametrize("after", [timedelta(0), timedelta(microseconds=1)])
async def test_an_old_cookie_ends_a_successor_only_within_the_double_click_window(
    h: Harness, pg_db: SqlDatabase, after: timedelta
) -> None:
    """Signing out with the old cookie ends the session a form renewed it into within
    ``SENT_TWICE_WITHIN`` of the renewal, its edge included, and not a microsecond later (the
    renewal's time, ``proved_at``, read back from Postgres to the microsecond): past it, the
    successor is the browser's that got it, and a copy of the old cookie cannot end it."""
    alice = await h.sign_up("alice", "alice@example.com")
    h.clock.advance(timedelta(minutes=30, microseconds=123_457))
    confirmed = await h.container.confirm_password().execute(
        session_token=alice.session_token, password=PASSWORD
    )
    h.clock.advance(SENT_TWICE_WITHIN + after)
    await h.container.sign_out().execute(BrowserCookies(session_token=alice.session_token))
    alive = await h.container.current_session().execute(confirmed.session_token)
    assert (alive is not None) is (after > timedelta(0))
