"""Webhooks over real HTTP, on Postgres: the web app (and its webhook worker) and the Discord
emulator under uvicorn, and two receivers written here (``webhook_receiver.Receiver``) that
verify every signature with the official library. The operations commands run as the
operator runs them: ``taskflow-link`` in a process of its own."""

from __future__ import annotations

import asyncio
import base64
import math
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from adapters.sql import SqlDatabase
from adapters.sql.tables import accounts, gone_webhook_endpoints, webhook_deliveries
from adapters.webhooks import endpoint_for
from domain import errors
from domain.model import AccountId, AuditEvent, AuditKind, DiscordId
from domain.use_cases import WebhookOutbox
from domain.webhooks import (
    WebhookDelivery,
    WebhookEvent,
    WebhookEventType,
    WebhookState,
    account_created,
)
from entrypoints.container import build_container
from tests.bot_support import run_command, wait_until
from tests.harness import TEST_SECRET_KEY, Harness, make_settings, sql_harness, webhook_secret
from tests.integration.postgres import PostgresServer
from tests.integration.stack import Browser, Stack, sign_up
from tests.integration.webhook_receiver import Hook, Receiver
from tests.servers import serve

SECRET = "whsec_" + base64.b64encode(b"e2e-webhook-secret-32-bytes-long").decode()
DEADLINE = 60.0  # seconds: generous, for a busy machine; never a measurement
TOKEN = "t0ps3cret"  # in the first URL's query: it must never be shown


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver, str, str]]:
    first, second = Receiver((SECRET,)), Receiver((SECRET,))
    with serve(first) as first_url, serve(second) as second_url:
        yield first, second, f"{first_url}/hooks?token={TOKEN}", f"{second_url}/in"


@pytest.fixture
def stack_settings(receivers: tuple[Receiver, Receiver, str, str]) -> dict[str, Any]:
    _, _, first_url, second_url = receivers
    return {
        "webhook_urls": f"{first_url},{second_url}",
        "webhook_secret": SECRET,
        "webhook_poll_seconds": 0.2,
    }


async def received(receiver: Receiver, count: int, kind: str | None = None) -> list[Hook]:
    await wait_until(lambda: len(receiver.hooks(kind)) >= count, DEADLINE)
    return receiver.hooks(kind)


def attempt_time(stack: Stack) -> int:
    return math.floor(stack.clock.now().timestamp())


async def account_id(db: SqlDatabase, username: str) -> str:
    async with db.engine.connect() as conn:
        query = select(accounts.c.id).where(accounts.c.username == username)
        return str((await conn.execute(query)).scalar_one())


async def delivery_rows(db: SqlDatabase) -> list[Any]:
    async with db.engine.connect() as conn:
        query = select(webhook_deliveries).order_by(webhook_deliveries.c.seq)
        return list(await conn.execute(query))


