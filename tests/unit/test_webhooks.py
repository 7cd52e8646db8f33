"""Webhooks through the use cases, on the in-memory store: every change that links, unlinks or
creates an account queues its event in its own transaction (checked at every commit), and the
delivery rules (2xx, retries with backoff under one webhook-id, giving up, 410 Gone)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.memory import MemoryDatabase
from adapters.memory.store import MemoryUnitOfWork, MemoryWebhooks, Tables
from adapters.webhooks import HttpWebhookSender, WebhookTarget, endpoint_for
from domain import errors
from domain.model import AccountId, DiscordId, Link
from domain.ports import WebhookMessage
from domain.use_cases import AuthOutcome, BrowserCookies, TicketIssued, WebhookReport
from domain.use_cases.webhooks import CLAIM_LEASE
from domain.webhooks import (
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookState,
    link_created,
)
from entrypoints.container import build_container
from entrypoints.webhook_worker import WebhookWorker
from tests.fakes.webhooks import InterleavingSender
from tests.harness import PASSWORD, Browser, Harness, make_settings, webhook_secret

SECRET = webhook_secret("webhooks")
HOOKS = "https://hooks.example.com/in?token=t0ps3cret"
OTHER = "https://other.example.org/hook"
OTHER_HOST = "other.example.org"


@dataclass
class ScriptedSender:
    """A webhook endpoint per host: answers from its script (204 once it is empty), and
    records every attempt."""

    answers: dict[str, list[int | Exception]] = field(default_factory=dict)
    sent: list[tuple[str, WebhookMessage]] = field(default_factory=list)

    async def send(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> int:
        self.sent.append((endpoint.host, message))
        script = self.answers.get(endpoint.host)
        answer = script.pop(0) if script else 204
        if isinstance(answer, Exception):
            raise answer
        return answer

    def to(self, host: str) -> list[WebhookMessage]:
        return [message for who, message in self.sent if who == host]


def webhook_harness(urls: str = f"{HOOKS},{OTHER}", **settings: Any) -> Harness:
    container = build_container(make_settings(webhook_urls=urls, webhook_secret=SECRET, **settings))
    return Harness.build(container)


@pytest.fixture
def hooks() -> Iterator[tuple[Harness, ScriptedSender]]:
    h = webhook_harness()
    sender = ScriptedSender()
    h.container.webhook_sender.override(sender)
    yield h, sender
    h.container.unwire()


def events(h: Harness) -> list[dict[str, Any]]:
    """The committed events' bodies, in the order they were queued."""
    db: MemoryDatabase = h.container.memory_db()
    return [json.loads(e.payload) for e in db.tables.webhook_events.values()]


def deliveries(h: Harness) -> list[WebhookDelivery]:
    db: MemoryDatabase = h.container.memory_db()
    return list(db.tables.webhook_deliveries.values())


def _link_events_agree_with_the_tables(tables: Tables, endpoints: set[str]) -> None:
    """Replaying the queued events gives exactly the links and accounts the transaction is
    about to commit, and every event has one delivery per endpoint."""
    links: dict[str, str] = {}
    created: set[str] = set()
    per_event: dict[Any, set[str]] = {e: set() for e in tables.webhook_events}
    for delivery in tables.webhook_deliveries.values():
        per_event[delivery.event.id].add(delivery.endpoint)
    assert all(named == endpoints for named in per_event.values()), per_event
    for event in tables.webhook_events.values():
        body = json.loads(event.payload)
        data = body["data"]
        if body["type"] == "link.created":
            assert data["discord_id"] not in links
            links[data["discord_id"]] = data["taskflow_user_id"]
        elif body["type"] == "link.deleted":
            assert links.pop(data["discord_id"]) == data["taskflow_user_id"]
        else:
            assert body["type"] == "account.created"
            created.add(data["taskflow_user_id"])
    assert links == {str(d): str(link.account_id) for d, link in tables.links.items()}
    assert created == {str(a) for a in tables.accounts}


