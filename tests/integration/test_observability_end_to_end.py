"""/metrics over the real HTTP stack (web app and Discord emulator under uvicorn, Postgres): the
counters move with real flows, and every log line of a request carries its id.

Metrics belong to the process, and earlier tests ran flows too: each test reads the counters
before and after, and asserts on the difference."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from entrypoints.logs import AddRequestId, JsonFormatter
from tests.bot_support import WAIT_SECONDS
from tests.integration.stack import Browser, Stack, sign_up

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(stack: Stack) -> tuple[Samples, str]:
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    return samples, answer.text


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def _link_button(stack: Stack, user_id: str) -> str:
    """Run /link in the emulated Discord (an HTTP interaction to the web app): the button."""
    async with httpx.AsyncClient(base_url=stack.emulator_url, timeout=60) as client:
        answer = await client.post(
            "/_emulator/interactions", json={"user_id": user_id, "command": "link"}
        )
    reply = answer.json()["reply"]["data"]
    url: str = reply["components"][0]["components"][0]["url"]
    return url


async def test_a_link_through_the_bot_and_the_web_moves_the_counters(
    stack: Stack, browser: Browser
) -> None:
    user = stack.emulator.add_user("counted", email="counted@example.com", verified=True)
    before, _ = await scrape(stack)
    button = await _link_button(stack, user.id)
    await sign_up(browser, "alice", "alice@example.com", verify=False)
    done = await browser.confirm_link(button, user.id)
    assert done.url.path == "/account"
    assert "/whoami shows the link" in done.text
    after, text = await scrape(stack)

    assert moved(before, after, "taskflow_link_link_tickets_issued_total") == 1
    assert moved(before, after, "taskflow_link_links_created_total", how="ticket") == 1
    assert moved(before, after, "taskflow_link_links_created_total", how="verified_email") == 0
    # The requests by route template: the ticket in the button's path is nowhere in the metrics.
    page = {"method": "GET", "path": "/link/{token}", "status_code": "200"}
    page_count = moved(
        before, after, "taskflow_link_http_requests_total", app_name="taskflow-link", **page
    )
    assert page_count >= 1
    ticket = urlsplit(button).path.removeprefix("/link/")
    assert ticket not in text
    # The round trip's calls to Discord were timed.
    for endpoint in ("token", "users_me"):
        timed = moved(
            before,
            after,
            "taskflow_link_discord_api_request_duration_seconds_count",
            endpoint=endpoint,
        )
        assert timed == 1, endpoint


async def test_a_refused_link_is_counted_with_its_reason(stack: Stack, browser: Browser) -> None:
    mallory = stack.emulator.add_user("mallory", email="mallory@example.com", verified=True)
    alice_d = stack.emulator.add_user("alice_d")
    button = await _link_button(stack, mallory.id)
    await sign_up(browser, "alice", "alice@example.com", verify=False)
    before, _ = await scrape(stack)
    refused = await browser.confirm_link(button, alice_d.id)  # a forwarded button
    assert refused.status_code == 409
    after, _ = await scrape(stack)
    reason = "ticket_for_another_discord"
    assert moved(before, after, "taskflow_link_links_refused_total", reason=reason) == 1
    assert moved(before, after, "taskflow_link_links_created_total", how="ticket") == 0


async def test_sign_ins_with_discord_are_counted_by_outcome(stack: Stack, browser: Browser) -> None:
    user = stack.emulator.add_user("newcomer", email="newcomer@example.com", verified=True)
    before, _ = await scrape(stack)
    assert (await browser.sign_in_with_discord(user.id)).url.path == "/account"
    await browser.submit("/account", "/signout", {})
    assert (await browser.sign_in_with_discord(user.id)).url.path == "/account"
    after, _ = await scrape(stack)
    sign_ins = "taskflow_link_sign_ins_total"
    assert moved(before, after, sign_ins, method="discord", outcome="created") == 1
    assert moved(before, after, sign_ins, method="discord", outcome="signed_in") == 1
    assert moved(before, after, "taskflow_link_links_created_total", how="signup") == 1


async def test_a_discord_api_error_is_counted_by_endpoint_and_kind(
    stack: Stack, browser: Browser
) -> None:
    user = stack.emulator.add_user("unlucky", email="unlucky@example.com", verified=True)
    before, _ = await scrape(stack)
    stack.emulator.faults["token"] = "500"
    try:
        page = await browser.sign_in_with_discord(user.id)
    finally:
        stack.emulator.faults.clear()
    assert page.status_code == 502
    stack.emulator.faults["users_me"] = "429"
    try:
        page = await browser.sign_in_with_discord(user.id)
    finally:
        stack.emulator.faults.clear()
    assert page.status_code == 502
    after, _ = await scrape(stack)
    errors = "taskflow_link_discord_api_errors_total"
    assert moved(before, after, errors, endpoint="token", kind="5xx") == 1
    assert moved(before, after, errors, endpoint="users_me", kind="rate_limited") == 1
    failed = "discord_unavailable"
    assert (
        moved(
            before,
            after,
            "taskflow_link_use_cases_total",
            use_case="complete_discord_auth",
            outcome=failed,
        )
        == 2
    )
    assert (
        moved(before, after, "taskflow_link_sign_ins_total", method="discord", outcome="created")
        == 0
    )


async def test_emails_sent_are_counted_by_kind(stack: Stack, browser: Browser) -> None:
    before, _ = await scrape(stack)
    # Sign-up queues a confirmation email; the worker sends it through SMTP; it is followed.
    await sign_up(browser, "mailed", "mailed@example.com", verify=True)
    name, kind = "taskflow_link_emails_sent_total", "verify_email"
    deadline = time.monotonic() + WAIT_SECONDS
    after, _ = await scrape(stack)
    while not moved(before, after, name, kind=kind):  # counted once the worker's batch is done
        assert time.monotonic() < deadline, "the email sent was never counted"
        await asyncio.sleep(0.05)
        after, _ = await scrape(stack)
    assert moved(before, after, name, kind=kind) == 1
    failed = "taskflow_link_emails_failed_total"
    assert moved(before, after, failed, kind=kind, outcome="retrying") == 0


# -- the request id ---------------------------------------------------------------------------


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    """The access log as JSON lines, formatted as ``TASKFLOW_LINK_LOG_FORMAT=json`` does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(AddRequestId())
    logger = logging.getLogger("taskflow_link.access")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_the_request_id_is_answered_and_in_the_access_log(
    stack: Stack, access_lines: io.StringIO
) -> None:
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30) as client:
        kept = await client.get("/healthz", headers={"X-Request-ID": "edge-proxy.42"})
        replaced = await client.get("/signin", headers={"X-Request-ID": "x" * 65})
        unmatched = await client.get("/no-such-page", headers={"X-Request-ID": "a\tb"})
    assert kept.headers["x-request-id"] == "edge-proxy.42"
    for answer in (replaced, unmatched):
        assert answer.headers["x-request-id"] not in ("x" * 65, "a\tb")
    lines = [json.loads(line) for line in access_lines.getvalue().splitlines()]
    ids = {(line["path"], line["status"]): line.get("request_id") for line in lines}
    assert ids[("/healthz", 200)] == "edge-proxy.42"
    assert ids[("/signin", 200)] == replaced.headers["x-request-id"]
    assert ids[("/no-such-page", 404)] == unmatched.headers["x-request-id"]