async def eventually_rows(db: SqlDatabase, wanted: Callable[[list[Any]], bool]) -> list[Any]:
    """The delivery rows once they are ``wanted`` (a worker saves an attempt's outcome just
    after the receiver answered)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not wanted(rows := await delivery_rows(db)):
        assert loop.time() < deadline, rows
        await asyncio.sleep(0.05)
    return rows


async def taskflow_link(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """The installed command, in a process of its own (as an operator runs it), on the code
    under test (``PYTHONPATH``, where it is set, as the other tests' commands)."""
    where = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from entrypoints.cli import main; main()",
        *args,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **where, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def command_env(postgres: PostgresServer, settings: dict[str, Any]) -> dict[str, str]:
    return {
        "TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY,
        "TASKFLOW_LINK_DATABASE_URL": postgres.url,
        "TASKFLOW_LINK_WEBHOOK_URLS": settings["webhook_urls"],
        "TASKFLOW_LINK_WEBHOOK_SECRET": settings["webhook_secret"],
    }


# -- the journey ----------------------------------------------------------------------------------


async def test_sign_up_link_and_unlink_reach_every_receiver_signed(
    stack: Stack, browser: Browser, receivers: tuple[Receiver, Receiver, str, str]
) -> None:
    first, second, _, _ = receivers
    await sign_up(browser, "dora_tf", "dora@example.com", verify=False)
    dora_tf = await account_id(stack.db, "dora_tf")
    [created] = await received(first, 1, "account.created")
    assert created.payload["data"] == {
        "taskflow_user_id": dora_tf,
        "created_at": stack.clock.now().isoformat().replace("+00:00", "Z"),
        "via": "password",
    }

    # /link in Discord, the button, the confirm page, Discord: linked.
    user = stack.emulator.add_user("dora", global_name="Dora")
    reply = await run_command(stack.emulator_url, user.id, "link")
    done = await browser.confirm_link(reply.button["url"], user.id)
    assert done.status_code == 200, done.text
    [linked] = await received(first, 1, "link.created")
    assert linked.payload["data"] == {
        "discord_id": user.id,  # a string
        "taskflow_user_id": dora_tf,
        "linked_at": linked.payload["timestamp"],
        "via": "ticket",
    }

    # /unlink in Discord.
    await run_command(stack.emulator_url, user.id, "unlink")
    [unlinked] = await received(first, 1, "link.deleted")
    assert unlinked.payload["data"]["discord_id"] == user.id
    assert unlinked.payload["data"]["via"] == "discord"

    both = (first.hooks(), await received(second, 3))
    for hooks in both:
        assert [h.type for h in hooks] == ["account.created", "link.created", "link.deleted"]
        assert all(h.verified and h.answered == 204 for h in hooks)
        assert {h.timestamp for h in hooks} == {attempt_time(stack)}  # the service's clock
        assert len({h.message_id for h in hooks}) == 3
        assert all(h.message_id.startswith("msg_") for h in hooks)
    assert [h.message_id for h in first.hooks()] == [h.message_id for h in second.hooks()]
    assert [h.path for h in first.hooks()] == ["/hooks"] * 3
    delivered = WebhookState.DELIVERED.value
    rows = await eventually_rows(stack.db, lambda rows: all(r.state == delivered for r in rows))
    assert len(rows) == 6


async def test_a_failed_attempt_is_retried_with_the_same_id_and_redirects_are_not_followed(
    stack: Stack, browser: Browser, receivers: tuple[Receiver, Receiver, str, str]
) -> None:
    first, second, _, _ = receivers
    first.answers.append(500)
    second.answers.append(302)  # to /followed: never requested
    await sign_up(browser, "erin", "erin@example.com", verify=False)
    [failed] = await received(first, 1)
    await received(second, 1)
    started = attempt_time(stack)

    stack.clock.advance(timedelta(seconds=6))  # past the first backoff
    failed_then_accepted = await received(first, 2)
    redirected_then_accepted = await received(second, 2)
    for hooks in (failed_then_accepted, redirected_then_accepted):
        assert [h.answered for h in hooks] in ([500, 204], [302, 204])
        assert all(h.verified for h in hooks)
        assert hooks[0].message_id == hooks[1].message_id == failed.message_id
        assert hooks[0].body == hooks[1].body
        assert (hooks[0].timestamp, hooks[1].timestamp) == (started, started + 6)
    assert second.other_paths == []
    assert all(h.path == "/in" for h in second.hooks())

    rows = await eventually_rows(stack.db, lambda rows: all(r.state == "delivered" for r in rows))
    assert sorted((r.attempts, r.last_error) for r in rows) == [(2, "http_302"), (2, "http_500")]


async def test_nothing_is_sent_for_changes_that_rolled_back(
    stack: Stack, postgres: PostgresServer, receivers: tuple[Receiver, Receiver, str, str]
) -> None:
    """An event exists only with its change: a transaction that rolled back (by hand, and the
    losers of a real race for one Discord account) leaves nothing to send."""
    first, _, _, _ = receivers
    urls = stack.container.settings().webhook_urls
    async with sql_harness(postgres.url, webhook_urls=urls, webhook_secret=SECRET) as h:
        outbox: WebhookOutbox = h.container.webhook_outbox()
        ghost = (await h.sign_up("ghost", "ghost@example.com")).account
        async with h.uow() as uow:  # queued, then rolled back
            event = account_created(ghost, via="password")
            await outbox.publish(uow, event)

        people = [(await h.sign_up(f"racer{n}", f"racer{n}@example.com")).account for n in range(8)]
        profile = h.discord_user(777_000_1)
        results = await asyncio.gather(
            *(h.discord_link(p.id, profile) for p in people), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(refused) == 7
        assert all(isinstance(r, errors.DiscordLinkedElsewhere) for r in refused), refused
        sentinel = (await h.sign_up("sentinel", "sentinel@example.com")).account

    # Everything before the sentinel went out before it (one endpoint, in queue order).
    await wait_until(
        lambda: any(
            h.payload["data"]["taskflow_user_id"] == str(sentinel.id) for h in first.hooks()
        ),
        DEADLINE,
    )
    assert len(first.hooks("link.created")) == 1
    assert event.message_id not in {h.message_id for h in first.hooks()}
    assert len(first.hooks("account.created")) == 1 + 8 + 1  # ghost, racers, sentinel
    assert len(await delivery_rows(stack.db)) == 2 * len(first.hooks())


async def test_410_gone_stops_an_endpoint_until_webhooks_retry(
    stack: Stack,
    browser: Browser,
    postgres: PostgresServer,
    receivers: tuple[Receiver, Receiver, str, str],
    *,
    stack_settings: dict[str, Any],
    tmp_path: Path,
) -> None:
    first, second, first_url, second_url = receivers
    first.answers.append(410)
    await sign_up(browser, "fay", "fay@example.com", verify=False)
    [refused] = await received(first, 1)
    await received(second, 1)

    await eventually_rows(stack.db, lambda rows: any(r.state == "gone" for r in rows))
    async with stack.db.engine.connect() as conn:
        assert (await conn.execute(select(gone_webhook_endpoints))).first() is not None
    other = Browser(stack)
    await sign_up(other, "gus", "gus@example.com", verify=False)
    await other.close()
    await received(second, 2)
    second_host = urlsplit(second_url).netloc
    # The worker saves a delivery just after its receiver answered.
    rows = await eventually_rows(
        stack.db,
        lambda rows: sum(r.host == second_host and r.state == "delivered" for r in rows) == 2,
    )
    # The gone endpoint's delivery of the second event was never even claimed.
    first_host = urlsplit(first_url).netloc
    to_first = [r for r in rows if r.host == first_host]
    assert [(r.state, r.attempts) for r in to_first] == [("gone", 1), ("pending", 0)]
    assert to_first[1].next_attempt_at == to_first[1].created_at
    assert len(first.hooks()) == 1

    env = command_env(postgres, stack_settings)
    code, out, err = await taskflow_link("webhooks", "status", env=env, cwd=tmp_path)
    assert code == 0, err
    assert f"1. {first_host}: 1 pending, 0 delivered, 0 failed, 1 gone" in out
    assert "answered 410 Gone at" in out
    assert "last error: http_410" in out
    assert f"2. {second_host}: 0 pending, 2 delivered" in out
    for hidden in (TOKEN, SECRET.removeprefix("whsec_")):
        assert hidden not in out + err

    code, out, err = await taskflow_link(
        "webhooks", "retry", "--id", str(uuid.uuid4()), env=env, cwd=tmp_path
    )
    assert (code, out) == (1, "")
    assert "Error: No webhook delivery with this id failed or was refused." in err
    assert "Traceback" not in err

    code, out, err = await taskflow_link("webhooks", "retry", env=env, cwd=tmp_path)
    assert (code, out) == (0, "Requeued 1 webhook delivery(ies).\n"), err
    resent = await received(first, 3)
    assert resent[0].message_id == refused.message_id
    assert sorted(h.message_id for h in resent[1:]) == sorted(h.message_id for h in second.hooks())
    assert all(h.verified and h.answered == 204 for h in resent[1:])


async def test_the_audit_trail_through_the_command_and_its_retention(
    pg_db: SqlDatabase, postgres: PostgresServer, tmp_path: Path
) -> None:
    now = datetime.now(UTC)  # the command runs on the system's clock
    one, two = AccountId.new(), AccountId.new()
    events = [
        AuditEvent(AuditKind.SIGNED_IN, now - timedelta(days=400), one),
        AuditEvent(
            AuditKind.LINKED, now - timedelta(days=10), one, DiscordId(42), {"via": "ticket"}
        ),
        AuditEvent(
            AuditKind.SIGN_IN_FAILED, now - timedelta(days=2), two, None, {"client": "10.1.2.3"}
        ),
        AuditEvent(
            AuditKind.UNLINKED, now - timedelta(hours=1), one, DiscordId(42), {"via": "api"}
        ),
    ]
    async with pg_db.unit_of_work() as uow:
        for event in events:
            await uow.audit.record(event)
        await uow.commit()
    env = {"TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY, "TASKFLOW_LINK_DATABASE_URL": postgres.url}

    code, out, err = await taskflow_link("audit", "--discord-id", "42", env=env, cwd=tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split("  ")[1:] for line in lines] == [
        ["linked", f"account={one}", "discord=42", "via=ticket"],
        ["unlinked", f"account={one}", "discord=42", "via=api"],
    ]
    code, out, _ = await taskflow_link(
        "audit", "--account", str(one), "--since", "30d", "--limit", "1", env=env, cwd=tmp_path
    )
    assert [line.split("  ")[1] for line in out.splitlines()] == ["unlinked"]
    code, out, _ = await taskflow_link("audit", "--since", "3d", env=env, cwd=tmp_path)
    assert [line.split("  ")[1] for line in out.splitlines()] == ["sign_in_failed", "unlinked"]
    code, out, err = await taskflow_link("audit", "--discord-id", "43", env=env, cwd=tmp_path)
    assert (code, out, err) == (0, "", "No audit events match.\n")

    # A live endpoint's pending delivery, 40 days old: this command's settings name no
    # webhook URL, so it cannot tell that endpoint from a removed one, keeps it, and says so.
    hook = endpoint_for("https://hooks.example.com/in")
    old = now - timedelta(days=40)
    queued = WebhookEvent(uuid.uuid4(), WebhookEventType.LINK_CREATED, old, '{"type":"x"}')
    async with pg_db.unit_of_work() as uow:
        await uow.webhooks.add(
            queued, [WebhookDelivery(uuid.uuid4(), queued, hook.key, hook.host, old, old)]
        )
        await uow.commit()
    kept_forever = {**env, "TASKFLOW_LINK_AUDIT_RETENTION_DAYS": "0"}
    code, out, err = await taskflow_link("purge-expired", env=kept_forever, cwd=tmp_path)
    assert code == 0, err
    assert "0 audit event(s)" in out
    assert "0 old webhook delivery(ies)" in out
    assert "Kept 1 pending webhook delivery(ies): this process has no" in out
    code, out, err = await taskflow_link("purge-expired", env=env, cwd=tmp_path)  # 365 days
    assert "1 audit event(s)" in out, out + err
    code, out, _ = await taskflow_link("audit", env=env, cwd=tmp_path)
    assert [line.split("  ")[1] for line in out.splitlines()] == [
        "linked",
        "sign_in_failed",
        "unlinked",
    ]


async def test_each_receiver_gets_signatures_only_its_own_secret_verifies() -> None:
    """One secret per URL: what one receiver holds signs nothing another accepts. The third
    URL has none of its own and is signed with TASKFLOW_LINK_WEBHOOK_SECRET."""
    own_a = webhook_secret("own-a")
    own_b, replaced_b = webhook_secret("own-b"), webhook_secret("replaced-b")
    a, b, c = Receiver((own_a,)), Receiver((own_b,)), Receiver((SECRET,))
    with serve(a) as a_url, serve(b) as b_url, serve(c) as c_url:
        h = Harness.build(
            build_container(
                make_settings(
                    webhook_urls=f"{a_url}/in {own_a}, {b_url}/in {own_b} {replaced_b}, {c_url}/in",
                    webhook_secret=SECRET,
                )
            )
        )
        try:
            await h.sign_up("alice", "alice@example.com")
            report = await h.container.deliver_webhooks().execute()
        finally:
            await h.container.webhook_sender().aclose()
            h.container.unwire()
    assert len(report.delivered) == 3
    [to_a], [to_b], [to_c] = a.hooks(), b.hooks(), c.hooks()
    assert [hook.verified for hook in (to_a, to_b, to_c)] == [True] * 3
    assert len(to_b.signatures.split(" ")) == 2  # its rotation: the new secret and the old
    assert Receiver((replaced_b,)).verified(
        to_b.message_id, str(to_b.timestamp), to_b.signatures, to_b.body
    )
    for hook, others in ((to_a, (own_b, SECRET)), (to_b, (own_a, SECRET)), (to_c, (own_a, own_b))):
        assert not Receiver(others).verified(
            hook.message_id, str(hook.timestamp), hook.signatures, hook.body
        )