@pytest.fixture
def every_commit_checked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Check the agreement at every commit of the memory store (so a use case that wrote
    its event in another transaction than its change fails at the commit in between)."""
    endpoints = {endpoint_for(HOOKS).key, endpoint_for(OTHER).key}
    checked: list[int] = []
    commit = MemoryUnitOfWork.commit

    async def checked_commit(self: MemoryUnitOfWork) -> None:
        _link_events_agree_with_the_tables(self.work, endpoints)
        checked.append(1)
        await commit(self)

    monkeypatch.setattr(MemoryUnitOfWork, "commit", checked_commit)
    return checked


def _new(h: Harness, seen: int) -> list[tuple[str, dict[str, str]]]:
    return [(e["type"], e["data"]) for e in events(h)[seen:]]


# -- queued with the change ---------------------------------------------------------------------


async def test_every_link_unlink_and_account_creation_queues_its_event_with_the_change(
    hooks: tuple[Harness, ScriptedSender], every_commit_checked: list[int]
) -> None:
    h, _ = hooks
    # Sign-up: account.created.
    alice = (await h.sign_up("alice", "alice@example.com", verified=True)).account
    [(kind, data)] = _new(h, 0)
    assert (kind, data["taskflow_user_id"], data["via"]) == (
        "account.created",
        str(alice.id),
        "password",
    )

    # A /link ticket confirmed with Discord: link.created via ticket.
    dee = h.discord_user(5001, username="dee")
    issued = await h.container.issue_link_ticket().execute(dee.user)
    assert isinstance(issued, TicketIssued)
    await h.confirm_ticket(issued.token, alice.id)
    [(kind, data)] = _new(h, 1)
    assert (kind, data["discord_id"], data["taskflow_user_id"], data["via"]) == (
        "link.created",
        "5001",
        str(alice.id),
        "ticket",
    )

    # /unlink in Discord: link.deleted via discord.
    await h.container.unlink_discord().execute(DiscordId(5001))
    assert _new(h, 2) == [
        (
            "link.deleted",
            {
                "discord_id": "5001",
                "taskflow_user_id": str(alice.id),
                "unlinked_at": h.clock.now().isoformat().replace("+00:00", "Z"),
                "via": "discord",
            },
        )
    ]

    # The account page: link.created via oauth, then unlinked there (via web).
    await h.discord_link(alice.id, dee)
    assert _new(h, 3)[0][1]["via"] == "oauth"
    await h.container.unlink_account().execute(
        session_token=await h.session_for(alice.id), current_password=PASSWORD
    )
    assert [(k, d["via"]) for k, d in _new(h, 4)] == [("link.deleted", "web")]

    # Sign in with Discord, verified email of a verified account (one that never unlinked
    # Discord: alice's would need a proof now): link.created via email.
    await h.sign_up("bob", "bob@example.com", verified=True)
    await h.discord_login(h.discord_user(5002, email="bob@example.com"))
    assert [(k, d["via"]) for k, d in _new(h, 6)] == [("link.created", "email")]

    # The API's admin unlink: link.deleted via api.
    admin = await h.container.create_api_key().execute("admin", ["links:write"])
    key = await h.container.authenticate_api_key().execute(admin.token)
    assert key is not None
    await h.container.unlink_with_api_key().execute(DiscordId(5002), key)
    assert [(k, d["via"]) for k, d in _new(h, 7)] == [("link.deleted", "api")]

    # Sign in with Discord, nobody known: account.created and link.created, one transaction.
    created = await h.discord_login(h.discord_user(5003, email="new@example.com"))
    assert created.outcome is AuthOutcome.CREATED
    assert [(k, d["via"]) for k, d in _new(h, 8)] == [
        ("account.created", "discord"),
        ("link.created", "signup"),
    ]
    assert every_commit_checked  # the agreement was checked at each commit
    assert len(deliveries(h)) == 2 * len(events(h))  # one per endpoint


async def test_a_password_reset_that_unlinks_queues_link_deleted(
    hooks: tuple[Harness, ScriptedSender], every_commit_checked: list[int]
) -> None:
    h, _ = hooks
    carol = (await h.sign_up("carol", "carol@example.com")).account  # never confirmed
    await h.discord_link(carol.id, h.discord_user(5101))
    seen = len(events(h))
    await h.container.request_password_reset().execute("carol@example.com")
    await h.deliver()
    token = h.link_token(h.last_email("carol@example.com"), "/password/reset/")
    done = await h.container.reset_password().execute(
        token=token, new_password="a new passphrase 9"
    )
    assert done.unlinked is not None
    assert [(k, d["via"]) for k, d in _new(h, seen)] == [("link.deleted", "password_reset")]


@pytest.mark.parametrize("proof", ["password", "email"])
async def test_email_linking_confirm_queues_link_created(
    proof: str, every_commit_checked: list[int]
) -> None:
    h = webhook_harness(email_linking="confirm")
    bob = (await h.sign_up("bob", "bob@example.com", verified=True)).account
    seen = len(events(h))
    browser = Browser()
    pending = await h.discord_login(h.discord_user(5201, email="bob@example.com"), browser)
    assert pending.proposal_token is not None
    assert _new(h, seen) == []  # nothing is linked yet
    if proof == "password":
        await h.container.confirm_link_with_password().execute(
            browser=BrowserCookies(proposal_token=pending.proposal_token), password=PASSWORD
        )
    else:
        await h.container.email_link_confirmation().execute(pending.proposal_token)
        await h.deliver()
        token = h.link_token(h.last_email("bob@example.com"), "/auth/discord/confirm-link/")
        await h.container.confirm_link_with_email().execute(
            browser=BrowserCookies(proposal_token=pending.proposal_token), email_token=token
        )
    [(kind, data)] = _new(h, seen)
    assert (kind, data["taskflow_user_id"], data["via"]) == ("link.created", str(bob.id), "email")


async def test_a_refused_link_queues_nothing(hooks: tuple[Harness, ScriptedSender]) -> None:
    h, _ = hooks
    alice = (await h.sign_up("alice", "alice@example.com")).account
    bob = (await h.sign_up("bob", "bob@example.com")).account
    dee = h.discord_user(5301)
    await h.discord_link(alice.id, dee)
    seen = len(events(h))
    with pytest.raises(errors.DiscordLinkedElsewhere):
        await h.discord_link(bob.id, dee)
    with pytest.raises(errors.NotLinked):
        await h.container.unlink_discord().execute(DiscordId(5399))
    assert _new(h, seen) == []


async def test_a_change_that_does_not_commit_takes_its_event_with_it(
    hooks: tuple[Harness, ScriptedSender], monkeypatch: pytest.MonkeyPatch
) -> None:
    h, _ = hooks
    alice = (await h.sign_up("alice", "alice@example.com")).account
    seen, deliveries_before = len(events(h)), len(deliveries(h))
    commit = MemoryUnitOfWork.commit

    async def failing_when_linking(self: MemoryUnitOfWork) -> None:
        if self.work.links != self._db.tables.links:
            raise errors.StorageError()  # the database went away at the commit
        await commit(self)

    monkeypatch.setattr(MemoryUnitOfWork, "commit", failing_when_linking)
    with pytest.raises(errors.StorageError):
        await h.discord_link(alice.id, h.discord_user(5401))
    assert _new(h, seen) == []
    assert len(deliveries(h)) == deliveries_before
    assert await h.container.link_of_account().execute(alice.id) is None


async def test_without_webhook_urls_nothing_is_queued_or_sent() -> None:
    h = Harness.build()  # no TASKFLOW_LINK_WEBHOOK_URLS
    sender = ScriptedSender()
    h.container.webhook_sender.override(sender)
    alice = (await h.sign_up("alice", "alice@example.com")).account
    await h.discord_link(alice.id, h.discord_user(5501))
    assert events(h) == []
    assert (await h.container.deliver_webhooks().execute()) == WebhookReport()
    assert sender.sent == []
    assert not WebhookWorker(h.container)._enabled  # no worker, no listening connection


async def test_payloads_are_thin_minified_json_with_string_ids(
    hooks: tuple[Harness, ScriptedSender],
) -> None:
    h, _ = hooks
    alice = (await h.sign_up("alice", "alice@example.com", verified=True)).account
    await h.discord_link(alice.id, h.discord_user(2**62, email="dee@example.com"))
    db: MemoryDatabase = h.container.memory_db()
    created, linked = list(db.tables.webhook_events.values())
    moment = h.clock.now().isoformat().replace("+00:00", "Z")
    assert linked.payload == json.dumps(
        {
            "type": "link.created",
            "timestamp": moment,
            "data": {
                "discord_id": str(2**62),  # beyond JavaScript's safe integers: a string
                "taskflow_user_id": str(alice.id),
                "linked_at": moment,
                "via": "oauth",
            },
        },
        separators=(",", ":"),
    )
    assert json.loads(created.payload)["data"] == {
        "taskflow_user_id": str(alice.id),
        "created_at": moment,
        "via": "password",
    }
    for event in (created, linked):
        assert "@" not in event.payload  # no email address
        assert event.message_id == f"msg_{event.id.hex}"
        assert "." not in event.message_id  # it is part of the signed content's framing


# -- delivery -----------------------------------------------------------------------------------


async def test_an_accepted_webhook_is_delivered_to_every_endpoint_under_one_id(
    hooks: tuple[Harness, ScriptedSender],
) -> None:
    h, sender = hooks
    await h.sign_up("alice", "alice@example.com")
    report = await h.container.deliver_webhooks().execute()
    assert len(report.delivered) == 2
    [to_hooks] = sender.to("hooks.example.com")
    [to_other] = sender.to("other.example.org")
    assert to_hooks == to_other  # same webhook-id, body and attempt time
    [event] = h.container.memory_db().tables.webhook_events.values()
    assert (to_hooks.message_id, to_hooks.body, to_hooks.timestamp) == (
        event.message_id,
        event.payload,
        h.clock.now(),
    )
    assert {d.state for d in deliveries(h)} == {WebhookState.DELIVERED}
    assert (await h.container.deliver_webhooks().execute()) == WebhookReport()  # once


async def test_a_failure_is_retried_with_backoff_under_the_same_id(
    hooks: tuple[Harness, ScriptedSender],
) -> None:
    h, sender = hooks
    sender.answers["hooks.example.com"] = [500, errors.WebhookNotDelivered("timeout"), 302]
    await h.sign_up("alice", "alice@example.com")
    first = await h.container.deliver_webhooks().execute()
    [retrying] = first.retrying
    assert [d.host for d in first.delivered] == ["other.example.org"]
    assert (retrying.attempts, retrying.last_error) == (1, "http_500")
    wait = retrying.next_attempt_at - h.clock.now()
    assert RETRY_DELAYS[0] <= wait <= RETRY_DELAYS[0] * 1.1
    # Not due yet: nothing is sent.
    h.clock.advance(RETRY_DELAYS[0] - timedelta(milliseconds=1))
    assert (await h.container.deliver_webhooks().execute()) == WebhookReport()
    errors_seen = []
    for delay in RETRY_DELAYS[:3]:
        h.clock.advance(delay * 1.1)
        report = await h.container.deliver_webhooks().execute()
        errors_seen.append(
            [d.last_error for d in report.retrying] or [d.state for d in report.delivered]
        )
    assert errors_seen == [["timeout"], ["http_302"], [WebhookState.DELIVERED]]
    attempts = sender.to("hooks.example.com")
    assert len(attempts) == 4
    assert len({m.message_id for m in attempts}) == 1  # one id for every attempt
    assert len({m.body for m in attempts}) == 1  # the same bytes
    assert len({m.timestamp for m in attempts}) == 4  # each attempt's own time


async def test_after_the_last_attempt_it_is_given_up_until_retried(
    hooks: tuple[Harness, ScriptedSender],
) -> None:
    h, sender = hooks
    sender.answers["hooks.example.com"] = [503] * MAX_ATTEMPTS
    await h.sign_up("alice", "alice@example.com")
    reports = [await h.container.deliver_webhooks().execute()]
    for delay in RETRY_DELAYS:
        h.clock.advance(delay * 1.1)
        reports.append(await h.container.deliver_webhooks().execute())
    [given_up] = reports[-1].failed
    assert (given_up.state, given_up.attempts) == (WebhookState.FAILED, MAX_ATTEMPTS)
    assert sum(len(r.retrying) for r in reports) == MAX_ATTEMPTS - 1
    h.clock.advance(timedelta(days=30))
    assert (await h.container.deliver_webhooks().execute()) == WebhookReport()
    assert len(sender.to("hooks.example.com")) == MAX_ATTEMPTS

    [delivered] = [d for d in deliveries(h) if d.state is WebhookState.DELIVERED]
    with pytest.raises(errors.NotFound):  # delivered, not given up
        await h.container.requeue_webhooks().execute(delivered.id)
    assert await h.container.requeue_webhooks().execute(given_up.id) == 1
    [again] = (await h.container.deliver_webhooks().execute()).delivered
    assert again.id == given_up.id
    assert (
        sender.to("hooks.example.com")[-1].message_id
        == sender.to("hooks.example.com")[0].message_id
    )


async def test_410_gone_stops_sending_to_that_endpoint_until_retried(
    hooks: tuple[Harness, ScriptedSender],
) -> None:
    h, sender = hooks
    sender.answers["hooks.example.com"] = [410]
    await h.sign_up("alice", "alice@example.com")
    first = await h.container.deliver_webhooks().execute()
    [gone] = first.gone
    assert (gone.state, gone.last_error) == (WebhookState.GONE, "http_410")
    # Later events still reach the other endpoint; the gone one is not even claimed.
    await h.sign_up("bob", "bob@example.com")
    h.clock.advance(timedelta(days=4))
    later = await h.container.deliver_webhooks().execute()
    assert [d.host for d in later.delivered] == ["other.example.org"]
    assert len(sender.to("hooks.example.com")) == 1
    waiting = [d for d in deliveries(h) if d.state is WebhookState.PENDING]
    assert [(d.host, d.attempts, d.next_attempt_at) for d in waiting] == [
        ("hooks.example.com", 0, waiting[0].created_at)
    ]
    [status, _] = await h.container.show_webhook_status().execute()
    assert (status.host, status.gone_since, status.last_error) == (
        "hooks.example.com",
        gone.finished_at,
        "http_410",
    )
    assert status.counts[WebhookState.GONE] == status.counts[WebhookState.PENDING] == 1

    assert await h.container.requeue_webhooks().execute() == 1  # the gone one
    resumed = await h.container.deliver_webhooks().execute()
    assert sorted(d.event.id for d in resumed.delivered) == sorted(
        d.event.id for d in deliveries(h) if d.host == "hooks.example.com"
    )
    assert len(sender.to("hooks.example.com")) == 3


async def test_a_410_stops_the_rest_of_the_batch_to_that_endpoint(
    hooks: tuple[Harness, ScriptedSender],
) -> None:
    h, sender = hooks
    sender.answers["hooks.example.com"] = [410]
    for name in ("alice", "bob", "carol"):
        await h.sign_up(name, f"{name}@example.com")
    report = await h.container.deliver_webhooks().execute()
    assert len(report.gone) == 1
    assert len(report.delivered) == 3  # the other endpoint, all of them
    assert len(sender.to("hooks.example.com")) == 1


async def test_a_failing_endpoint_costs_a_pass_one_attempt_and_never_the_others_turn(
    hooks: tuple[Harness, ScriptedSender],
) -> None:
    h, sender = hooks
    timeout = errors.WebhookNotDelivered("timeout")
    sender.answers["hooks.example.com"] = [timeout, timeout]
    for name in ("alice", "bob", "carol"):
        await h.sign_up(name, f"{name}@example.com")
    first = await h.container.deliver_webhooks().execute()
    assert [d.host for d in first.delivered] == ["other.example.org"] * 3
    assert [d.last_error for d in first.retrying] == ["timeout"]  # one attempt, then it stops
    assert len(sender.to("hooks.example.com")) == 1
    # The ones queued after it wait for it: nothing goes before its retry is due.
    assert (await h.container.deliver_webhooks().execute()) == WebhookReport()
    h.clock.advance(RETRY_DELAYS[0] * 1.1)
    second = await h.container.deliver_webhooks().execute()
    assert (second.delivered, [d.attempts for d in second.retrying]) == ([], [2])
    assert len(sender.to("hooks.example.com")) == 2


async def test_a_slow_endpoint_holds_a_pass_about_one_attempt_as_a_failing_one_does() -> None:
    """An endpoint that answers 2xx, but only after a few seconds, ends its share of a pass
    once its attempts took ENDPOINT_TURN: a pass waits for every endpoint, so sending its 20
    claimed deliveries one after another held every other endpoint's next deliveries (events
    queued meanwhile) for 20 of its answers, up to 20 timeouts. Its next ones follow in the
    next pass, at once (the pass was busy), in order."""
    h = webhook_harness()

    class SlowHooks(ScriptedSender):
        async def send(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> int:
            answer = await super().send(endpoint, message)
            if endpoint.host == "hooks.example.com":
                h.clock.advance(timedelta(seconds=3))  # a slow answer, within the timeout
            return answer

    sender = SlowHooks()
    h.container.webhook_sender.override(sender)
    for name in ("alice", "bob", "carol"):
        await h.sign_up(name, f"{name}@example.com")
    first = await h.container.deliver_webhooks().execute()
    assert len(sender.to("other.example.org")) == 3
    assert len(sender.to("hooks.example.com")) == 1  # one slow answer, then its share ends
    assert first.busy
    for _ in range(2):
        await h.container.deliver_webhooks().execute()  # no waiting: the rest were let go
    slow = [json.loads(m.body)["data"]["taskflow_user_id"] for m in sender.to("hooks.example.com")]
    assert slow == [json.loads(m.body)["data"]["taskflow_user_id"] for m in sender.to(OTHER_HOST)]
    assert [d.state for d in deliveries(h)] == [WebhookState.DELIVERED] * 6


async def test_a_failed_delivery_goes_before_the_ones_queued_after_it(
    hooks: tuple[Harness, ScriptedSender],
) -> None:
    """The order holds across retries: a receiver never sees link.deleted and then the
    link.created it undid (it would think the member linked). The rest of a batch cut short
    is let go, so it follows the retry at once rather than after its claim runs out."""
    h, sender = hooks
    account = (await h.sign_up("alice", "alice@example.com")).account
    await h.container.deliver_webhooks().execute()
    sender.answers["hooks.example.com"] = [errors.WebhookNotDelivered("timeout")]
    await h.discord_link(account.id, h.discord_user(7201, username="d_alice"))
    await h.container.unlink_discord().execute(DiscordId(7201))
    first = await h.container.deliver_webhooks().execute()
    assert [d.event.type for d in first.retrying] == ["link.created"]
    assert [d.event.type for d in first.delivered] == ["link.created", "link.deleted"]  # other
    assert RETRY_DELAYS[0] * 1.1 < CLAIM_LEASE
    h.clock.advance(RETRY_DELAYS[0] * 1.1)  # the batch's claim has not run out
    second = await h.container.deliver_webhooks().execute()
    assert [d.event.type for d in second.delivered] == ["link.created", "link.deleted"]
    types = [json.loads(m.body)["type"] for m in sender.to("hooks.example.com")]
    assert types == ["account.created", "link.created", "link.created", "link.deleted"]


async def test_two_workers_never_send_one_endpoints_events_side_by_side_or_out_of_order() -> None:
    """A link commits and worker A starts sending link.created; an unlink commits meanwhile
    and wakes worker B. B must leave the endpoint to A, which is still sending to it: had B
    sent link.deleted first, the receiver would think the member linked."""
    h = webhook_harness(HOOKS)
    sender = InterleavingSender()
    arrived, during = sender.arrived, sender.during

    h.container.webhook_sender.override(sender)
    other_worker: list[WebhookReport] = []
    try:
        account = (await h.sign_up("alice", "alice@example.com")).account
        await h.container.deliver_webhooks().execute()
        arrived.clear()
        await h.discord_link(account.id, h.discord_user(7200, username="d_alice"))

        async def unlink_and_a_second_worker() -> None:
            await h.container.unlink_discord().execute(DiscordId(7200))
            other_worker.append(await h.container.deliver_webhooks().execute())

        during.append(unlink_and_a_second_worker)
        first = await h.container.deliver_webhooks().execute()
        assert first.busy  # so the worker makes its next pass at once
        then = await h.container.deliver_webhooks().execute()
    finally:
        h.container.unwire()
    assert other_worker == [WebhookReport()]
    assert [d.event.type for d in then.delivered] == ["link.deleted"]
    assert arrived == ["link.created", "link.deleted"]


async def test_status_lists_configured_endpoints_then_forgotten_ones() -> None:
    h = webhook_harness()
    sender = ScriptedSender({"other.example.org": [500]})
    h.container.webhook_sender.override(sender)
    await h.sign_up("alice", "alice@example.com")
    await h.container.deliver_webhooks().execute()
    # The operator then drops the second URL and adds a third.
    later = Harness.build(
        build_container(
            make_settings(
                webhook_urls=f"{HOOKS},https://third.example.net/h", webhook_secret=SECRET
            )
        )
    )
    later.container.memory_db.override(h.container.memory_db())
    hooks_status, third, other = await later.container.show_webhook_status().execute()
    assert (hooks_status.host, hooks_status.configured) == ("hooks.example.com", True)
    assert hooks_status.counts[WebhookState.DELIVERED] == 1
    assert (third.host, third.configured, sum(third.counts.values())) == (
        "third.example.net",
        True,
        0,
    )
    assert (other.host, other.configured, other.last_error) == (
        "other.example.org",
        False,
        "http_500",
    )
    assert other.counts[WebhookState.PENDING] == 1
    # Its delivery waits: only configured endpoints are ever sent anything.
    later_sender = ScriptedSender()
    later.container.webhook_sender.override(later_sender)
    later.clock.advance(timedelta(days=1))
    await later.container.deliver_webhooks().execute()
    assert later_sender.sent == []


async def test_purge_keeps_a_configured_endpoints_backlog_through_a_month_long_outage() -> None:
    """Only an endpoint's first delivery is attempted (each gives up after about three days),
    and the ones behind it wait, some let go again at every pass. purge-expired used to
    delete those whose next attempt was a month old: a hole in the queue's middle, nothing
    failed to retry, and a receiver left with link.created as its last word on a member who
    unlinked. Now every delivery is accounted for, and the receiver's last event is right."""
    h = webhook_harness(HOOKS)
    sender = ScriptedSender({"hooks.example.com": [500] * 1000})
    h.container.webhook_sender.override(sender)
    try:
        account = (await h.sign_up("alice", "alice@example.com")).account
        for _ in range(30):
            await h.discord_link(account.id, h.discord_user(7200, username="d_alice"))
            await h.container.unlink_discord().execute(DiscordId(7200))
        for _ in range(31 * 24):  # a pass an hour for 31 days, the endpoint down
            await h.container.deliver_webhooks().execute()
            h.clock.advance(timedelta(hours=1))
        before = {d.id: d.state for d in deliveries(h)}
        assert WebhookState.FAILED in before.values()  # some heads were given up
        assert (await h.container.purge_expired().execute()).webhook_deliveries == 0
        assert {d.id: d.state for d in deliveries(h)} == before
        sender.answers.clear()  # the receiver is back
        h.clock.advance(timedelta(days=1))  # the head's retry is due
        while (await h.container.deliver_webhooks().execute()).busy:
            pass
    finally:
        h.container.unwire()
    states = [d.state for d in deliveries(h)]
    assert len(states) == 61
    failed = states.count(WebhookState.FAILED)
    assert states.count(WebhookState.DELIVERED) == 61 - failed  # nothing left waiting
    # What was given up is there to retry; what came after went in order, to the last.
    assert await h.container.requeue_webhooks().execute() == failed
    assert json.loads(sender.to("hooks.example.com")[-1].body)["type"] == "link.deleted"


