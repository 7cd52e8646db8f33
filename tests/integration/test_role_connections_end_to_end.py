"""Discord Linked Roles over real HTTP: the web app and the Discord emulator on Postgres, the CLI
as an operator runs it. What Discord ends up showing is read from the emulator; what is kept
is read straight from the database."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pydantic import SecretStr
from sqlalchemy import select, text

from adapters.secret_box import AesGcmSecretBox, key_id, parse_keys
from adapters.sql.tables import audit_events, role_connection_tokens
from domain.use_cases.discord_pauses import OUTAGE_PAUSES, OUTAGE_THRESHOLD
from entrypoints.cli import cli
from entrypoints.container import build_container
from entrypoints.role_connection_worker import RoleConnectionWorker
from entrypoints.settings import ENV_PREFIX
from entrypoints.web import create_app
from tests.fakes.role_connections import KEY_A, KEY_B
from tests.harness import PASSWORD
from tests.integration.stack import Browser, Stack, count, sign_up
from tests.queue_stops import Lifespan, until_cancelled, worker_task

ROLES = {
    "discord_role_connections": True,
    "token_encryption_key": KEY_A,
    # The server's worker runs when woken (after a form); its polls never decide a test.
    "role_connections_poll_seconds": 3600.0,
    # Nor a NOTIFY, which arrives when it arrives: the CLI's leases are on the real clock, the
    # server's manual one reads them as run out, and a late pass would push beside the CLI's.
    # (Waking across instances: test_role_connection_instances.)
    "email_listen": False,
}
with_linked_roles = pytest.mark.parametrize("stack", [ROLES], indirect=True)


def cli_env(stack: Stack, **changes: object) -> dict[str, str]:
    """The service's settings as environment variables, for the CLI."""
    env: dict[str, str] = {}
    settings = stack.container.settings()
    for name in type(settings).model_fields:
        value = changes.get(name, getattr(settings, name))
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[ENV_PREFIX + name.upper()] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env


async def run_cli(stack: Stack, *args: str, **changes: object) -> Result:
    return await asyncio.to_thread(
        CliRunner().invoke, cli, list(args), env=cli_env(stack, **changes)
    )


async def register_metadata(stack: Stack) -> Result:
    result = await run_cli(stack, "bot", "sync")
    assert result.exit_code == 0, result.output
    return result


async def connect(stack: Stack, browser: Browser, name: str) -> str:
    """A password account linked through the verification URL; the Discord test user's id."""
    user = stack.emulator.add_user(f"d_{name}")
    await sign_up(browser, name, f"{name}@example.com", verify=False)
    # Signed in (a recent proof) and not linked: the page's button, never the GET, starts it.
    start = await browser.submit("/discord/linked-role", "/discord/linked-role", {})
    landed = await browser.through_discord(start, user.id)
    assert landed.status_code == 200, landed.text
    assert str(landed.url).endswith("/account?notice=role_connected&linked=1")
    # The round trip linked the account: the way back from the wrong Discord account is to
    # unlink it (signing out leaves it linked).
    shown = f"\u2068d_{name}\u2069 (\u2068@d_{name}\u2069, id {user.id})"  # isolated names
    assert f"Discord account connected: {shown}." in landed.text
    assert "If it is not yours, unlink it below" in landed.text
    await scheduled(stack, user.id)
    return user.id


