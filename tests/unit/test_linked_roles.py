"""The role for linked members (TASKFLOW_LINK_DISCORD_LINKED_ROLES) through the use cases, on the
memory store, with a fake Discord: what each link and unlink queues, superseding, and what
happens with each of Discord's answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from adapters.memory import MemoryDatabase
from adapters.metrics import PrometheusMetrics
from domain import errors
from domain import use_cases as uc
from domain.model import (
    AccountId,
    AuditKind,
    DiscordId,
    DiscordProfile,
    Link,
    LinkedRole,
    RoleAction,
    RoleChange,
    RoleChangeStatus,
)
from domain.ports import RoleCallOutcome, RoleCallResult
from domain.use_cases import AuthOutcome, BrowserCookies, RoleChangeReport, TicketIssued
from domain.use_cases.discord_pauses import (
    CLOUDFLARE_PAUSES,
    OUTAGE_PAUSES,
    OUTAGE_THRESHOLD,
    RETRY_AFTER_MAX,
)
from domain.use_cases.discord_roles import (
    CLAIM_LEASE,
    JITTER_MAX,
    JITTER_MIN,
    JITTER_SHARE,
    MAX_ATTEMPTS,
    NOT_CONFIGURED,
    REASONS,
    REFUSAL_HOLD,
    RETRY_DELAYS,
)
from entrypoints.container import Container, build_container
from entrypoints.instrumentation import record_outcome
from entrypoints.role_worker import RoleWorker, apply_until_done
from entrypoints.settings import SettingsError, load_settings
from tests.contracts.repositories import account as account_for
from tests.fakes.clock import ManualClock
from tests.fakes.guild_roles import Bucket, RoleCall
from tests.harness import PASSWORD, TEST_SECRET_KEY, Browser, Harness, make_settings

ROLE = LinkedRole(DiscordId(1300000000000000001), DiscordId(1300000000000000099))
ELSEWHERE = LinkedRole(DiscordId(1400000000000000001), DiscordId(1400000000000000077))
BOTH = f"{ROLE}, {ELSEWHERE}"
CLOUDFLARE = RoleCallResult(RoleCallOutcome.RATE_LIMITED, status=429)  # HTML: no retry_after
UNSENT_WHY = (
    "Discord refused a call for the whole role (or the bot token) while they were queued; "
    "`taskflow-link roles sync` asks again once this is fixed"
)


def _harness(roles: str = BOTH, **settings: object) -> Harness:
    return Harness.build(
        build_container(
            make_settings(discord_linked_roles=roles, discord_bot_token="bot-token", **settings)
        )
    )


@pytest.fixture
def r() -> Iterator[Harness]:
    harness = _harness()
    yield harness
    harness.container.unwire()


@pytest.fixture
def one() -> Iterator[Harness]:
    """One role only: every change is one call."""
    harness = _harness(str(ROLE))
    yield harness
    harness.container.unwire()


def _db(h: Harness) -> MemoryDatabase:
    database: MemoryDatabase = h.container.memory_db()
    return database


async def apply(h: Harness) -> RoleChangeReport:
    report: RoleChangeReport = await h.container.apply_role_changes().execute()
    return report


def audited(h: Harness, kind: AuditKind) -> list[dict[str, str]]:
    return [dict(e.detail) for e in _db(h).tables.audit if e.kind is kind]


# -- every way of linking ---------------------------------------------------------------------


async def _by_ticket(h: Harness, profile: DiscordProfile) -> AccountId:
    account = (await h.sign_up("dora", "dora@example.com")).account
    issued = await h.container.issue_link_ticket().execute(profile.user)
    assert isinstance(issued, TicketIssued)
    done = await h.confirm_ticket(issued.token, account.id)
    assert done.outcome is AuthOutcome.LINKED
    return account.id


async def _from_the_account_page(h: Harness, profile: DiscordProfile) -> AccountId:
    account = (await h.sign_up("dora", "dora@example.com")).account
    done = await h.discord_link(account.id, profile)
    assert done.outcome is AuthOutcome.LINKED
    return account.id


async def _by_verified_email(h: Harness, profile: DiscordProfile) -> AccountId:
    account = (await h.sign_up("dora", "dora@example.com", verified=True)).account
    done = await h.discord_login(profile)
    assert done.outcome is AuthOutcome.LINKED_AND_SIGNED_IN
    return account.id


async def _by_signing_up_with_discord(h: Harness, profile: DiscordProfile) -> AccountId:
    done = await h.discord_login(profile)
    assert done.outcome is AuthOutcome.CREATED
    return done.account_id


async def _by_confirming_the_email_match(h: Harness, profile: DiscordProfile) -> AccountId:
    account = (await h.sign_up("dora", "dora@example.com", verified=True)).account
    done = await h.discord_login(profile, Browser())
    assert done.outcome is AuthOutcome.CONFIRM_NEEDED
    await h.container.confirm_link_with_password().execute(
        browser=BrowserCookies(proposal_token=done.proposal_token), password=PASSWORD
    )
    return account.id


LINKING: dict[str, tuple[Callable[[Harness, DiscordProfile], Awaitable[AccountId]], str]] = {
    "ticket": (_by_ticket, "verified"),
    "account page": (_from_the_account_page, "verified"),
    "verified email": (_by_verified_email, "verified"),
    "sign-up with Discord": (_by_signing_up_with_discord, "verified"),
    "email linking confirm": (_by_confirming_the_email_match, "confirm"),
}


@pytest.mark.parametrize("way", list(LINKING))
async def test_every_way_of_linking_adds_the_roles_after_the_commit(way: str) -> None:
    link_by, email_linking = LINKING[way]
    h = _harness(email_linking=email_linking)
    profile = h.discord_user(5001, username="dora", email="dora@example.com")

    account_id = await link_by(h, profile)

    assert h.guild_roles.calls == []  # linking never waits for Discord
    queued = _db(h).tables.role_changes
    assert {(d, role, c.action) for (d, role), c in queued.items()} == {
        (profile.id, ROLE, RoleAction.ADD),
        (profile.id, ELSEWHERE, RoleAction.ADD),
    }
    report = await apply(h)
    assert len(report.done) == 2
    assert h.guild_roles.has(ROLE, profile.id)
    assert h.guild_roles.has(ELSEWHERE, profile.id)
    assert {c.reason for c in h.guild_roles.calls} == {REASONS[RoleAction.ADD]}
    added = [e for e in _db(h).tables.audit if e.kind is AuditKind.DISCORD_ROLE_ADDED]
    assert {(e.account_id, e.discord_id, e.detail["role_id"]) for e in added} == {
        (account_id, profile.id, str(ROLE.role_id)),
        (account_id, profile.id, str(ELSEWHERE.role_id)),
    }
    assert (await apply(h)).busy is False  # nothing left
    h.container.unwire()


async def test_a_link_that_is_refused_or_already_there_queues_nothing(r: Harness) -> None:
    alice = (await r.sign_up("alice", "alice@example.com")).account
    first, second = r.discord_user(5002), r.discord_user(5003)
    await r.discord_link(alice.id, first)
    await apply(r)
    calls = len(r.guild_roles.calls)
    with pytest.raises(errors.AccountLinkedToOtherDiscord):
        await r.discord_link(alice.id, second)
    assert await r.discord_link(alice.id, first)  # the same link again: nothing changes
    assert all(discord_id == first.id for discord_id, _ in _db(r).tables.role_changes)
    assert not (await apply(r)).busy
    assert len(r.guild_roles.calls) == calls


async def test_without_a_role_configured_nothing_is_queued(h: Harness, db: MemoryDatabase) -> None:
    account = (await h.sign_up("alice", "alice@example.com")).account
    await h.discord_link(account.id, h.discord_user(5004))
    await h.container.unlink_discord().execute(DiscordId(5004))
    assert db.tables.role_changes == {}
    assert (await h.container.request_roles_for_links().execute(every=True)).total == 0


# -- every way of unlinking -------------------------------------------------------------------


async def _with_the_bot(h: Harness, account_id: AccountId, discord_id: DiscordId) -> None:
    await h.container.unlink_discord().execute(discord_id)  # /unlink, and the API's unlink


async def _on_the_account_page(h: Harness, account_id: AccountId, discord_id: DiscordId) -> None:
    await h.container.unlink_account().execute(
        session_token=await h.session_for(account_id), current_password=PASSWORD
    )


async def _by_a_password_reset(h: Harness, account_id: AccountId, discord_id: DiscordId) -> None:
    # The address was never confirmed: a reset takes the account back whole (see ResetPassword).
    await h.container.request_password_reset().execute("dora@example.com")
    await h.deliver()
    token = h.link_token(h.last_email("dora@example.com"), "/password/reset/")
    done = await h.container.reset_password().execute(
        token=token, new_password="another horse battery staple"
    )
    assert done.unlinked is not None


UNLINKING = {
    "bot /unlink and the API": _with_the_bot,
    "account page": _on_the_account_page,
    "password reset": _by_a_password_reset,
}


@pytest.mark.parametrize("way", list(UNLINKING))
async def test_every_way_of_unlinking_removes_the_roles(r: Harness, way: str) -> None:
    account = (await r.sign_up("dora", "dora@example.com")).account
    profile = r.discord_user(5005)
    await r.discord_link(account.id, profile)
    await apply(r)
    assert r.guild_roles.has(ROLE, profile.id)

    await UNLINKING[way](r, account.id, profile.id)

    report = await apply(r)
    assert {(c.action, c.role) for c in report.done} == {
        (RoleAction.REMOVE, ROLE),
        (RoleAction.REMOVE, ELSEWHERE),
    }
    assert not r.guild_roles.has(ROLE, profile.id)
    assert not r.guild_roles.has(ELSEWHERE, profile.id)
    assert r.guild_roles.calls[-1].reason == REASONS[RoleAction.REMOVE]
    removed = audited(r, AuditKind.DISCORD_ROLE_REMOVED)
    assert len(removed) == 2
    assert all(e.account_id == account.id for e in _db(r).tables.audit if e.discord_id)


async def test_purge_expired_forgets_a_removal_done_30_days_ago(r: Harness) -> None:
    """Each Discord account ever linked left its rows (one per role) for good once unlinked:
    a year of members coming and going grew the queue's table without end."""
    account = (await r.sign_up("dora", "dora@example.com")).account
    gone, staying = r.discord_user(5010), r.discord_user(5011)
    await r.discord_link(account.id, gone)
    await apply(r)
    await r.container.unlink_discord().execute(gone.id)
    await apply(r)
    other = (await r.sign_up("emma", "emma@example.com")).account
    await r.discord_link(other.id, staying)
    await apply(r)

    r.clock.advance(timedelta(days=29))
    assert (await r.container.purge_expired().execute()).role_changes == 0
    r.clock.advance(timedelta(days=2))
    assert (await r.container.purge_expired().execute()).role_changes == 2

    kept = set(_db(r).tables.role_changes)
    assert kept == {(staying.id, ROLE), (staying.id, ELSEWHERE)}  # still linked