async def test_purge_drops_the_oldest_pending_deliveries_of_an_endpoint_no_longer_configured() -> (
    None
):
    """An endpoint removed from the settings is sent nothing more; 30 days after they were
    queued its pending deliveries go, the oldest first, unless an instance still has one in
    hand (tried or let go within those 30 days: its settings may still name the URL). The
    configured endpoint's wait, however old."""
    h = webhook_harness()
    sender = ScriptedSender({"hooks.example.com": [500] * 100, "other.example.org": [500] * 100})
    h.container.webhook_sender.override(sender)
    await h.sign_up("alice", "alice@example.com")
    await h.container.deliver_webhooks().execute()  # both heads fail
    h.clock.advance(timedelta(days=20))
    await h.sign_up("bob", "bob@example.com")
    h.clock.advance(timedelta(days=11))
    later = Harness.build(build_container(make_settings(webhook_urls=HOOKS, webhook_secret=SECRET)))
    later.container.memory_db.override(h.container.memory_db())
    later.container.clock.override(h.clock)
    # An instance that still names the old endpoint let its first delivery go just now: it
    # stays, though queued 31 days ago (an attacker's review: a purge run with other
    # settings deleted what a live instance was sending).
    db: MemoryDatabase = h.container.memory_db()
    old_endpoint = endpoint_for(OTHER).key
    head, bobs = [d for d in deliveries(h) if d.endpoint == old_endpoint]
    db.tables.webhook_deliveries[head.id] = replace(head, next_attempt_at=h.clock.now())
    every = {d.id for d in deliveries(h)}
    try:
        assert (await later.container.purge_expired().execute()).webhook_deliveries == 0
        # Untouched for 30 days (no instance sends to it any more): it goes; bob's, 11
        # days old, waits.
        db.tables.webhook_deliveries[head.id] = head
        assert (await later.container.purge_expired().execute()).webhook_deliveries == 1
    finally:
        later.container.unwire()
        h.container.unwire()
    assert {d.id for d in deliveries(h)} == every - {head.id}
    assert bobs.created_at < h.clock.now() - timedelta(days=10)