async def scheduled(stack: Stack, user_id: str) -> None:
    """Until the row is scheduled (a day ahead), not claimed (a lease of minutes): the
    server's worker, woken by the link, may still be pushing it when the page has landed."""
    query = select(role_connection_tokens.c.next_push_at).where(
        role_connection_tokens.c.discord_id == int(user_id)
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        async with stack.db.engine.connect() as conn:
            at = (await conn.execute(query)).scalar_one()
        if at > stack.clock.now() + timedelta(hours=1):
            return
        assert loop.time() < deadline, f"still due or claimed: {at}"
        await asyncio.sleep(0.05)


def tokens_of(stack: Stack, user_id: str) -> set[str]:
    """Every access and refresh token the emulated Discord holds for the user."""
    grants = (*stack.emulator.tokens.items(), *stack.emulator.refresh_tokens.items())
    return {token for token, grant in grants if grant.user_id == user_id}


def shown(stack: Stack, user_id: str) -> dict[str, Any] | None:
    connection = stack.emulator.role_connections.get(user_id)
    return None if connection is None else dict(connection["metadata"])


async def rows_as_text(stack: Stack) -> list[str]:
    """Each kept row as the database renders it: every column, as text."""
    async with stack.db.engine.connect() as conn:
        found = await conn.execute(
            text("SELECT row_to_json(t)::text FROM role_connection_tokens t")
        )
        return [row[0] for row in found]


async def sealed_of(stack: Stack, user_id: str) -> str:
    async with stack.db.engine.connect() as conn:
        query = select(role_connection_tokens.c.sealed).where(
            role_connection_tokens.c.discord_id == int(user_id)
        )
        return str((await conn.execute(query)).scalar_one())


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 30.0) -> None:
    """Wait for something a background worker does (a generous deadline, never a timing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, "the worker did not get there"
        await asyncio.sleep(0.05)


# -- registering the metadata -----------------------------------------------------------------


@with_linked_roles
async def test_bot_sync_registers_the_metadata_records(stack: Stack) -> None:
    result = await register_metadata(stack)

    assert "linked roles metadata: linked, linked_days" in result.output
    assert [(r["key"], r["type"]) for r in stack.emulator.role_metadata] == [
        ("linked", 7),  # BOOLEAN_EQUAL
        ("linked_days", 2),  # INTEGER_GREATER_THAN_OR_EQUAL
    ]


async def test_bot_sync_registers_no_metadata_without_linked_roles(stack: Stack) -> None:
    result = await run_cli(stack, "bot", "sync")
    assert result.exit_code == 0, result.output
    assert "linked roles" not in result.output
    assert stack.emulator.role_metadata == []


# -- the verification URL -------------------------------------------------------------------------


@with_linked_roles
async def test_the_verification_url_links_pushes_and_keeps_only_ciphertext(
    stack: Stack, browser: Browser
) -> None:
    await register_metadata(stack)
    user_id = await connect(stack, browser, "dana")

    assert stack.emulator.role_connections[user_id] == {
        "platform_name": "TaskFlow",
        "platform_username": "dana",
        "metadata": {"linked": "1", "linked_days": "0"},
    }
    account = await browser.go("GET", "/account")
    assert "@d_dana" in account.text  # linked
    # What the database holds: no token, in any column; the sealed value opens (with the key
    # and this user's id only) to exactly the tokens Discord issued.
    issued = tokens_of(stack, user_id)
    assert len(issued) == 2
    [row] = await rows_as_text(stack)
    for token in issued:
        assert token not in row
    sealed = await sealed_of(stack, user_id)
    assert sealed.startswith(f"v1.{key_id(parse_keys(KEY_A)[0])}.")
    opened = json.loads(
        AesGcmSecretBox(parse_keys(KEY_A)).open(
            sealed, context=f"discord-role-connection:{user_id}"
        )
    )
    assert {opened["access_token"], opened["refresh_token"]} == issued


@with_linked_roles
async def test_a_discord_account_linked_to_nothing_is_sent_to_sign_in(
    stack: Stack, browser: Browser
) -> None:
    user = stack.emulator.add_user("nobody")
    start = await browser.go("GET", "/discord/linked-role")
    refused = await browser.through_discord(start, user.id)

    assert refused.status_code == 409
    assert "/signin?next=/discord/linked-role" in refused.text
    assert await count(stack.db, role_connection_tokens) == 0


# -- keeping it current -----------------------------------------------------------------------


@with_linked_roles
async def test_an_expired_token_is_refreshed_and_pushed(
    stack: Stack, browser: Browser, caplog: pytest.LogCaptureFixture
) -> None:
    await register_metadata(stack)
    user_id = await connect(stack, browser, "erin")
    before = tokens_of(stack, user_id)

    stack.clock.advance(timedelta(days=8))  # past the access token's 7 days, by our clock
    await stack.container.refresh_role_connections().execute()

    assert shown(stack, user_id) == {"linked": "1", "linked_days": "8"}
    after = tokens_of(stack, user_id)
    assert before.isdisjoint(after - before)
    assert not (before & set(stack.emulator.refresh_tokens))  # the old refresh token is spent
    for token in before | after:
        assert token not in caplog.text


@with_linked_roles
async def test_a_token_discord_ended_early_is_refreshed_by_the_cli(
    stack: Stack, browser: Browser
) -> None:
    await register_metadata(stack)
    user_id = await connect(stack, browser, "fred")
    stack.emulator.role_connections.clear()
    # The emulator's test API, over HTTP: Discord ends the user's access tokens early.
    ended = await browser.client.post(
        f"{stack.emulator_url}/_emulator/users/{user_id}/expire-tokens"
    )
    assert ended.json()["expired"] >= 1
    before = tokens_of(stack, user_id)

    result = await run_cli(stack, "role-connections", "refresh", "--all")

    assert result.exit_code == 0, result.output
    assert "Pushed 1" in result.output
    assert shown(stack, user_id) is not None
    assert shown(stack, user_id)["linked"] == "1"  # type: ignore[index]
    for token in before | tokens_of(stack, user_id):
        assert token not in result.output


@with_linked_roles
async def test_unlinking_pushes_not_linked_and_deletes_the_token(
    stack: Stack, browser: Browser
) -> None:
    await register_metadata(stack)
    user_id = await connect(stack, browser, "gina")

    done = await browser.submit(
        "/account", "/account/discord/unlink", {"current_password": PASSWORD}
    )
    assert done.status_code == 200, done.text

    async def told_and_deleted() -> bool:  # the form woke the server's worker
        return shown(stack, user_id) == {"linked": "0", "linked_days": "0"} and (
            await count(stack.db, role_connection_tokens) == 0
        )

    await eventually(told_and_deleted)
    # Cleared by the push's explicit null: the emulator keeps a field the body leaves out.
    assert stack.emulator.role_connections[user_id]["platform_username"] is None


@with_linked_roles
async def test_invalid_grant_deletes_the_token(stack: Stack, browser: Browser) -> None:
    await register_metadata(stack)
    user_id = await connect(stack, browser, "hana")
    stack.emulator.deauthorize(user_id)  # the person removed the app in Discord

    result = await run_cli(stack, "role-connections", "refresh", "--all")

    assert "dropped 1" in result.output, result.output
    assert await count(stack.db, role_connection_tokens) == 0
    async with stack.db.engine.connect() as conn:
        kinds = (await conn.execute(select(audit_events.c.kind, audit_events.c.detail))).all()
    assert ("role_tokens_deleted", {"reason": "invalid_grant"}) in [tuple(k) for k in kinds]


@with_linked_roles
async def test_tokens_no_key_opens_are_said_on_the_account_page(
    stack: Stack, browser: Browser
) -> None:
    """Tokens a configured key fails to open (altered) keep nothing current: the member's
    account page says the connection needs making again, with the button to do it; they were
    kept and retried in silence. Connecting again ends it."""
    await register_metadata(stack)
    user_id = await connect(stack, browser, "ivy")
    sealed = await sealed_of(stack, user_id)
    altered = sealed[:-4] + ("BBBB" if sealed.endswith("AAAA") else "AAAA")
    async with stack.db.engine.begin() as conn:
        await conn.execute(
            role_connection_tokens.update()
            .where(role_connection_tokens.c.discord_id == int(user_id))
            .values(sealed=altered)
        )

    result = await run_cli(stack, "role-connections", "refresh", "--all")

    assert result.exit_code == 1
    assert "unreadable 1" in result.output, result.output
    page = await browser.go("GET", "/account")
    assert "Your TaskFlow connection on Discord (Linked Roles) stopped updating" in page.text
    assert "TaskFlow can no longer read the access Discord gave it" in page.text
    assert 'href="/discord/linked-role">Connect again</a>' in page.text
    start = await browser.go("GET", "/discord/linked-role")  # linked: straight to Discord
    landed = await browser.through_discord(start, user_id)
    assert str(landed.url).endswith("/account?notice=role_connected")
    assert "stopped updating" not in landed.text


@with_linked_roles
async def test_a_stop_during_a_refresh_keeps_the_tokens_discord_issued(
    stack: Stack, browser: Browser
) -> None:
    """Another process of the service (its own container, engine and pool, on the same
    Postgres and Discord) stops, as at SIGTERM, while its worker's refresh is at Discord:
    Discord has spent the refresh token and issued the new pair, its answer is on the way
    (the emulator's "late" fault) when the grace ends. The refresh and the storing of its
    answer end before the process closes its database: the row holds the pair Discord
    issued, and the next pass pushes with it (before, the answer was dropped, the row kept
    the spent token, and the next pass got invalid_grant and deleted it)."""
    await register_metadata(stack)
    user_id = await connect(stack, browser, "ivy")
    stack.emulator.expire_tokens(user_id)  # the next push is refused: refreshed first
    spent = {t for t, g in stack.emulator.refresh_tokens.items() if g.user_id == user_id}
    async with stack.container.uow()() as uow:
        await uow.role_connection_tokens.mark_all_due(stack.clock.now())
        await uow.commit()
    settings = stack.container.settings().model_copy(
        # A grace over at once; no HTTP interactions (the other process answers them).
        update={"shutdown_timeout_seconds": 0.05, "discord_public_key": None}
    )
    other = build_container(settings)
    other.clock.override(stack.clock)
    stack.emulator.fault_delay = 60.0  # a bound: lifted long before
    stack.emulator.faults["token"] = "late"
    server = Lifespan(create_app(other))
    try:
        await server.start()  # its worker's first pass: the push refused, then the refresh

        async def granted() -> bool:  # Discord spent it and issued the new pair
            return not spent & set(stack.emulator.refresh_tokens)

        await eventually(granted, within=60.0)  # ... and holds the answer
        runner = worker_task(RoleConnectionWorker.name)
        closing = asyncio.ensure_future(server.shutdown())
        await until_cancelled(runner)  # the grace is over: cut off
        # Past the worker's own wait after a cut-off as it stood (0.05 s, timed from the
        # cut-off, before this sleep began: timers fire in order).
        await asyncio.sleep(0.5)
        stack.emulator.faults.pop("token")  # the answer arrives
        await closing  # the workers stopped, then the database closed
    finally:
        stack.emulator.faults.pop("token", None)
        stack.emulator.fault_delay = 3.0
        other.unwire()

    opened = json.loads(
        AesGcmSecretBox(parse_keys(KEY_A)).open(
            await sealed_of(stack, user_id), context=f"discord-role-connection:{user_id}"
        )
    )
    assert stack.emulator.refresh_tokens[opened["refresh_token"]].user_id == user_id
    stack.emulator.role_connections.clear()
    report = await stack.container.refresh_role_connections().execute(everything=True)
    assert (report.pushed, report.revoked) == (1, 0)
    assert shown(stack, user_id) == {"linked": "1", "linked_days": "0"}


# -- Discord's rate limits and blocks -------------------------------------------------------------


async def untouched_and_due(stack: Stack) -> None:
    """Every row as a rate limit leaves it: due, claimed by nobody, no failure counted."""
    query = select(
        role_connection_tokens.c.failures,
        role_connection_tokens.c.claimed_until,
        role_connection_tokens.c.next_push_at,
    )
    async with stack.db.engine.connect() as conn:
        found = (await conn.execute(query)).all()
    assert found
    for failures, claimed_until, next_push_at in found:
        assert failures == 0
        assert claimed_until is None
        assert next_push_at <= stack.clock.now() + timedelta(minutes=1)  # --all: due now


async def connect_three(stack: Stack, browser: Browser) -> list[str]:
    await register_metadata(stack)
    users = [await connect(stack, browser, name) for name in ("jan", "kim", "lou")]
    stack.emulator.role_connections.clear()  # what Discord shows from now on
    return users


async def refresh_stopped(stack: Stack) -> str:
    """``role-connections refresh --all``, stopped by a rate limit or a block: its output."""
    stopped = await run_cli(stack, "role-connections", "refresh", "--all")
    assert stopped.exit_code == 1, stopped.output
    for said in ("Pushed 0", "failed 0", "Stopped:", "3 left due"):
        assert said in stopped.output, stopped.output
    return stopped.output


async def refresh_pushes(stack: Stack, users: list[str]) -> None:
    """Once it is over, a run pushes what the stopped one left due (no ``--all``)."""
    pushed = await run_cli(stack, "role-connections", "refresh")
    assert pushed.exit_code == 0, pushed.output
    assert "Pushed 3" in pushed.output, pushed.output
    assert all(shown(stack, user) == {"linked": "1", "linked_days": "0"} for user in users)


@with_linked_roles
@pytest.mark.parametrize("mode", ["429-shared", "cloudflare", "cloudflare-403", "blocked"])
async def test_the_cli_stops_at_a_rate_limit_or_a_block_and_leaves_the_rest_due(
    stack: Stack, browser: Browser, mode: str
) -> None:
    """One call meets it; the others are not made, no row counts a failure (nothing it did),
    and a Cloudflare 403 is not taken for Discord refusing the token (no refresh)."""
    users = await connect_three(stack, browser)
    calls = stack.emulator.calls.copy()
    stack.emulator.faults["role_connection"] = mode

    said = await refresh_stopped(stack)

    blocked = mode.startswith("cloudflare") or mode == "blocked"
    assert ("blocks this address" in said) is blocked, said
    assert stack.emulator.calls["role_connection"] == calls["role_connection"] + 1
    assert stack.emulator.calls["token"] == calls["token"]  # no refresh
    await untouched_and_due(stack)

    del stack.emulator.faults["role_connection"]
    await refresh_pushes(stack, users)


@with_linked_roles
@pytest.mark.parametrize("mode", ["cloudflare-403", "blocked", "429-global"])
async def test_a_blocked_refresh_spends_no_refresh_token_and_counts_no_failure(
    stack: Stack, browser: Browser, mode: str
) -> None:
    users = await connect_three(stack, browser)
    for user in users:  # Discord ends every access token early: each push refreshes first
        stack.emulator.expire_tokens(user)
    refresh_tokens = {t for t, g in stack.emulator.refresh_tokens.items() if g.user_id in users}
    calls = stack.emulator.calls.copy()
    stack.emulator.faults["token"] = mode

    await refresh_stopped(stack)

    # The first push (Discord's JSON 401: this token ended), then its refresh; nothing more.
    assert stack.emulator.calls["role_connection"] == calls["role_connection"] + 1
    assert stack.emulator.calls["token"] == calls["token"] + 1
    assert refresh_tokens <= set(stack.emulator.refresh_tokens)  # none spent
    await untouched_and_due(stack)

    del stack.emulator.faults["token"]
    await refresh_pushes(stack, users)


@with_linked_roles
async def test_the_servers_passes_wait_out_retry_after_then_push_what_was_left(
    stack: Stack, browser: Browser
) -> None:
    """The web app's own passes (its worker's, on its clock): after Discord's 429 of a limit
    every push meets (a resource's, X-RateLimit-Scope: shared) none calls Discord again until
    retry_after (1.5 s, the emulator's) has passed."""
    users = await connect_three(stack, browser)
    refresh = stack.container.refresh_role_connections
    await all_due(stack)
    calls = stack.emulator.calls["role_connection"]
    stack.emulator.faults["role_connection"] = "429-shared"

    first = await refresh().execute()
    del stack.emulator.faults["role_connection"]
    again = await refresh().execute()

    assert (first.paused, first.failed) == (3, 0)
    assert first.paused_until == stack.clock.now() + timedelta(seconds=1.5)
    assert again.total == 0
    assert stack.emulator.calls["role_connection"] == calls + 1
    await untouched_and_due(stack)
    stack.clock.advance(timedelta(seconds=1.5))
    assert (await refresh().execute()).pushed == 3
    assert all(shown(stack, user) == {"linked": "1", "linked_days": "0"} for user in users)


@with_linked_roles
async def test_discord_down_stops_the_pass_after_a_few_failures_then_it_drains(
    stack: Stack, browser: Browser
) -> None:
    """Discord answers 500: a pass stops calling after OUTAGE_THRESHOLD failures in a row,
    leaving the rest due and untried; the passes during the pause call nothing, and once
    Discord is back and the pause over, the rest is pushed, each member once more."""
    await register_metadata(stack)
    users = [await connect(stack, browser, f"down{n}") for n in range(OUTAGE_THRESHOLD + 2)]
    stack.emulator.role_connections.clear()
    refresh = stack.container.refresh_role_connections
    await all_due(stack)
    calls = stack.emulator.calls["role_connection"]
    stack.emulator.faults["role_connection"] = "500"

    first = await refresh().execute()
    during = await refresh().execute()

    assert (first.failed, first.paused) == (OUTAGE_THRESHOLD, len(users) - OUTAGE_THRESHOLD)
    assert first.down
    assert first.paused_until == stack.clock.now() + OUTAGE_PAUSES[0]
    assert during.total == 0
    assert stack.emulator.calls["role_connection"] == calls + OUTAGE_THRESHOLD
    del stack.emulator.faults["role_connection"]  # Discord is back
    stack.clock.advance(OUTAGE_PAUSES[0])
    assert (await refresh().execute()).pushed == len(users) - OUTAGE_THRESHOLD
    await all_due(stack)  # the failed ones' back-off (1 min) over too
    assert (await refresh().execute()).pushed == len(users)
    assert all(shown(stack, user) == {"linked": "1", "linked_days": "0"} for user in users)
    # The failed ones, the rest once Discord is back, then every member again: no more.
    assert stack.emulator.calls["role_connection"] == calls + 2 * len(users)


@with_linked_roles
async def test_a_429_to_one_members_push_holds_that_members_pushes_only(
    stack: Stack, browser: Browser
) -> None:
    """Discord limits the push per token: a member whose limit was used up elsewhere is
    answered 429 (X-RateLimit-Scope: user), and only that member's row waits for its
    retry_after, no failure counted; the others are pushed in the same pass."""
    users = await connect_three(stack, browser)
    refresh = stack.container.refresh_role_connections
    await all_due(stack)
    # A window far longer than any pass, however busy the machine: it cannot turn meanwhile.
    window = 600.0
    stack.emulator.role_connection_limit = 1  # a push per window, per user
    stack.emulator.role_connection_limit_window = window
    stack.emulator.role_connection_windows.clear()
    window_ends = time.monotonic() + window
    stack.emulator.role_connection_windows[users[0]] = (window_ends, 1)
    calls = stack.emulator.calls["role_connection"]

    report = await refresh().execute()
    # At most what was left of the window when the pass was over: the 429 came before.
    left_after = window_ends - time.monotonic()

    assert (report.pushed, report.waiting, report.paused, report.failed) == (2, 1, 0, 0)
    assert report.paused_until is None
    assert stack.emulator.calls["role_connection"] == calls + 3
    assert users[0] not in stack.emulator.role_connections
    assert [shown(stack, user) for user in users[1:]] == [{"linked": "1", "linked_days": "0"}] * 2
    async with stack.db.engine.connect() as conn:
        failures, claimed, due_at = (
            await conn.execute(
                select(
                    role_connection_tokens.c.failures,
                    role_connection_tokens.c.claimed_until,
                    role_connection_tokens.c.next_push_at,
                ).where(role_connection_tokens.c.discord_id == int(users[0]))
            )
        ).one()
    assert (failures, claimed) == (0, None)
    # The emulator's retry_after: what was left of the window when the 429 was answered
    # (its milliseconds as the header writes them), whatever the pass took.
    assert stack.clock.now() + timedelta(seconds=left_after - 0.001) <= due_at
    assert due_at <= stack.clock.now() + timedelta(seconds=window)


@with_linked_roles
async def test_a_global_429_to_one_members_push_holds_that_members_pushes_only(
    stack: Stack, browser: Browser
) -> None:
    """Discord's global limit is a user's for a call with their bearer token: the member
    whose token met it is answered a global 429 ("global": true, X-RateLimit-Scope: global),
    and only that member's row waits for its retry_after, no failure counted; the others are
    pushed in the same pass, which does not stop."""
    users = await connect_three(stack, browser)
    refresh = stack.container.refresh_role_connections
    await all_due(stack)
    window = 600.0  # far longer than any pass, however busy the machine
    stack.emulator.globally_limited[users[0]] = time.monotonic() + window
    calls = stack.emulator.calls["role_connection"]

    report = await refresh().execute()

    assert (report.pushed, report.waiting, report.paused, report.failed) == (2, 1, 0, 0)
    assert report.paused_until is None
    assert stack.emulator.calls["role_connection"] == calls + 3
    assert users[0] not in stack.emulator.role_connections
    assert [shown(stack, user) for user in users[1:]] == [{"linked": "1", "linked_days": "0"}] * 2
    async with stack.db.engine.connect() as conn:
        failures, claimed, due_at = (
            await conn.execute(
                select(
                    role_connection_tokens.c.failures,
                    role_connection_tokens.c.claimed_until,
                    role_connection_tokens.c.next_push_at,
                ).where(role_connection_tokens.c.discord_id == int(users[0]))
            )
        ).one()
    assert (failures, claimed) == (0, None)
    assert stack.clock.now() < due_at <= stack.clock.now() + timedelta(seconds=window)


@with_linked_roles
async def test_a_routes_429_to_a_refresh_holds_the_refreshes_only_not_the_pushes(
    stack: Stack, browser: Browser
) -> None:
    """The token endpoint's own limit (a 429 with X-RateLimit-Scope: user, not the global
    one) holds the refreshes, not the pushes, which carry each member's own token: the row
    whose access token Discord ended waits for retry_after (its refresh token unspent, no
    failure counted), the others are pushed in the same pass."""
    users = await connect_three(stack, browser)
    stack.emulator.expire_tokens(users[0])  # its push refreshes first
    refresh_tokens = {t for t, g in stack.emulator.refresh_tokens.items() if g.user_id in users}
    refresh = stack.container.refresh_role_connections
    await all_due(stack)
    calls = stack.emulator.calls.copy()
    stack.emulator.faults["token"] = "429"

    report = await refresh().execute()

    assert (report.pushed, report.waiting, report.paused, report.failed) == (2, 1, 0, 0)
    assert report.paused_until is None
    assert stack.emulator.calls["token"] == calls["token"] + 1
    assert refresh_tokens <= set(stack.emulator.refresh_tokens)  # none spent
    assert [shown(stack, user) for user in users[1:]] == [{"linked": "1", "linked_days": "0"}] * 2
    assert users[0] not in stack.emulator.role_connections
    del stack.emulator.faults["token"]
    assert (await refresh().execute()).total == 0  # due when retry_after (1.5 s) is over
    stack.clock.advance(timedelta(seconds=1.5))
    assert (await refresh().execute()).pushed == 1
    assert shown(stack, users[0]) == {"linked": "1", "linked_days": "0"}


async def all_due(stack: Stack) -> None:
    async with stack.db.engine.begin() as conn:
        await conn.execute(role_connection_tokens.update().values(next_push_at=stack.clock.now()))


# -- without the setting ---------------------------------------------------------------------


async def test_without_the_setting_no_token_row_is_ever_written(
    stack: Stack, browser: Browser
) -> None:
    alice = stack.emulator.add_user("alice_d", email="alice@example.com", verified=True)
    bob = stack.emulator.add_user("bob_d")
    await browser.sign_in_with_discord(alice.id)  # creates an account, links, signs in
    await browser.go("POST", "/signout", data={})
    fresh = Browser(stack)
    try:
        await sign_up(fresh, "bobby", "bobby@example.com", verify=False)
        page = await fresh.go("GET", "/account")
        token = page.text.split('name="_csrf_token" value="')[1].split('"')[0]
        start = await fresh.go(
            "POST",
            "/account/discord/link",
            data={"_csrf_token": token, "current_password": PASSWORD},
        )
        linked = await fresh.through_discord(start, bob.id)
        assert "Discord is linked" in linked.text
        assert (await fresh.go("GET", "/discord/linked-role")).status_code == 404
    finally:
        await fresh.close()

    assert await count(stack.db, role_connection_tokens) == 0
    assert stack.emulator.role_connections == {}


# -- key rotation ---------------------------------------------------------------------------------


@with_linked_roles
async def test_key_rotation_with_the_cli(stack: Stack, browser: Browser) -> None:
    await register_metadata(stack)
    user_id = await connect(stack, browser, "ivan")
    rotated_keys = f"{KEY_B},{KEY_A}"

    rotated = await run_cli(stack, "tokens", "rotate", token_encryption_key=rotated_keys)

    assert rotated.exit_code == 0, rotated.output
    assert "Re-encrypted 1 token set(s) with the newest key; 0 already were" in rotated.output
    assert (await sealed_of(stack, user_id)).startswith(f"v1.{key_id(parse_keys(KEY_B)[0])}.")
    # The old key can go: everything opens with the new one alone...
    pushed = await run_cli(
        stack, "role-connections", "refresh", "--all", token_encryption_key=KEY_B
    )
    assert "Pushed 1" in pushed.output, pushed.output
    # ...and nothing opens with the old one alone any more.
    stale = await run_cli(stack, "role-connections", "refresh", "--all", token_encryption_key=KEY_A)
    assert stale.exit_code == 1
    assert "unreadable 0" in stale.output
    assert "1 sealed with a key not configured here" in stale.output
    assert await count(stack.db, role_connection_tokens) == 1  # kept: the key may come back