# -- superseding --------------------------------------------------------------------------------


async def test_an_unlink_before_the_add_went_out_supersedes_it(one: Harness) -> None:
    account = (await one.sign_up("dora", "dora@example.com")).account
    profile = one.discord_user(5006)
    await one.discord_link(account.id, profile)
    await one.container.unlink_discord().execute(profile.id)

    report = await apply(one)

    assert one.guild_roles.calls == [
        RoleCall(RoleAction.REMOVE, ROLE, profile.id, REASONS[RoleAction.REMOVE])
    ]  # the add never went out
    assert [c.action for c in report.done] == [RoleAction.REMOVE]
    assert not one.guild_roles.has(ROLE, profile.id)


async def test_an_unlink_while_the_add_is_with_discord_is_applied_after_it(r: Harness) -> None:
    account = (await r.sign_up("dora", "dora@example.com")).account
    profile = r.discord_user(5007)
    await r.discord_link(account.id, profile)

    async def unlink() -> None:
        await r.container.unlink_discord().execute(profile.id)

    r.guild_roles.during_next_call = unlink
    first = await apply(r)
    # The add that was with Discord cannot mark the newer removal done; the other role's
    # change, not sent yet, goes out as a removal at once.
    assert [(c.action, c.role) for c in first.superseded] == [(RoleAction.ADD, ROLE)]
    assert [(c.action, c.role) for c in first.done] == [(RoleAction.REMOVE, ELSEWHERE)]
    second = await apply(r)
    assert [(c.action, c.role) for c in second.done] == [(RoleAction.REMOVE, ROLE)]
    assert not r.guild_roles.has(ROLE, profile.id)
    assert not r.guild_roles.has(ELSEWHERE, profile.id)
    assert [c.action for c in r.guild_roles.calls] == [
        RoleAction.ADD,
        RoleAction.REMOVE,
        RoleAction.REMOVE,
    ]


async def test_an_unlink_during_a_failing_add_is_not_held_back_by_the_adds_back_off(
    one: Harness,
) -> None:
    """Discord failed the add for hours; while its last try is with Discord (a timeout takes
    the whole call timeout), the member unlinks. The removal is a new request, due at once
    with a fresh round of tries, as an unlink that came between two tries is: the failed
    add's back-off (4 hours by then) must not hold it, nor leave the member the role meanwhile
    once Discord is back."""
    account = (await one.sign_up("dora", "dora@example.com")).account
    profile = one.discord_user(5108)
    await one.discord_link(account.id, profile)
    for delay in RETRY_DELAYS[:-1]:
        one.guild_roles.answer(RoleCallOutcome.UNAVAILABLE)
        assert len((await apply(one)).retrying) == 1
        one.clock.advance(delay)

    async def unlink() -> None:
        await one.container.unlink_discord().execute(profile.id)

    one.guild_roles.answer(RoleCallOutcome.UNAVAILABLE)  # the last try fails too
    one.guild_roles.during_next_call = unlink
    assert [c.action for c in (await apply(one)).superseded] == [RoleAction.ADD]
    one.clock.advance(RETRY_DELAYS[0])  # Discord is back a few seconds later

    assert [c.action for c in (await apply(one)).done] == [RoleAction.REMOVE]
    assert not one.guild_roles.has(ROLE, profile.id)


async def test_an_add_stalled_past_its_claim_cannot_leave_an_unlinked_member_the_role(
    one: Harness,
) -> None:
    """Worker A's add stalls past its claim (a paused VM, a starved event loop); meanwhile the
    member unlinks and worker B, A's claim run out, sends the removal. A's add then lands. A
    cannot write its result back (the row is no longer its own), so it asks again: the next
    pass sends the removal once more. (Found by an attacker's review.)"""
    account = (await one.sign_up("dora", "dora@example.com")).account
    profile = one.discord_user(5106)
    await one.discord_link(account.id, profile)

    async def stall_while_another_worker_removes() -> None:
        await one.container.unlink_discord().execute(profile.id)
        one.clock.advance(CLAIM_LEASE * 1.5)
        worker_b = await apply(one)
        assert [c.action for c in worker_b.done] == [RoleAction.REMOVE]

    one.guild_roles.during_next_call = stall_while_another_worker_removes
    worker_a = await apply(one)
    assert [c.action for c in worker_a.superseded] == [RoleAction.ADD]
    assert one.guild_roles.has(ROLE, profile.id)  # A's add landed last

    again = await apply(one)

    assert [c.action for c in again.done] == [RoleAction.REMOVE]
    assert not one.guild_roles.has(ROLE, profile.id)
    assert [c.action for c in one.guild_roles.calls] == [
        RoleAction.ADD,
        RoleAction.REMOVE,
        RoleAction.REMOVE,
    ]
    assert (await apply(one)) == RoleChangeReport()  # and then nothing more


async def test_a_link_again_after_an_unlink_ends_with_the_role(one: Harness) -> None:
    account = (await one.sign_up("dora", "dora@example.com")).account
    profile = one.discord_user(5008)
    await one.discord_link(account.id, profile)
    await one.container.unlink_discord().execute(profile.id)
    await one.discord_link(account.id, profile)
    await apply(one)
    assert [c.action for c in one.guild_roles.calls] == [RoleAction.ADD]
    assert one.guild_roles.has(ROLE, profile.id)


async def test_what_goes_out_is_decided_by_the_link_when_it_goes_out(one: Harness) -> None:
    """A `roles sync` that read the links just before an unlink committed queues an add after
    the unlink's removal: the member, no longer linked, still ends without the role."""
    account = (await one.sign_up("dora", "dora@example.com")).account
    profile = one.discord_user(5009)
    await one.discord_link(account.id, profile)
    await apply(one)
    await one.container.unlink_discord().execute(profile.id)
    async with one.uow() as uow:  # the stale sync's request lands last
        now = one.clock.now()
        await uow.role_changes.request(RoleChange(profile.id, ROLE, RoleAction.ADD, now, now))
        await uow.commit()

    report = await apply(one)

    assert [c.action for c in report.done] == [RoleAction.REMOVE]
    assert not one.guild_roles.has(ROLE, profile.id)