@pytest.mark.parametrize("answer", [500, 204], ids=["failing", "delivering"])
async def test_a_purge_never_cuts_a_queue_an_instance_is_still_sending(answer: int) -> None:
    """An attacker's review: a pass tries an endpoint's head and lets the next nineteen go
    (or delivers twenty), so a purge run with settings that no longer name the endpoint (an
    old cron file, right after the URL is removed) kept those and deleted the month-old rest
    behind them: the receiver would get events 0-19, then newer ones, and never 20-29."""
    h = webhook_harness(HOOKS)
    h.container.webhook_sender.override(ScriptedSender({"hooks.example.com": [answer] * 1000}))
    for n in range(30):
        await h.sign_up(f"user{n}", f"user{n}@example.com")
    h.clock.advance(timedelta(days=31))
    await h.container.deliver_webhooks().execute()  # the live service tries its head again
    queued = {d.id for d in deliveries(h)}
    cron = Harness.build(build_container(make_settings(webhook_urls=OTHER, webhook_secret=SECRET)))
    cron.container.memory_db.override(h.container.memory_db())
    cron.container.clock.override(h.clock)
    try:
        report = await cron.container.purge_expired().execute()
    finally:
        cron.container.unwire()
        h.container.unwire()
    assert report.webhook_deliveries == 0
    assert {d.id for d in deliveries(h)} == queued


async def test_a_purge_whose_settings_name_no_webhook_url_keeps_every_pending_delivery() -> None:
    """An attacker's review: purge-expired run from a cron job given only the database took
    every endpoint for removed, and deleted a live endpoint's month-old backlog, with no
    trace and nothing `webhooks retry` could send. Without webhook URLs it cannot tell, so it
    keeps them all, and says so."""
    h = webhook_harness(HOOKS)
    h.container.webhook_sender.override(ScriptedSender({"hooks.example.com": [500] * 100}))
    await h.sign_up("alice", "alice@example.com")
    db: MemoryDatabase = h.container.memory_db()
    h.clock.advance(timedelta(days=31))
    cron = Harness.build(build_container(make_settings()))
    cron.container.memory_db.override(db)
    cron.container.clock.override(h.clock)
    try:
        report = await cron.container.purge_expired().execute()
        assert report.webhook_deliveries == 0
        assert report.webhook_pending_kept == 1
        kept = len(deliveries(h))
        assert kept == 1
        # With the service's settings, nothing of a configured endpoint goes either, and
        # nothing is said.
        served = await h.container.purge_expired().execute()
        assert (served.webhook_deliveries, served.webhook_pending_kept) == (0, 0)
    finally:
        cron.container.unwire()
        h.container.unwire()
    assert len(deliveries(h)) == kept