# -- Discord's answers ------------------------------------------------------------------------


async def _linked(h: Harness, discord_id: int = 5010) -> DiscordProfile:
    account = (await h.sign_up(f"u{discord_id}", f"u{discord_id}@example.com")).account
    profile = h.discord_user(discord_id)
    await h.discord_link(account.id, profile)
    return profile


async def _linked_many(h: Harness, count: int, first: int = 8000) -> list[DiscordProfile]:
    return [await _linked(h, first + n) for n in range(count)]


@pytest.mark.parametrize(
    "outcome",
    [
        RoleCallOutcome.NOT_A_MEMBER,
        RoleCallOutcome.UNKNOWN_ROLE,
        RoleCallOutcome.MISSING_PERMISSIONS,
        RoleCallOutcome.UNKNOWN_GUILD,
        RoleCallOutcome.REJECTED,
    ],
)
async def test_a_refusal_is_audited_and_not_retried(one: Harness, outcome: RoleCallOutcome) -> None:
    one.guild_roles.answer(RoleCallResult(outcome, status=404))
    profile = await _linked(one)

    report = await apply(one)

    assert [c.last_error for c in report.refused] == [outcome.value]
    change = _db(one).tables.role_changes[(profile.id, ROLE)]
    assert change.status is RoleChangeStatus.REFUSED
    assert audited(one, AuditKind.DISCORD_ROLE_REFUSED) == [
        {
            "action": "add",
            "guild_id": str(ROLE.guild_id),
            "role_id": str(ROLE.role_id),
            "reason": outcome.value,
            "status": "404",
        }
    ]
    one.clock.advance(timedelta(days=2))
    assert not (await apply(one)).busy
    assert len(one.guild_roles.calls) == 1  # never asked again
    assert _db(one).tables.links[profile.id]  # the person's link stands


@pytest.mark.parametrize(
    "outcome",
    [
        RoleCallOutcome.MISSING_PERMISSIONS,
        RoleCallOutcome.UNKNOWN_GUILD,
        RoleCallOutcome.UNKNOWN_ROLE,
        # A 403 is about the bot's access, never about one member: Discord's JSON with a
        # code this service does not name (one Discord added since, say) holds for the whole
        # role as 50013 does.
        RoleCallOutcome.REJECTED,
    ],
)
async def test_a_refusal_for_the_whole_role_is_not_asked_again_for_each_member(
    r: Harness, outcome: RoleCallOutcome, caplog: pytest.LogCaptureFixture
) -> None:
    """The bot lost Manage Roles (or the role is above it, or is gone): Discord would answer
    every member the same, and each refusal counts towards its limit of invalid requests per
    address. The rest of the pass takes that role's changes as refused without asking; the
    other server's go on (helper-62's review)."""
    members = await _linked_many(r, 10)  # 20 changes, one batch: ROLE's and ELSEWHERE's
    r.guild_roles.answer(RoleCallResult(outcome, status=403))

    with caplog.at_level("WARNING", logger="taskflow_link.roles"):
        report = await RoleWorker(r.container).run_once()

    assert report is not None
    assert [c.role for c in r.guild_roles.calls].count(ROLE) == 1
    assert all(r.guild_roles.has(ELSEWHERE, m.id) for m in members)
    assert [c.discord_id for c in report.refused] == [members[0].id]
    assert {c.discord_id for c in report.refused_unsent} == {m.id for m in members[1:]}
    for member in members:
        row = _db(r).tables.role_changes[(member.id, ROLE)]
        assert (row.status, row.last_error) == (RoleChangeStatus.REFUSED, outcome.value)
    [refused_line] = [m for m in caplog.messages if m.startswith("Discord refused")]
    assert refused_line.split(": not retried")[0].endswith(
        {
            RoleCallOutcome.MISSING_PERMISSIONS: "must sit above this role (Server Settings → "
            "Roles))",
            RoleCallOutcome.UNKNOWN_GUILD: "in TASKFLOW_LINK_DISCORD_LINKED_ROLES is wrong)",
            RoleCallOutcome.UNKNOWN_ROLE: "(deleted?): check TASKFLOW_LINK_DISCORD_LINKED_ROLES)",
            RoleCallOutcome.REJECTED: "(rejected)",
        }[outcome]
    )
    refusals = audited(r, AuditKind.DISCORD_ROLE_REFUSED)
    assert len(refusals) == 10
    assert sum(e.get("sent") == "no" for e in refusals) == 9
    summary = [m for m in caplog.messages if "without asking Discord" in m]
    assert summary == [
        f"9 more change(s) of role {ROLE.role_id} in server {ROLE.guild_id} taken as refused "
        f"({outcome.value}) without asking Discord: {UNSENT_WHY}"
    ]
    # Fixed in Discord: `roles sync` asks again for every one of them.
    r.clock.advance(timedelta(seconds=30))
    assert (await r.container.request_roles_for_links().execute()).total == 10
    await apply(r)
    assert all(r.guild_roles.has(ROLE, m.id) for m in members)


async def test_a_bad_bot_token_is_not_sent_again_for_any_role(r: Harness) -> None:
    await _linked_many(r, 10)
    r.guild_roles.answer(RoleCallResult(RoleCallOutcome.REJECTED, status=401))

    report = await apply(r)

    assert len(r.guild_roles.calls) == 1
    assert len(report.refused) == 1
    assert len(report.refused_unsent) == 19
    assert {c.last_error for c in report.refused_unsent} == {"rejected"}


async def test_another_4xx_is_refused_for_that_member_only(one: Harness) -> None:
    """A 400 (an invalid body, say) is not a refusal of the bot's access: each member's
    change is sent."""
    members = await _linked_many(one, 3)
    one.guild_roles.answer(RoleCallResult(RoleCallOutcome.REJECTED, status=400))

    report = await apply(one)

    assert len(one.guild_roles.calls) == 3
    assert [c.discord_id for c in report.refused] == [members[0].id]
    assert [c.discord_id for c in report.done] == [m.id for m in members[1:]]