async def test_the_worker_logs_hosts_and_ids_never_urls_or_secrets(
    hooks: tuple[Harness, ScriptedSender], caplog: pytest.LogCaptureFixture
) -> None:
    h, sender = hooks
    sender.answers["hooks.example.com"] = [500]
    sender.answers["other.example.org"] = [410]
    await h.sign_up("alice", "alice@example.com")
    caplog.set_level(logging.INFO, logger="taskflow_link.webhooks")
    report = await WebhookWorker(h.container).run_once()
    assert report is not None
    assert len(report.retrying) == len(report.gone) == 1
    assert "hooks.example.com" in caplog.text
    assert "410 Gone" in caplog.text
    assert f"retry` (`--id {report.gone[0].id}`" in caplog.text  # the refused one, to send
    assert "t0ps3cret" not in caplog.text
    assert SECRET.removeprefix("whsec_") not in caplog.text


async def test_a_delivery_another_worker_took_over_is_left_to_it(
    hooks: tuple[Harness, ScriptedSender],
) -> None:
    h, sender = hooks
    await h.sign_up("alice", "alice@example.com")
    async with h.uow() as uow:
        keys = [endpoint_for(HOOKS).key, endpoint_for(OTHER).key]
        now = h.clock.now()
        stale = await uow.webhooks.claim_due(now, now, 10, keys)  # a lease already over
        await uow.commit()
    report = await h.container.deliver_webhooks().execute()  # takes them over
    assert len(report.delivered) == 2
    del sender.sent[:]
    # The first worker wakes up and would send its stale claims: it may not.
    observed: Any = h.container.deliver_webhooks()  # the use case, counted by the container
    use_case = observed.use_case
    for delivery in stale:
        endpoint = WebhookEndpoint(delivery.endpoint, delivery.host)
        assert not await use_case._deliver(endpoint, delivery, WebhookReport())  # turn over
    assert sender.sent == []


async def test_a_worker_stalled_past_its_lease_cannot_undo_the_outcome_of_the_one_that_took_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An attacker's review: worker A sends link.created and stalls past its lease (a paused
    process, clocks apart); worker B takes the endpoint over and delivers link.created, then
    link.deleted. A's attempt then fails: its retry was written over B's "delivered", and
    link.created was sent once more, after link.deleted (the receiver: "linked")."""
    h = webhook_harness(HOOKS)
    arrived: list[tuple[str, int]] = []
    stalled: list[WebhookReport] = []
    worker_a: list[str] = []

    class StallingSender:
        async def send(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> int:
            kind = json.loads(message.body)["type"]
            if kind == "link.created" and not worker_a:
                worker_a.append(kind)
                h.clock.advance(CLAIM_LEASE + timedelta(seconds=1))  # A stalls on the wire...
                stalled.append(await h.container.deliver_webhooks().execute())  # ...B sends
                arrived.append((kind, 500))
                return 500  # A's attempt finally fails
            arrived.append((kind, 204))
            return 204

    h.container.webhook_sender.override(StallingSender())
    try:
        account = (await h.sign_up("alice", "alice@example.com")).account
        await h.container.deliver_webhooks().execute()
        arrived.clear()
        await h.discord_link(account.id, h.discord_user(7200, username="d_alice"))
        await h.container.unlink_discord().execute(DiscordId(7200))
        with caplog.at_level(logging.WARNING, logger="taskflow_link"):
            report = await WebhookWorker(h.container).run_once()  # worker A
        h.clock.advance(timedelta(minutes=10))
        later = await h.container.deliver_webhooks().execute()
    finally:
        h.container.unwire()
    assert [d.event.type for d in stalled[0].delivered] == ["link.created", "link.deleted"]
    assert report is not None
    assert [d.event.type for d in report.taken_over] == ["link.created"]
    assert report.retrying == []
    assert not later.busy  # nothing sent again
    assert arrived == [("link.created", 204), ("link.deleted", 204), ("link.created", 500)]
    assert all(d.state is WebhookState.DELIVERED for d in deliveries(h))
    assert "its lease ran out while it was sent" in caplog.text


async def test_a_stalled_workers_stale_410_cannot_stop_an_endpoint_another_worker_retries() -> None:
    """The worker that took over got a 500 and left the delivery pending for its retry: the
    stalled worker's late answer (410 Gone, from a receiver being redeployed, say) must not
    overwrite that, nor stop the endpoint."""
    h = webhook_harness(HOOKS)
    answers: list[int] = []
    worker_a: list[str] = []

    class StallingSender:
        async def send(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> int:
            if not worker_a:
                worker_a.append("stalled")
                h.clock.advance(CLAIM_LEASE + timedelta(seconds=1))
                await h.container.deliver_webhooks().execute()  # B: a 500, retry pending
                answers.append(410)
                return 410  # A's late answer
            answer = 500 if len(answers) == 0 else 204
            answers.append(answer)
            return answer

    h.container.webhook_sender.override(StallingSender())
    try:
        await h.sign_up("alice", "alice@example.com")
        report = await h.container.deliver_webhooks().execute()  # worker A
        assert [d.event.type for d in report.taken_over] == ["account.created"]
        assert report.gone == []
        async with h.uow() as uow:
            assert await uow.webhooks.gone_endpoints() == []
        [pending] = deliveries(h)
        assert (pending.state, pending.attempts, pending.last_error) == (
            WebhookState.PENDING,
            1,
            "http_500",
        )
        h.clock.advance(timedelta(minutes=1))
        later = await h.container.deliver_webhooks().execute()  # B's retry
    finally:
        h.container.unwire()
    assert [d.event.type for d in later.delivered] == ["account.created"]
    assert answers == [500, 410, 204]


def test_only_ids_and_times_travel() -> None:
    """The Discord names and avatar a link keeps for the web pages stay out of every body."""
    now = datetime.now(UTC)
    link = Link(DiscordId(9), AccountId.new(), now, "secret_name", "Secret Name", "avatarhash")
    event = link_created(link, via="ticket")
    assert set(json.loads(event.payload)["data"]) == {
        "discord_id",
        "taskflow_user_id",
        "linked_at",
        "via",
    }
    assert "secret_name" not in event.payload
    assert "avatarhash" not in event.payload


async def test_retrying_a_given_up_delivery_alone_never_lets_an_endpoints_stream_skip_its_410(
    hooks: tuple[Harness, ScriptedSender],
) -> None:
    """An attacker's review: `webhooks retry --id` of a delivery given up earlier also started
    again the endpoint that had since answered 410 to a later one, so the deliveries queued
    after the refused one went out while it stayed unsent: a hole in the receiver's stream
    (bob's event missing between alice's and carol's), filled out of order by a later
    `webhooks retry`. Only the refused delivery starts its endpoint again."""
    h, sender = hooks
    script: list[int | Exception] = [500] * MAX_ATTEMPTS
    sender.answers["hooks.example.com"] = [*script, 410]
    await h.sign_up("alice", "alice@example.com")
    for _ in range(MAX_ATTEMPTS):  # alice's is given up
        await h.container.deliver_webhooks().execute()
        h.clock.advance(timedelta(days=2))
    await h.sign_up("bob", "bob@example.com")
    [refused] = (await h.container.deliver_webhooks().execute()).gone  # bob's: 410
    await h.sign_up("carol", "carol@example.com")
    failed = next(d for d in deliveries(h) if d.state is WebhookState.FAILED)

    def users() -> list[str]:
        return [json.loads(m.body)["data"]["taskflow_user_id"] for m in sender.to(failed.host)]

    assert await h.container.requeue_webhooks().execute(failed.id) == 1
    while (await h.container.deliver_webhooks().execute()).busy:
        pass
    assert len(users()) == MAX_ATTEMPTS + 1  # the endpoint still waits for its refused one
    assert await h.container.requeue_webhooks().execute(refused.id) == 1
    while (await h.container.deliver_webhooks().execute()).busy:
        pass
    queued = [
        json.loads(d.event.payload)["data"]["taskflow_user_id"]
        for d in deliveries(h)
        if d.host == failed.host
    ]
    assert users()[MAX_ATTEMPTS + 1 :] == queued  # alice's, bob's, carol's: no hole


async def test_webhooks_retry_a_month_after_a_410_sends_the_refused_delivery_first() -> None:
    """An attacker's review: purge-expired deleted the delivery an endpoint answered 410 to
    30 days after, though its endpoint was still stopped and the later ones waited behind it:
    `webhooks retry` then sent bob's event and never alice's."""
    h = webhook_harness(HOOKS)
    sender = ScriptedSender({"hooks.example.com": [410]})
    h.container.webhook_sender.override(sender)
    try:
        await h.sign_up("alice", "alice@example.com")
        [refused] = (await h.container.deliver_webhooks().execute()).gone
        h.clock.advance(timedelta(days=1))
        await h.sign_up("bob", "bob@example.com")
        h.clock.advance(timedelta(days=31))
        assert (await h.container.purge_expired().execute()).webhook_deliveries == 0
        assert await h.container.requeue_webhooks().execute() == 1
        while (await h.container.deliver_webhooks().execute()).busy:
            pass
    finally:
        h.container.unwire()
    sent = [m.message_id for m in sender.to("hooks.example.com")]
    assert sent == [refused.event.message_id] + [d.event.message_id for d in deliveries(h)]


async def test_a_pass_that_fails_for_one_endpoint_ends_only_once_the_others_are_done(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One endpoint's outcome cannot be written (the database went away for it) while
    another's attempt is on the wire: the pass ends after that attempt was written back,
    and reports it with the failure. Ended at the failure, it left that endpoint's sending
    running detached past the pass: its outcome never logged nor counted, still running
    while the worker stops and the process closes the sender and the database under it."""
    h = webhook_harness()
    other_failed = asyncio.Event()

    class WaitsForTheOther(ScriptedSender):
        async def send(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> int:
            if endpoint.host == "hooks.example.com":
                await other_failed.wait()
                for _ in range(10):  # an answer that takes a while yet
                    await asyncio.sleep(0)
            return await super().send(endpoint, message)

    h.container.webhook_sender.override(WaitsForTheOther())
    await h.sign_up("alice", "alice@example.com")
    save = MemoryWebhooks.save

    async def save_fails_for_other(
        self: MemoryWebhooks, delivery: WebhookDelivery, *, leased_until: datetime
    ) -> bool:
        if delivery.host == "other.example.org":
            other_failed.set()
            raise errors.StorageError()
        return await save(self, delivery, leased_until=leased_until)

    monkeypatch.setattr(MemoryWebhooks, "save", save_fails_for_other)
    caplog.set_level(logging.INFO, logger="taskflow_link.webhooks")
    report = await WebhookWorker(h.container).run_once()
    [to_hooks] = [d for d in deliveries(h) if d.host == "hooks.example.com"]
    assert to_hooks.state is WebhookState.DELIVERED
    assert report is not None
    assert [d.id for d in report.delivered] == [to_hooks.id]
    assert [type(e) for e in report.broken] == [errors.StorageError]
    assert "delivered to hooks.example.com" in caplog.text
    assert "webhook queue unreachable (database)" in caplog.text


async def test_an_unexpected_failure_of_the_sender_is_logged_without_the_url_or_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failure no code names (a bug, a library's surprise) was recorded as
    ``unexpected_error`` with no traceback anywhere. It is logged now, with its type and
    where it came from, but neither its message (a library's may quote the URL) nor the
    URL's path or query nor a secret: only the host, as the rest of the webhook logs."""
    url = "https://hooks.example.com/private-path/abc?token=s3cr3t-query"
    key = b"signing-key-never-logged-0123456789"
    sender = HttpWebhookSender([WebhookTarget(url, (key,))], timeout=5, user_agent="test")

    said = f"an odd failure posting to {url} with {key!r}"  # its source line is logged

    def broken() -> Any:
        raise RuntimeError(said)

    sender._http = broken  # type: ignore[method-assign]
    message = WebhookMessage("msg_1", datetime(2026, 1, 1, tzinfo=UTC), "{}")
    caplog.set_level(logging.INFO, logger="taskflow_link.webhooks")
    with pytest.raises(errors.WebhookNotDelivered) as refused:
        await sender.send(endpoint_for(url), message)

    assert refused.value.message == "unexpected_error"
    assert "RuntimeError" in caplog.text
    assert "hooks.example.com" in caplog.text
    assert "msg_1" in caplog.text
    assert "broken" in caplog.text  # where it came from: the traceback's frames
    for secret in ("private-path", "s3cr3t", "token=", "signing-key", "odd failure"):
        assert secret not in caplog.text