async def test_a_whole_role_refusal_is_not_asked_again_by_the_next_batches(
    one: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker goes on at once after a busy pass: each batch of 20 asked Discord again
    and got the same 403 (10 for 200 members; helper-67's review). Every change of the role
    in the queue when Discord refused it is refused with it, in one pass."""
    members = await _linked_many(one, 200)
    one.guild_roles.answer(*[RoleCallResult(RoleCallOutcome.MISSING_PERMISSIONS, status=403)] * 9)
    worker = RoleWorker(one.container)

    passes = 0
    with caplog.at_level("WARNING", logger="taskflow_link.roles"):
        while await worker.pass_once():
            passes += 1
            one.clock.advance(timedelta(seconds=1))

    assert passes == 1
    assert len(one.guild_roles.calls) == 1
    rows = [_db(one).tables.role_changes[(m.id, ROLE)] for m in members]
    assert {(r.status, r.last_error) for r in rows} == {
        (RoleChangeStatus.REFUSED, "missing_permissions")
    }
    assert sum(e.get("sent") == "no" for e in audited(one, AuditKind.DISCORD_ROLE_REFUSED)) == 199
    unsent = [m for m in caplog.messages if "without asking Discord" in m]
    assert unsent == [
        f"199 more change(s) of role {ROLE.role_id} in server {ROLE.guild_id} taken as "
        f"refused (missing_permissions) without asking Discord: {UNSENT_WHY}"
    ]
    # `roles sync` after fixing it: what it asks for now is sent.
    one.guild_roles.script.clear()
    assert (await one.container.request_roles_for_links().execute()).total == 200
    while await worker.pass_once():
        pass
    assert all(one.guild_roles.has(ROLE, m.id) for m in members)
    assert len(one.guild_roles.calls) == 201


async def test_a_whole_role_refusal_takes_every_queued_change_of_the_role(
    one: Harness,
) -> None:
    """Every change of the role in the queue when Discord refused it, waiting or retrying,
    is refused with it, without asking Discord; one asked for after it (a new link once the
    operator fixed the permission) is sent, and its answer tells; `roles sync` asks again
    for the others."""
    one.guild_roles.answer(RoleCallOutcome.UNAVAILABLE)
    waiting = await _linked(one, 5030)  # Discord down: retried in 5 s
    await apply(one)
    one.clock.advance(timedelta(seconds=1))
    refused, other = await _linked(one, 5031), await _linked(one, 5032)
    another = await _linked(one, 5034)
    one.guild_roles.answer(RoleCallResult(RoleCallOutcome.MISSING_PERMISSIONS, status=403))

    first = await one.container.apply_role_changes().execute(limit=1)

    assert [c.discord_id for c in first.refused] == [refused.id]
    assert {c.discord_id for c in first.refused_unsent} == {waiting.id, other.id, another.id}
    one.clock.advance(timedelta(seconds=10))  # fixed in Discord
    calls = len(one.guild_roles.calls)
    late = await _linked(one, 5033)
    assert [c.discord_id for c in (await apply(one)).done] == [late.id]
    one.clock.advance(RETRY_DELAYS[1])  # the retrying one was refused: not sent
    assert not (await apply(one)).busy
    assert len(one.guild_roles.calls) == calls + 1
    assert (await one.container.request_roles_for_links().execute()).additions == 4
    assert len((await apply(one)).done) == 4
    assert all(one.guild_roles.has(ROLE, p.id) for p in (waiting, refused, other, another))


async def _linked_unqueued(h: Harness, count: int, first: int = 8500) -> list[DiscordId]:
    """Members linked before the role was configured (nothing queued for them)."""
    members = [DiscordId(first + n) for n in range(count)]
    async with h.uow() as uow:
        for member in members:
            owner = account_for(f"u{member.value}", f"u{member.value}@example.com")
            await uow.accounts.add(owner)
            await uow.links.add(Link(member, owner.id, h.clock.now(), "old"))
        await uow.commit()
    return members


async def test_a_change_asked_for_after_a_whole_role_refusal_is_sent_whatever_the_clocks(
    one: Harness,
) -> None:
    """The worker's host runs 5 s ahead of the one that asks for the changes (less than the
    10 s the instance watch tells of): the operator fixes the permission and runs `roles
    sync` a second after the refusal, and the worker took what it asked for as asked before
    the refusal, comparing the time its own clock gave the refusal with the other host's."""
    members = await _linked_unqueued(one, 3)
    assert (await one.container.request_roles_for_links().execute()).total == 3
    one.guild_roles.answer(RoleCallResult(RoleCallOutcome.MISSING_PERMISSIONS, status=403))
    refused = await apply(one)
    assert len(refused.refused) + len(refused.refused_unsent) == 3
    one.guild_roles.script.clear()  # fixed in Discord
    one.clock.advance(timedelta(seconds=1))
    behind = ManualClock(one.clock.now() - timedelta(seconds=5))
    sync = _configured_with(one, str(ROLE))
    sync.clock.override(behind)

    assert (await sync.request_roles_for_links().execute()).total == 3
    report = await apply(one)  # the service's worker takes them

    assert {c.discord_id for c in report.done} == set(members)
    assert all(one.guild_roles.has(ROLE, m) for m in members)
    sync.unwire()


async def test_a_whole_role_refusal_is_asked_once_whichever_instance_comes_next(
    one: Harness,
) -> None:
    """Another instance's worker (a process of its own) takes the next batch: the changes
    queued when Discord refused the role are refused already, not asked again by it."""
    members = await _linked_unqueued(one, 50)
    assert (await one.container.request_roles_for_links().execute()).total == 50
    forbidden = RoleCallResult(RoleCallOutcome.MISSING_PERMISSIONS, status=403)
    one.guild_roles.answer(*[forbidden] * 50)  # until someone fixes it
    report = await apply(one)
    other = _configured_with(one, str(ROLE))

    again = await other.apply_role_changes().execute()

    assert len(one.guild_roles.calls) == 1
    assert not again.busy
    assert len(report.refused) == 1
    assert {c.discord_id for c in report.refused_unsent} == set(members[1:])
    rows = [_db(one).tables.role_changes[(m, ROLE)] for m in members]
    assert {(r.status, r.last_error) for r in rows} == {
        (RoleChangeStatus.REFUSED, "missing_permissions")
    }
    other.unwire()


def test_a_bad_token_is_held_for_a_while_for_what_was_asked_before_it() -> None:
    pauses = uc.RolePauses()
    asked = datetime(2026, 1, 1, tzinfo=UTC)
    at = asked + timedelta(seconds=1)
    bad_token = RoleCallResult(RoleCallOutcome.REJECTED, status=401)
    pauses.token_refused(bad_token, at)

    assert pauses.refusal(asked, at + REFUSAL_HOLD / 2) is bad_token
    assert pauses.refusal(at, at) is bad_token  # asked for as it was refused
    assert pauses.refusal(at + timedelta(seconds=1), at) is None  # asked for since
    assert pauses.refusal(asked, at + REFUSAL_HOLD) is None  # over
    pauses.token_refused(bad_token, at)
    pauses.went_through()  # a call went through: it holds no more
    assert pauses.refusal(asked, at) is None


async def test_discord_unavailable_is_retried_with_backoff_until_it_works(one: Harness) -> None:
    one.guild_roles.answer(RoleCallOutcome.UNAVAILABLE, RoleCallOutcome.UNAVAILABLE)
    profile = await _linked(one)

    first = await apply(one)
    assert [c.attempts for c in first.retrying] == [1]
    assert first.retrying[0].next_attempt_at == one.clock.now() + RETRY_DELAYS[0]
    assert not (await apply(one)).busy  # not due yet
    one.clock.advance(RETRY_DELAYS[0])
    assert [c.attempts for c in (await apply(one)).retrying] == [2]
    one.clock.advance(RETRY_DELAYS[1])
    done = await apply(one)
    assert [c.attempts for c in done.done] == [3]
    assert one.guild_roles.has(ROLE, profile.id)
    assert len(one.guild_roles.calls) == 3


async def test_discord_unavailable_too_long_is_given_up_and_audited(one: Harness) -> None:
    one.guild_roles.answer(*[RoleCallOutcome.UNAVAILABLE] * MAX_ATTEMPTS)
    profile = await _linked(one)
    for delay in (*RETRY_DELAYS, None):
        report = await apply(one)
        if delay is not None:
            assert len(report.retrying) == 1
            one.clock.advance(delay)
    assert [c.attempts for c in report.failed] == [MAX_ATTEMPTS]
    assert audited(one, AuditKind.DISCORD_ROLE_FAILED)[0]["reason"] == "unavailable"
    one.clock.advance(timedelta(days=1))
    assert not (await apply(one)).busy
    assert len(one.guild_roles.calls) == MAX_ATTEMPTS
    # `roles sync` asks again for what was given up; Discord works by then.
    assert (await one.container.request_roles_for_links().execute()).total == 1
    assert len((await apply(one)).done) == 1
    assert one.guild_roles.has(ROLE, profile.id)


async def test_discord_down_holds_the_rest_of_a_backlog_until_it_answers_again(
    one: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Discord answers 5xx (or times out) for a while: a backlog is not called through one by
    one each pass. After OUTAGE_THRESHOLD failures in a row the rest of the batch, and every
    later pass, waits for a pause (one line in the log); then one call tries again, and once
    Discord answers the queue drains as usual."""
    members = await _linked_many(one, 30)  # 30 changes: two batches of 20
    one.guild_roles.answer(*[RoleCallOutcome.UNAVAILABLE] * 100)
    worker = RoleWorker(one.container)

    with caplog.at_level("WARNING", logger="taskflow_link.roles"):
        passes = 0
        while await worker.pass_once():  # on at once while busy, as QueueWorker does
            passes += 1
            assert passes < 10

    assert len(one.guild_roles.calls) == OUTAGE_THRESHOLD  # then nothing more
    held = [
        c
        for c in _db(one).tables.role_changes.values()
        if c.attempts == 0 and c.last_error == "unavailable"
    ]
    assert len(held) == 20 - OUTAGE_THRESHOLD  # the first batch's rest, untried
    pause = OUTAGE_PAUSES[0]
    assert all(pause <= c.next_attempt_at - one.clock.now() <= pause * 1.5 for c in held)
    assert len({c.next_attempt_at for c in held}) == len(held)  # spread
    [line] = [m for m in caplog.messages if "held back" in m]
    assert f"{20 - OUTAGE_THRESHOLD} more change(s) held back" in line
    assert worker.idle_seconds() == 5.0  # the poll: the pause is longer
    one.clock.advance(pause)
    assert await worker.pass_once()  # the pause ended: a pass tries again, fails...
    assert not await worker.pass_once()  # ...and the rest waits for the next step
    assert len(one.guild_roles.calls) == OUTAGE_THRESHOLD * 2
    # One line for each pass that held changes back, not one per change.
    assert len([m for m in caplog.messages if "held back" in m]) == 2
    one.clock.advance(OUTAGE_PAUSES[1] - timedelta(seconds=1))  # the next step is longer
    assert not await worker.pass_once()
    assert len(one.guild_roles.calls) == OUTAGE_THRESHOLD * 2
    one.clock.advance(OUTAGE_PAUSES[1])  # its end, and the spread

    one.guild_roles.script.clear()  # Discord is back
    for _ in range(10):
        while await worker.pass_once():
            pass
        one.clock.advance(RETRY_DELAYS[1])  # the few that failed come due later
    assert all(one.guild_roles.has(ROLE, m.id) for m in members)
    assert len(one.guild_roles.calls) == OUTAGE_THRESHOLD * 2 + 30


async def test_an_answer_from_discord_ends_the_count_of_failures_in_a_row(one: Harness) -> None:
    """Failures spread between answers are single failures: each retried on its own
    back-off, nothing held back."""
    await _linked_many(one, 10)
    one.guild_roles.answer(
        *[RoleCallOutcome.UNAVAILABLE] * (OUTAGE_THRESHOLD - 1),
        RoleCallOutcome.NOT_A_MEMBER,
        *[RoleCallOutcome.UNAVAILABLE] * (OUTAGE_THRESHOLD - 1),
    )

    report = await apply(one)

    assert len(one.guild_roles.calls) == 10
    assert not report.held_back
    assert report.paused_until is None
    assert len(report.retrying) == 2 * (OUTAGE_THRESHOLD - 1)


async def test_a_rate_limit_waits_for_retry_after_and_holds_the_rest_of_the_batch(
    one: Harness,
) -> None:
    first, second = await _linked(one, 5011), await _linked(one, 5012)
    one.guild_roles.answer(RoleCallResult(RoleCallOutcome.RATE_LIMITED, retry_after=1.5))

    report = await apply(one)

    assert len(one.guild_roles.calls) == 1  # the second was not even tried
    assert len(report.retrying) == 2
    wait = timedelta(seconds=1.5)
    assert report.paused_until == one.clock.now() + wait
    limited = _db(one).tables.role_changes[(first.id, ROLE)]
    held_back = _db(one).tables.role_changes[(second.id, ROLE)]
    for change in (limited, held_back):
        # due a little after the pause ends (spread: not all at one instant)
        assert wait <= change.next_attempt_at - one.clock.now() <= wait + JITTER_MIN
        assert change.attempts == 0  # a rate limit is not a failure that counts
        assert change.last_error == "rate_limited"
    one.clock.advance(timedelta(seconds=1))
    assert not (await apply(one)).busy
    one.clock.advance(timedelta(seconds=0.5) + JITTER_MIN)
    assert len((await apply(one)).done) == 2
    assert one.guild_roles.has(ROLE, first.id)
    assert one.guild_roles.has(ROLE, second.id)
    assert len(one.guild_roles.calls) == 3


async def test_a_rate_limit_holds_every_later_pass_for_that_server_until_it_ends(
    r: Harness,
) -> None:
    """The worker goes on at once after a busy pass: the next batches must not ask Discord
    again for the server it rate limited (one 429 per batch of 20, within the same
    retry_after); the other server's changes go on meanwhile (helper-62's review)."""
    members = await _linked_many(r, 30)  # 60 changes: ROLE's, then ELSEWHERE's, for each
    r.guild_roles.answer(RoleCallResult(RoleCallOutcome.RATE_LIMITED, retry_after=30.0))
    worker = RoleWorker(r.container)

    passes = 0
    while await worker.pass_once():  # what QueueWorker._run does: on at once while busy
        passes += 1
        assert passes < 10

    to_role = [c for c in r.guild_roles.calls if c.role == ROLE]
    assert len(to_role) == 1  # the 429; nothing more for that server
    held_back = [
        c.next_attempt_at
        for (_, role), c in _db(r).tables.role_changes.items()
        if role == ROLE and c.last_error == "rate_limited"
    ]
    assert len(held_back) == 10  # the first batch's: the 429's, and 9 never tried
    assert len(set(held_back)) == 10  # spread, not all due at one instant
    assert all(r.guild_roles.has(ELSEWHERE, m.id) for m in members)
    assert worker.idle_seconds() == 5.0  # the poll comes first (30 s of pause left)
    r.clock.advance(timedelta(seconds=28))
    assert not await worker.pass_once()  # still paused: no call
    assert len(r.guild_roles.calls) == 31
    assert worker.idle_seconds() == 2.0  # woken when the pause ends, not at the next poll
    r.clock.advance(timedelta(seconds=2 + 30 * JITTER_SHARE))  # the end, and the spread
    while await worker.pass_once():
        pass
    assert all(r.guild_roles.has(ROLE, m.id) for m in members)
    assert len(r.guild_roles.calls) == 61  # each member's ROLE once more, no other 429


async def test_a_server_whose_limit_is_used_up_gets_no_call_until_it_resets(r: Harness) -> None:
    """Discord says in every answer how many calls its limit leaves (X-RateLimit-Remaining)
    and when it resets: once none is left, no call is made for that server until then, so
    thousands of changes cost no 429 (each counts towards its limit of invalid requests per
    address); the other server's go on meanwhile."""
    members = await _linked_many(r, 60)  # 120 changes: ROLE's and ELSEWHERE's
    r.guild_roles.bucket = Bucket(calls=5, window=timedelta(seconds=10), clock=r.clock)
    worker = RoleWorker(r.container)

    for _ in range(200):
        while await worker.pass_once():
            pass
        if all(r.guild_roles.has(role, m.id) for m in members for role in (ROLE, ELSEWHERE)):
            break
        r.clock.advance(timedelta(seconds=worker.idle_seconds()))

    assert all(r.guild_roles.has(ROLE, m.id) for m in members)
    assert all(r.guild_roles.has(ELSEWHERE, m.id) for m in members)
    assert len(r.guild_roles.calls) == 120  # not one 429


async def test_changes_waiting_for_a_rate_limit_are_logged_in_one_line_per_server(
    r: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await _linked_many(r, 10)  # 20 changes, one batch: ROLE's and ELSEWHERE's
    r.guild_roles.bucket = Bucket(calls=2, window=timedelta(seconds=10), clock=r.clock)

    with caplog.at_level("WARNING", logger="taskflow_link.roles"):
        report = await RoleWorker(r.container).run_once()

    assert report is not None
    assert len(report.retrying) == 16
    waiting = [m for m in caplog.messages if "rate limit" in m]
    assert [m.split(" wait for")[0] for m in waiting] == [
        f"8 Discord role change(s) in server {ROLE.guild_id}",
        f"8 Discord role change(s) in server {ELSEWHERE.guild_id}",
    ]
    assert not [m for m in caplog.messages if "not done" in m]


@pytest.mark.parametrize(
    "limited",
    [
        RoleCallResult(RoleCallOutcome.RATE_LIMITED, retry_after=30.0, global_limit=True),
        RoleCallResult(RoleCallOutcome.RATE_LIMITED, status=429),  # Cloudflare: no retry_after
    ],
    ids=["global", "cloudflare"],
)
async def test_a_global_rate_limit_holds_every_server(r: Harness, limited: RoleCallResult) -> None:
    await _linked_many(r, 15)
    r.guild_roles.answer(limited)

    first = await apply(r)
    again = await apply(r)

    assert len(r.guild_roles.calls) == 1
    assert len(first.retrying) == 20
    assert again == RoleChangeReport(paused_until=first.paused_until)  # nothing claimed
    assert first.paused_until is not None
    assert first.paused_until > r.clock.now()
    assert all(
        c.next_attempt_at >= first.paused_until
        for c in _db(r).tables.role_changes.values()
        if c.last_error == "rate_limited"
    )


async def test_cloudflare_pauses_every_call_for_its_own_backoff_whatever_the_row(
    r: Harness,
) -> None:
    """Cloudflare's 429 says nothing of how long: every call waits 1 min, then 5, 15 and 60
    after each one in a row, back to 1 min once a call goes through. Never the back-off of
    whichever row was sent (up to 4 h after a long outage), never an attempt that counts:
    a change is not given up for being rate limited, and the pause holds even when the row
    was on its last attempt (helper-67's review)."""
    stale = await _linked(r, 5100)  # Discord down for hours: its next try is the last
    r.guild_roles.answer(*[RoleCallOutcome.UNAVAILABLE] * (MAX_ATTEMPTS - 1) * 2)
    for delay in RETRY_DELAYS:
        await apply(r)
        r.clock.advance(delay)
    assert _db(r).tables.role_changes[(stale.id, ROLE)].attempts == MAX_ATTEMPTS - 1
    fresh = await _linked_many(r, 5)
    r.guild_roles.answer(*[CLOUDFLARE] * 4)
    sent = len(r.guild_roles.calls)

    for step in CLOUDFLARE_PAUSES:
        now = r.clock.now()
        report = await apply(r)
        assert len(r.guild_roles.calls) == sent + 1  # one call, the rest held back untried
        sent += 1
        assert report.paused_until == now + step
        assert (await apply(r)).paused_until == now + step  # no call meanwhile
        assert len(r.guild_roles.calls) == sent
        for change in _db(r).tables.role_changes.values():
            if change.status is RoleChangeStatus.PENDING:
                assert change.next_attempt_at >= now + step
        r.clock.advance(step + JITTER_MAX)

    stale_row = _db(r).tables.role_changes[(stale.id, ROLE)]
    assert stale_row.status is RoleChangeStatus.PENDING  # never given up for a rate limit
    assert stale_row.attempts == MAX_ATTEMPTS - 1
    assert not audited(r, AuditKind.DISCORD_ROLE_FAILED)
    while (await apply(r)).busy:  # the fifth try goes through: the back-off starts again
        pass
    assert all(r.guild_roles.has(ROLE, p.id) for p in (stale, *fresh))
    r.guild_roles.answer(CLOUDFLARE)
    await _linked(r, 5101)
    now = r.clock.now()
    assert (await apply(r)).paused_until == now + CLOUDFLARE_PAUSES[0]


@pytest.mark.parametrize("seconds", [1e300, float("inf"), float("nan")])
async def test_a_retry_after_beyond_any_date_pauses_for_a_day_not_a_broken_pass(
    one: Harness, seconds: float
) -> None:
    """A 429's retry_after is a float from the answer's JSON (``1e400`` parses as infinity):
    one past the dates a timedelta holds raised OverflowError in the pass, which then ended
    with the rest of its batch claimed (and the next pass met the same)."""
    await _linked_many(one, 3)
    one.guild_roles.answer(RoleCallResult(RoleCallOutcome.RATE_LIMITED, retry_after=seconds))

    report = await apply(one)

    assert len(one.guild_roles.calls) == 1
    assert len(report.retrying) == 3
    assert report.paused_until is not None
    assert report.paused_until <= one.clock.now() + RETRY_AFTER_MAX


async def test_roles_sync_waits_for_a_rate_limit_instead_of_asking_again(one: Harness) -> None:
    """``roles sync`` applies the queue itself: after a 429 it waits, and with no time left
    says what is still queued, without asking Discord again for the rest."""
    since = one.clock.now()
    await _linked_many(one, 150)
    one.guild_roles.answer(RoleCallResult(RoleCallOutcome.RATE_LIMITED, retry_after=30.0))

    totals = await apply_until_done(one.container, since=since, wait=0)

    assert len(one.guild_roles.calls) == 1
    assert totals["still_queued"] == 150


def _configured_with(h: Harness, roles: str) -> Container:
    """Another process on the same store, Discord and clock, whose setting names ``roles``."""
    settings = make_settings(discord_linked_roles=roles, discord_bot_token="bot-token")
    other = build_container(settings)
    other.memory_db.override(_db(h))
    other.clock.override(h.clock)
    other.discord_roles.override(h.guild_roles)
    return other


async def test_a_role_taken_out_of_the_setting_is_no_longer_added_but_still_removed(
    one: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator configured the wrong role and fixes the setting: an add still queued or
    retrying for it is finished without calling Discord (helper-62's review), but a removal
    for a member who unlinked while it was configured still goes out: never a role the
    service handed out on an unlinked member."""
    one.guild_roles.answer(RoleCallOutcome.UNAVAILABLE)
    first = await _linked(one, 5015)
    await apply(one)  # Discord down: the add is retried later
    second = await _linked(one, 5016)
    await apply(one)
    one.guild_roles.answer(RoleCallOutcome.UNAVAILABLE)
    await one.container.unlink_discord().execute(second.id)  # a removal, queued...
    await apply(one)  # ...and retrying
    fixed = _configured_with(one, str(ELSEWHERE))
    one.clock.advance(RETRY_DELAYS[0])
    calls = len(one.guild_roles.calls)

    with caplog.at_level("WARNING", logger="taskflow_link.roles"):
        report = await RoleWorker(fixed).run_once()

    assert report is not None
    assert one.guild_roles.calls[calls:] == [
        RoleCall(RoleAction.REMOVE, ROLE, second.id, REASONS[RoleAction.REMOVE])
    ]
    assert not one.guild_roles.has(ROLE, second.id)
    assert [(c.discord_id, c.action) for c in report.unconfigured] == [(first.id, RoleAction.ADD)]
    assert [(c.discord_id, c.action) for c in report.done] == [(second.id, RoleAction.REMOVE)]
    row = _db(one).tables.role_changes[(first.id, ROLE)]
    assert (row.status, row.last_error) == (RoleChangeStatus.REFUSED, NOT_CONFIGURED)
    [line] = [r.getMessage() for r in caplog.records if "no longer in" in r.getMessage()]
    assert line.startswith(f"1 change(s) of role {ROLE.role_id} in server {ROLE.guild_id}")
    assert not (await fixed.apply_role_changes().execute()).busy
    assert not one.guild_roles.has(ROLE, first.id)
    fixed.unwire()
    # Configured again: `roles sync` asks for the add again.
    assert (await one.container.request_roles_for_links().execute()) == uc.RolesRequested(
        additions=1, removals=0
    )
    assert [c.action for c in (await apply(one)).done] == [RoleAction.ADD]
    assert one.guild_roles.has(ROLE, first.id)


async def test_a_removal_for_a_role_out_of_the_setting_is_not_an_add_once_relinked(
    one: Harness,
) -> None:
    """What goes out is decided from the link: a member who linked again since their unlink
    would get the role, which the setting no longer names; nothing is sent."""
    profile = await _linked(one, 5017)
    await apply(one)
    await one.container.unlink_discord().execute(profile.id)
    other = _configured_with(one, str(ELSEWHERE))  # its unlink queues nothing for ROLE
    account = (await one.sign_up("again", "again@example.com")).account
    async with one.uow() as uow:  # linked again, by an instance without ROLE
        await uow.links.add(Link(profile.id, account.id, one.clock.now(), "again"))
        await uow.commit()
    calls = len(one.guild_roles.calls)

    report = await other.apply_role_changes().execute()

    assert one.guild_roles.calls[calls:] == []
    assert [(c.discord_id, c.action) for c in report.unconfigured] == [
        (profile.id, RoleAction.REMOVE)
    ]
    other.unwire()


async def test_an_add_for_a_role_out_of_the_setting_is_not_a_removal_once_unlinked(
    one: Harness,
) -> None:
    """An add queued for the role (never sent: Discord was down), then the role taken out of
    the setting and the member unlinked by an instance without it (which queues nothing for
    the role): the service never gave that role, so it takes nothing away (a member may
    hold it for other reasons); only a removal an unlink asked for goes out."""
    one.guild_roles.answer(RoleCallOutcome.UNAVAILABLE)
    profile = await _linked(one, 5019)
    await apply(one)  # retried later
    other = _configured_with(one, str(ELSEWHERE))
    await other.unlink_discord().execute(profile.id)
    one.clock.advance(RETRY_DELAYS[0])
    calls = len(one.guild_roles.calls)

    report = await other.apply_role_changes().execute()

    assert [c for c in one.guild_roles.calls[calls:] if c.role == ROLE] == []
    assert [(c.discord_id, c.action) for c in report.unconfigured] == [(profile.id, RoleAction.ADD)]
    other.unwire()


async def test_a_role_given_then_taken_out_of_the_setting_is_removed_at_the_unlink(
    one: Harness,
) -> None:
    """The service gave a member the role (Discord took the add), then the operator took the
    role out of the setting (another role in its place), then the member unlinked: the unlink
    queued removals for the configured roles only, so the member kept, unlinked, a role the
    service handed out (for good: `roles sync` looks only at the configured roles). The
    unlink asks for the removal of every role its row says Discord added, configured or not
    (a role never given, an add never sent, is left alone: see the test above)."""
    profile = await _linked(one, 5020)
    await apply(one)
    assert one.guild_roles.has(ROLE, profile.id)
    other = _configured_with(one, str(ELSEWHERE))
    await other.unlink_discord().execute(profile.id)
    calls = len(one.guild_roles.calls)

    report = await other.apply_role_changes().execute()

    assert (
        RoleCall(RoleAction.REMOVE, ROLE, profile.id, REASONS[RoleAction.REMOVE])
        in (one.guild_roles.calls[calls:])
    )
    assert not one.guild_roles.has(ROLE, profile.id)
    assert (profile.id, ROLE, RoleAction.REMOVE) in [
        (c.discord_id, c.role, c.action) for c in report.done
    ]
    other.unwire()


async def test_an_unlink_while_the_add_is_with_discord_removes_it_whatever_its_setting(
    one: Harness,
) -> None:
    """Worker A sends the add; meanwhile the member unlinks on an instance whose setting no
    longer names the role. The unlink asks to remove only the roles whose add Discord took
    (the add is still on its way: not among them), and A's add lands and is written back
    done: the member would keep, unlinked, a role the service gave. A's write-back, seeing
    the member no longer linked, asks for the removal itself."""
    profile = await _linked(one, 5021)
    other = _configured_with(one, str(ELSEWHERE))

    async def unlink_elsewhere() -> None:
        await other.unlink_discord().execute(profile.id)

    one.guild_roles.during_next_call = unlink_elsewhere
    first = await apply(one)
    assert [c.action for c in first.done] == [RoleAction.ADD]  # Discord took it
    assert one.guild_roles.has(ROLE, profile.id)

    again = await apply(one)

    assert (RoleAction.REMOVE, ROLE) in [(c.action, c.role) for c in again.done]
    assert not one.guild_roles.has(ROLE, profile.id)
    assert (await apply(one)) == RoleChangeReport()  # and then nothing more
    other.unwire()


async def _given_up_add(one: Harness, discord_id: int) -> DiscordProfile:
    """A linked member whose add Discord timed out at every try, yet took (a timeout says
    nothing of what Discord did): given up, the row says failed, the member has the role."""
    one.guild_roles.answer(*[RoleCallOutcome.UNAVAILABLE] * MAX_ATTEMPTS)
    profile = await _linked(one, discord_id)
    for delay in RETRY_DELAYS:
        await apply(one)
        one.clock.advance(delay)
    one.guild_roles.held.add((ROLE, profile.id))  # one of the timed-out calls went through
    return profile


async def test_an_add_given_up_is_removed_at_an_unlink_whatever_its_setting(
    one: Harness,
) -> None:
    """An add given up after timeouts that Discord took, then the member unlinks on an
    instance whose setting no longer names the role: the unlink asked to remove only the
    roles whose add was done, so the member kept, unlinked, a role the service gave (for
    good: nothing asked again). A given-up add counts as possibly given: the unlink asks for
    its removal (for a member who never got it, a no-op for Discord)."""
    profile = await _given_up_add(one, 5022)
    assert [c.attempts for c in (await apply(one)).failed] == [MAX_ATTEMPTS]
    other = _configured_with(one, str(ELSEWHERE))
    await other.unlink_discord().execute(profile.id)

    report = await other.apply_role_changes().execute()

    assert (profile.id, ROLE, RoleAction.REMOVE) in [
        (c.discord_id, c.role, c.action) for c in report.done
    ]
    assert not one.guild_roles.has(ROLE, profile.id)
    other.unwire()


async def test_an_unlink_during_the_last_try_of_an_add_removes_it_once_given_up(
    one: Harness,
) -> None:
    """The last try of an add times out (Discord may have taken it) while the member unlinks
    on an instance whose setting no longer names the role: the unlink did not see the add
    (pending then), and the worker gives it up. Its write-back, the member no longer linked,
    asks for the removal, as for an add done."""
    profile = await _given_up_add(one, 5023)
    other = _configured_with(one, str(ELSEWHERE))

    async def unlink_elsewhere() -> None:
        await other.unlink_discord().execute(profile.id)

    one.guild_roles.during_next_call = unlink_elsewhere
    assert [c.attempts for c in (await apply(one)).failed] == [MAX_ATTEMPTS]

    again = await apply(one)

    assert (RoleAction.REMOVE, ROLE) in [(c.action, c.role) for c in again.done]
    assert not one.guild_roles.has(ROLE, profile.id)
    other.unwire()


async def test_roles_sync_leaves_the_changes_of_roles_it_does_not_name_to_the_service(
    r: Harness,
) -> None:
    """`roles sync` run with a setting that names fewer roles than the service's (to sync one
    role, or from a cron job with an older environment) syncs its own; it finished the
    service's changes of the others unsent, which no later pass of the service asked for
    again (the members linked meanwhile went without that role)."""
    r.guild_roles.answer(RoleCallOutcome.UNAVAILABLE, RoleCallOutcome.UNAVAILABLE)
    profile = await _linked(r, 5018)
    await apply(r)  # Discord down: both adds retried later
    r.clock.advance(RETRY_DELAYS[0])
    sync = _configured_with(r, str(ROLE))

    totals = await apply_until_done(sync, since=r.clock.now(), wait=0)

    assert r.guild_roles.has(ROLE, profile.id)
    assert not r.guild_roles.has(ELSEWHERE, profile.id)
    assert totals["not_configured"] == 0
    assert _db(r).tables.role_changes[(profile.id, ELSEWHERE)].status is RoleChangeStatus.PENDING
    sync.unwire()
    assert len((await apply(r)).done) == 1  # the service's worker sends it
    assert r.guild_roles.has(ELSEWHERE, profile.id)


# -- roles sync ---------------------------------------------------------------------------------


async def test_sync_adds_the_role_to_members_linked_before_it_was_configured(
    one: Harness,
) -> None:
    accounts = [(await one.sign_up(f"old{n}", f"old{n}@example.com")).account for n in range(3)]
    async with one.uow() as uow:  # linked before TASKFLOW_LINK_DISCORD_LINKED_ROLES was set
        for n, account in enumerate(accounts):
            await uow.links.add(Link(DiscordId(6000 + n), account.id, one.clock.now(), "old"))
        await uow.commit()
    sync = one.container.request_roles_for_links

    assert (await sync().execute()) == uc.RolesRequested(additions=3, removals=0)
    assert len((await apply(one)).done) == 3
    assert all(one.guild_roles.has(ROLE, DiscordId(6000 + n)) for n in range(3))
    assert (await sync().execute()).total == 0  # nothing missing any more
    one.guild_roles.held.clear()  # someone took the role away by hand in Discord
    assert (await sync().execute(every=True)) == uc.RolesRequested(additions=3, removals=0)
    await apply(one)
    assert all(one.guild_roles.has(ROLE, DiscordId(6000 + n)) for n in range(3))


async def test_sync_asks_again_for_a_removal_discord_refused(one: Harness) -> None:
    """The bot lacked the permission when the member unlinked: once it is fixed, `roles sync`
    takes the role away (an unlinked member must not keep it for good)."""
    profile = await _linked(one, 5020)
    await apply(one)
    await one.container.unlink_discord().execute(profile.id)
    one.guild_roles.answer(RoleCallOutcome.MISSING_PERMISSIONS)
    assert [c.action for c in (await apply(one)).refused] == [RoleAction.REMOVE]
    assert one.guild_roles.has(ROLE, profile.id)
    one.clock.advance(timedelta(seconds=30))  # fixed in Discord

    assert (await one.container.request_roles_for_links().execute()) == uc.RolesRequested(
        additions=0, removals=1
    )
    assert [c.action for c in (await apply(one)).done] == [RoleAction.REMOVE]
    assert not one.guild_roles.has(ROLE, profile.id)
    assert (await one.container.request_roles_for_links().execute()).total == 0


async def test_an_unlink_without_the_setting_removes_the_role_the_row_says_was_added(
    one: Harness,
) -> None:
    """An instance whose settings name no role (a rolling deploy that adds the setting, the
    feature briefly off) handles an unlink: the row says Discord took the add, so it queues
    the removal, which the workers of the instances with the setting send."""
    profile = await _linked(one, 5024)
    await apply(one)
    await uc.UnlinkDiscord(one.uow, one.clock, linked_roles=()).execute(profile.id)

    assert [(c.role, c.action) for c in (await apply(one)).done] == [(ROLE, RoleAction.REMOVE)]
    assert not one.guild_roles.has(ROLE, profile.id)
    assert (await one.container.request_roles_for_links().execute()).total == 0


async def test_sync_removes_the_role_an_unlink_without_the_setting_left(one: Harness) -> None:
    """An unlink that queued no removal (an older release's instance whose settings named no
    role: before, an unlink queued removals for the configured roles only) left the row
    saying "added". `roles sync` finds it and takes the role away (helper-62's review)."""
    profile = await _linked(one, 5021)
    await apply(one)
    assert one.guild_roles.has(ROLE, profile.id)
    async with one.uow() as uow:  # that release's unlink: the link removed, nothing queued
        link = await uow.links.get_by_discord_id(profile.id)
        assert link is not None
        assert await uow.links.remove(link)
        await uow.commit()
    assert not (await apply(one)).busy  # nothing was queued

    assert (await one.container.request_roles_for_links().execute()) == uc.RolesRequested(
        additions=0, removals=1
    )
    assert [c.action for c in (await apply(one)).done] == [RoleAction.REMOVE]
    assert not one.guild_roles.has(ROLE, profile.id)
    assert (await one.container.request_roles_for_links().execute(every=True)).total == 0


async def test_sync_removes_the_role_after_a_later_add_was_refused(one: Harness) -> None:
    """A row keeps its last action only: the add went through, a later one (`roles sync
    --every` during a permissions mishap) was refused, and an unlink without the setting
    queued no removal. The member still holds the role: `roles sync` takes it away. A
    member the add found outside the server holds none of its roles: nothing is asked
    (helper-67's review)."""
    member = await _linked(one, 5022)
    await apply(one)
    await one.container.request_roles_for_links().execute(every=True)
    one.guild_roles.answer(RoleCallResult(RoleCallOutcome.MISSING_PERMISSIONS, status=403))
    await apply(one)
    row = _db(one).tables.role_changes[(member.id, ROLE)]
    assert (row.action, row.status) == (RoleAction.ADD, RoleChangeStatus.REFUSED)
    assert one.guild_roles.has(ROLE, member.id)
    one.clock.advance(timedelta(minutes=10))
    outsider = await _linked(one, 5023)
    one.guild_roles.answer(RoleCallOutcome.NOT_A_MEMBER)
    assert [c.last_error for c in (await apply(one)).refused] == ["not_a_member"]
    for profile in (member, outsider):
        await uc.UnlinkDiscord(one.uow, one.clock, linked_roles=()).execute(profile.id)

    assert (await one.container.request_roles_for_links().execute()) == uc.RolesRequested(
        additions=0, removals=1
    )
    assert [(c.discord_id, c.action) for c in (await apply(one)).done] == [
        (member.id, RoleAction.REMOVE)
    ]
    assert not one.guild_roles.has(ROLE, member.id)
    assert (await one.container.request_roles_for_links().execute()).total == 0


def _another_instance(h: Harness) -> Container:
    """A second serving instance on the same database and Discord, with its own process
    state (its pauses and holds): its role worker takes changes from the same queue."""
    other = build_container(
        make_settings(discord_linked_roles=str(ROLE), discord_bot_token="bot-token")
    )
    other.memory_db.override(_db(h))
    other.clock.override(h.clock)
    other.discord_roles.override(h.guild_roles)
    return other


async def _linked_before_the_role(h: Harness, count: int) -> list[DiscordId]:
    accounts = [(await h.sign_up(f"pre{n}", f"pre{n}@example.com")).account for n in range(count)]
    async with h.uow() as uow:
        for n, account in enumerate(accounts):
            await uow.links.add(Link(DiscordId(6100 + n), account.id, h.clock.now(), "old"))
        await uow.commit()
    return [DiscordId(6100 + n) for n in range(count)]


async def test_roles_sync_counts_the_changes_another_instance_applied(one: Harness) -> None:
    """`roles sync` asks for the roles, and the service's role workers are woken too (on
    Postgres every instance, by NOTIFY): they may take some of the changes, or all of them,
    before the command does. Its counts (and its exit status) are those of what it asked
    for, whoever applied it; they counted only what the command itself sent."""
    members = await _linked_before_the_role(one, 3)
    service = _another_instance(one)
    since = one.clock.now()
    asked = await one.container.request_roles_for_links().execute()
    assert asked.additions == 3
    await service.apply_role_changes().execute(limit=2)  # woken first: takes two

    totals = await apply_until_done(one.container, since=since, wait=0)

    assert all(one.guild_roles.has(ROLE, m) for m in members)
    assert totals["add:done"] == 3
    assert totals["still_queued"] == 0
    service.unwire()


async def test_roles_sync_fails_on_a_refusal_another_instance_met(one: Harness) -> None:
    """The service's worker took every change the command asked for, and Discord refused
    them (the bot lost Manage Roles): the command must say so and exit 1 (it said it had
    nothing to report, so a cron job passed)."""
    await _linked_before_the_role(one, 3)
    service = _another_instance(one)
    one.guild_roles.answer(RoleCallResult(RoleCallOutcome.MISSING_PERMISSIONS, status=403))
    since = one.clock.now()
    await one.container.request_roles_for_links().execute()
    await service.apply_role_changes().execute()

    totals = await apply_until_done(one.container, since=since, wait=0)

    assert len(one.guild_roles.calls) == 1  # one call; the rest taken from its refusal
    assert totals["missing_permissions"] == 3
    service.unwire()


async def test_roles_sync_does_not_wait_for_a_change_it_did_not_ask_for(
    one: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member's change retrying after Discord failed it (its next try later) is not
    one `roles sync` asked for, nor counts: the command ends once its own are done instead of
    waiting out --wait for it."""
    await _linked_before_the_role(one, 2)
    one.guild_roles.answer(RoleCallOutcome.UNAVAILABLE)
    await _linked(one, 5109)
    assert len((await apply(one)).retrying) == 1  # tried again in 5 s
    one.clock.advance(timedelta(seconds=1))
    since = one.clock.now()
    assert (await one.container.request_roles_for_links().execute()).additions == 2

    async def no_wait(seconds: float) -> None:
        raise AssertionError(f"waited {seconds} s for a change it did not ask for")

    monkeypatch.setattr("entrypoints.role_worker.asyncio.sleep", no_wait)
    totals = await apply_until_done(one.container, since=since, wait=3600)

    assert totals["add:done"] == 2
    assert totals["still_queued"] == 0


# -- metrics and settings -----------------------------------------------------------------------


async def test_role_changes_are_counted_by_action_and_outcome(one: Harness) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    one.guild_roles.answer(RoleCallOutcome.DONE, RoleCallOutcome.NOT_A_MEMBER)
    await _linked(one, 5013)
    await _linked(one, 5014)
    record_outcome(metrics, "apply_role_changes", await apply(one), None)

    def value(**labels: str) -> float:
        return registry.get_sample_value("taskflow_link_discord_role_changes_total", labels) or 0

    assert value(action="add", outcome="done") == 1
    assert value(action="add", outcome="not_a_member") == 1


def test_the_setting_is_checked_and_named() -> None:
    def load(value: str, **more: object) -> object:
        return load_settings(
            secret_key=TEST_SECRET_KEY, discord_linked_roles=value, _env_file=None, **more
        )

    for bad in ("1300000000000000001", "guild:role", "1:2,,3:4", "1:2,1:2", "0:5"):
        with pytest.raises(SettingsError, match="TASKFLOW_LINK_DISCORD_LINKED_ROLES"):
            load(bad, discord_bot_token="t")
    everyone = f"{ROLE}, {ROLE.guild_id}:{ROLE.guild_id}"
    with pytest.raises(SettingsError, match="@everyone role") as refused:
        load(everyone, discord_bot_token="t")
    assert "TASKFLOW_LINK_DISCORD_LINKED_ROLES" in str(refused.value)
    with pytest.raises(SettingsError, match="needs TASKFLOW_LINK_DISCORD_BOT_TOKEN"):
        load(str(ROLE))
    settings = load(f" {ROLE} , {ELSEWHERE}", discord_bot_token="t")
    assert settings.linked_roles == (ROLE, ELSEWHERE)  # type: ignore[attr-defined]
    assert load("").linked_roles == ()  # type: ignore[attr-defined]
