"""Webhook signatures against the official Standard Webhooks library, the webhook and audit
settings, reading and pruning the audit trail, and what the operations commands print."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from adapters.metrics import PrometheusMetrics
from adapters.webhooks import decode_secret, endpoint_for, sign, signature_header
from domain import errors
from domain.model import AccountId, AuditEvent, AuditKind, DiscordId
from domain.use_cases import EndpointStatus, WebhookReport
from domain.webhooks import (
    RETRY_DELAYS,
    WebhookDelivery,
    WebhookEvent,
    WebhookEventType,
    WebhookState,
    retry_delay,
)
from entrypoints.cli import cli
from entrypoints.cli_output import audit_line, parse_since, webhook_status_lines
from entrypoints.container import build_container
from entrypoints.instrumentation import record_outcome
from entrypoints.settings import SettingsError, load_settings, parse_webhook_urls
from entrypoints.web.app import create_app
from tests.harness import TEST_SECRET_KEY, Harness, make_settings, webhook_secret


def secret(fill: bytes, size: int = 32) -> str:
    return webhook_secret(fill.decode(), size)


def key(fill: bytes) -> bytes:
    return decode_secret(secret(fill))


NEW, OLD, STRANGER = secret(b"n"), secret(b"o"), secret(b"x")
BODY = b'{"type":"link.created","timestamp":"2026-11-23T10:00:00Z","data":{"discord_id":"1"}}'


def headers(keys: list[bytes], timestamp: int, body: bytes = BODY) -> dict[str, str]:
    return {
        "webhook-id": "msg_0123abcd",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, "msg_0123abcd", timestamp, body),
    }


# -- signatures ---------------------------------------------------------------------------------


def test_our_signature_is_the_libraries() -> None:
    moment = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
    ours = sign(decode_secret(NEW), "msg_0123abcd", math.floor(moment.timestamp()), BODY)
    assert ours == Webhook(NEW).sign("msg_0123abcd", moment, BODY.decode())
    assert ours.startswith("v1,")


def test_the_official_library_verifies_what_we_send() -> None:
    now = math.floor(datetime.now(UTC).timestamp())  # the library checks it against its clock
    signed = headers([decode_secret(NEW)], now)
    assert Webhook(NEW).verify(BODY, signed)["data"] == {"discord_id": "1"}
    with pytest.raises(WebhookVerificationError):
        Webhook(STRANGER).verify(BODY, signed)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(BODY.replace(b'"1"', b'"2"'), signed)
    with pytest.raises(WebhookVerificationError):  # the id is signed too
        Webhook(NEW).verify(BODY, {**signed, "webhook-id": "msg_other"})


def test_during_a_rotation_both_secrets_verify() -> None:
    now = math.floor(datetime.now(UTC).timestamp())
    signed = headers([decode_secret(NEW), decode_secret(OLD)], now)
    assert len(signed["webhook-signature"].split(" ")) == 2
    assert Webhook(NEW).verify(BODY, signed)
    assert Webhook(OLD).verify(BODY, signed)  # a receiver not yet updated
    with pytest.raises(WebhookVerificationError):
        Webhook(STRANGER).verify(BODY, signed)


@dataclass
class ReadmeReceiver:
    """The README's receiver example ("Verifying in a receiver"), run as written with this
    file's secret; its ``handle`` fails the first ``failures`` times (the receiver's database
    down, say), and records what it handled and the ids done with it."""

    failures: int = 0
    handled: list[tuple[object, ...]] = field(default_factory=list)
    done: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
        opening = readme.index("```python\n", readme.index("**Verifying in a receiver**"))
        code = readme[opening + len("```python\n") : readme.index("```\n", opening + 10)]
        names: dict[str, object] = {
            "processed": self.done.__contains__,
            "handle": self._handle,
        }
        exec(code.replace('"whsec_…"', repr(NEW)), names)  # noqa: S102 - the README's own code
        receive = names["receive"]
        assert callable(receive)
        self.receive: Callable[[bytes, dict[str, str]], int] = receive

    def _handle(self, *args: object) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the receiver's database is down")  # its framework: a 500
        self.handled.append(args)
        if len(args) == 3:  # message_id, type, data: recorded with its effect
            self.done.add(str(args[0]))


def test_the_readme_by_hand_signature_is_ours_as_bytes_and_takes_an_unpadded_secret() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("`", readme.index("or by hand: `")) + 1
    expression = readme[start : readme.index("`", start)].replace("\n", " ")
    now = math.floor(datetime.now(UTC).timestamp())
    sent = headers([decode_secret(NEW)], now)["webhook-signature"]
    modules = {"base64": base64, "hmac": hmac, "hashlib": hashlib}
    for written in (NEW, NEW.rstrip("=")):  # both are accepted in the settings
        given = {"secret": written, "id": "msg_0123abcd", "timestamp": now, "raw_body": BODY}
        expected = eval(expression, modules, given)  # noqa: S307 - the README's own code
        assert isinstance(expected, bytes)
        assert hmac.compare_digest(expected, sent.encode())
        assert not hmac.compare_digest(expected, "v1,\u00e9".encode())


def test_the_readme_receiver_handles_an_event_whose_handling_failed_when_it_comes_again() -> None:
    """An event is done once it is handled, not once it arrived: a receiver that marks the
    id first answers 204 to the retry of an event its handler failed on (a 500), and the
    event is lost."""
    receiver = ReadmeReceiver(failures=1)
    signed = headers([decode_secret(NEW)], math.floor(datetime.now(UTC).timestamp()))
    with pytest.raises(RuntimeError):
        receiver.receive(BODY, signed)
    assert receiver.handled == []
    assert receiver.receive(BODY, signed) == 204  # the retry, under the same id
    assert receiver.receive(BODY, signed) == 204  # and one more: handled once
    assert len(receiver.handled) == 1


@pytest.mark.parametrize(
    ("change", "body"),
    [
        ({"webhook-signature": "v1"}, BODY),  # no comma
        ({"webhook-signature": "v1,a,b"}, BODY),  # two commas
        ({"webhook-signature": "v1,A"}, BODY),  # base64 that is no length base64 has
        ({"webhook-signature": "v1,AAAA"}, b"\xff" + BODY),  # a body that is not UTF-8
        ({"webhook-signature": "v1,AAAA"}, BODY),  # a signature that does not match
        ({"webhook-timestamp": "1795428943"}, BODY),  # long ago (or far ahead)
        ({"webhook-id": ""}, BODY),  # a header missing
    ],
    ids=["no-comma", "two-commas", "base64-length", "not-utf8", "forged", "old", "missing"],
)
def test_the_readme_receiver_refuses_a_forged_request_with_401_never_an_exception(
    change: dict[str, str], body: bytes
) -> None:
    """Anyone can post to a receiver: what the official library raises for a malformed
    header or body besides ``WebhookVerificationError`` (a ``ValueError``) must be a 401
    too, not a 500 with a traceback in the receiver's log at every forged request."""
    receive = ReadmeReceiver().receive
    now = math.floor(datetime.now(UTC).timestamp())  # the library checks it against its clock
    signed = headers([decode_secret(NEW)], now)
    assert receive(BODY, signed) == 204
    assert receive(BODY, signed) == 204  # a retry: processed once
    assert receive(body, {**signed, **change}) == 401


@pytest.mark.parametrize(
    "text",
    [
        "n" * 40,  # no prefix
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"k" * 23).decode(),  # too short
        "whsec_" + base64.b64encode(b"k" * 65).decode(),  # too long
        "whsec_",
    ],
)
def test_a_secret_that_is_not_whsec_base64_of_24_to_64_bytes_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"whsec_|bytes") as refused:
        decode_secret(text)
    if len(text) > len("whsec_"):
        assert text not in str(refused.value)  # never the value


def test_a_secret_without_padding_is_accepted() -> None:
    assert decode_secret(NEW.rstrip("=")) == key(b"n")
    assert len(decode_secret(secret(b"k", 24))) == 24


@pytest.mark.parametrize(
    "text",
    [
        "whsec_" + base64.b64encode(b"k" * 32).decode(),  # one byte over and over
        "whsec_" + base64.b64encode(b"0123456789" * 4).decode(),  # a piece repeated
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # the README's example (Standard Webhooks')
    ],
)
def test_a_guessable_webhook_secret_stops_start_up_unless_rotated_away(
    text: str,
) -> None:
    """Whoever knows it signs link events the receivers take for ours."""
    for given in (
        {"webhook_urls": "https://a.example/x", "webhook_secret": text},
        {"webhook_urls": f"https://a.example/x {text}"},
    ):
        with pytest.raises(SettingsError, match="looks guessable") as refused:
            _webhook_settings(**given)
        assert text.removeprefix("whsec_")[:12] not in str(refused.value)  # never the value
    # Being rotated away (the previous one, the second after a URL): taken, so the receivers
    # go on verifying meanwhile, and said at start until it goes, never with its value.
    for given, named in (
        (
            {"webhook_urls": "https://a.example/x", "webhook_secret": NEW},
            "TASKFLOW_LINK_WEBHOOK_SECRET_PREVIOUS looks guessable",
        ),
        (
            {"webhook_urls": f"https://b.example/y, https://a.example/x {NEW} {text}"},
            "the second secret after item 2 of TASKFLOW_LINK_WEBHOOK_URLS looks guessable",
        ),
    ):
        if "webhook_secret" in given:
            given["webhook_secret_previous"] = text
        else:
            given["webhook_secret"] = OLD
        rotating = load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, **given)
        said = [w for w in rotating.warnings() if "looks guessable" in w]
        assert said == [next(w for w in said if named in w)], said
        assert text.removeprefix("whsec_")[:12] not in " ".join(said)
    strong = load_settings(
        _env_file=None,
        secret_key=TEST_SECRET_KEY,
        webhook_urls=f"https://a.example/x {NEW} {OLD}",
        webhook_secret=NEW,
        webhook_secret_previous=OLD,
    )
    assert not [w for w in strong.warnings() if "looks guessable" in w]


def test_retries_are_spread_within_a_tenth_of_each_delay() -> None:
    event = WebhookEvent(uuid.uuid4(), WebhookEventType.LINK_CREATED, datetime.now(UTC), "{}")

    def delivery() -> WebhookDelivery:
        return WebhookDelivery(uuid.uuid4(), event, "k", "h", event.occurred_at, event.occurred_at)

    waits = {retry_delay(delivery(), 1) for _ in range(40)}
    assert len(waits) > 30
    assert all(w is not None and RETRY_DELAYS[0] <= w <= RETRY_DELAYS[0] * 1.1 for w in waits)
    one = delivery()
    assert retry_delay(one, 3) == retry_delay(one, 3)  # reproducible
    assert retry_delay(one, len(RETRY_DELAYS) + 1) is None


# -- settings -----------------------------------------------------------------------------------


def _webhook_settings(**values: object) -> object:
    return load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, **values)


@pytest.mark.parametrize(
    ("urls", "problem"),
    [
        ("http://hooks.example.com/in?token=t0ps3cret", "item 1 must use https"),
        ("https://a.example/x,http://10.0.0.5/in?token=t0ps3cret", "item 2 must use https"),
        # Not this machine: glibc asks the network's DNS server for "localhost." (only
        # "localhost" is in /etc/hosts), so its answer would choose where this plain http goes.
        ("http://localhost.:9000/in?token=t0ps3cret", "item 1 must use https"),
        ("http://LocalHost.:9000/in?token=t0ps3cret", "item 1 must use https"),
        ("ftp://hooks.example.com/in?token=t0ps3cret", "item 1 is not an absolute http(s) URL"),
        ("/in?token=t0ps3cret", "item 1 is not an absolute http(s) URL"),
        ("https://a.example/x#t0ps3cret", "without a #fragment"),
        ("https://a.example/x,,https://b.example/y?token=t0ps3cret", "item 2 is empty"),
        ("https://a.example/t0ps3cret,https://a.example/t0ps3cret", "listed twice"),
        ("https://a.example:99999/t0ps3cret", "item 1 is not a URL"),
        # urllib reads host 127.0.0.1 (so plain http passes), yarl refuses the URL when sending.
        ("http://t0ps3cret.example\\@127.0.0.1/x", "item 1 is not a URL the sender reads"),
        ("https://a.example/x,https://b\\.example/t0ps3cret", "item 2 is not a URL the sender"),
        # A host and port longer than the outbox keeps (every link would fail on Postgres).
        (f"https://{'h' * 243}.example:8443/t0ps3cret", "item 1 has a host (with its port)"),
    ],
)
def test_webhook_urls_are_checked_without_echoing_them(urls: str, problem: str) -> None:
    with pytest.raises(SettingsError) as refused:
        _webhook_settings(webhook_urls=urls, webhook_secret=NEW)
    assert "TASKFLOW_LINK_WEBHOOK_URLS" in str(refused.value)
    assert problem in str(refused.value)
    assert "t0ps3cret" not in str(refused.value)


def test_urls_the_sender_reads_alike_are_taken_up_to_the_longest_host() -> None:
    """What urllib and yarl read alike passes: upper-case and punycode names, IPv6, an
    explicit port, a user part; and a host with its port of exactly 255 characters."""
    longest = f"https://{'h' * 242}.example:8443/in"
    assert len(endpoint_for(longest).host) == 255
    urls = [
        "https://HOOKS.Example.com:8443/in?token=t",
        "https://xn--bcher-kva.example/in",
        "http://[::1]:9000/hook",
        "http://[::1]/hook",
        "https://user:pass@hooks.example.com/in",
        longest,
    ]
    assert parse_webhook_urls(", ".join(urls)) == urls


def test_printed_settings_never_show_a_webhook_urls_token() -> None:
    """A receiver's URL may carry its token: the settings keep it like a password, so a log
    line or a traceback that prints them shows none of it; `config` shows the origin."""
    settings = make_settings(
        webhook_urls="https://hooks.example.com/in/t0ps3cret?key=k3y", webhook_secret=NEW
    )
    for printed in (repr(settings), str(settings), f"{settings.webhook_urls}"):
        assert "t0ps3cret" not in printed
        assert "k3y" not in printed
    assert settings.webhook_url_list == ["https://hooks.example.com/in/t0ps3cret?key=k3y"]
    shown = settings.shown()["TASKFLOW_LINK_WEBHOOK_URLS"]
    assert shown == "https://hooks.example.com/…"


def test_plain_http_is_only_for_this_machine() -> None:
    settings = make_settings(
        webhook_urls="http://127.0.0.1:9000/in, http://localhost/in,https://hooks.example.com/x",
        webhook_secret=NEW,
    )
    assert settings.webhook_url_list == [
        "http://127.0.0.1:9000/in",
        "http://localhost/in",
        "https://hooks.example.com/x",
    ]


def test_webhooks_need_a_valid_secret_and_a_rotation_needs_the_new_one() -> None:
    with pytest.raises(
        SettingsError, match="TASKFLOW_LINK_WEBHOOK_URLS needs TASKFLOW_LINK_WEBHOOK_SECRET"
    ):
        _webhook_settings(webhook_urls="https://a.example/x")
    with pytest.raises(SettingsError, match="needs the new TASKFLOW_LINK_WEBHOOK_SECRET"):
        _webhook_settings(webhook_secret_previous=OLD)
    bad = "whsec_" + base64.b64encode(b"short").decode()
    with pytest.raises(SettingsError) as refused:
        _webhook_settings(webhook_urls="https://a.example/x", webhook_secret=bad)
    assert "TASKFLOW_LINK_WEBHOOK_SECRET: must hold 24 to 64 random bytes" in str(refused.value)
    assert bad not in str(refused.value)
    rotating = make_settings(
        webhook_urls="https://a.example/x", webhook_secret=NEW, webhook_secret_previous=OLD
    )
    assert rotating.webhook_keys == [key(b"n"), key(b"o")]  # the new one first
    assert make_settings(webhook_secret="  ").webhook_secret is None  # blank in a .env file
    with pytest.raises(SettingsError, match="TASKFLOW_LINK_AUDIT_RETENTION_DAYS"):
        _webhook_settings(audit_retention_days=-1)


def test_a_url_may_have_its_own_secrets_and_the_others_use_the_default() -> None:
    own, replaced = secret(b"a"), secret(b"r")
    settings = make_settings(
        webhook_urls=f"https://a.example/in?token=t0ps3cret {own},"
        f" https://b.example/in  {own.rstrip('=')}\t{replaced} ,https://c.example/in",
        webhook_secret=NEW,
        webhook_secret_previous=OLD,
    )
    a, b, c = settings.webhook_targets
    assert (a.url, a.keys) == ("https://a.example/in?token=t0ps3cret", (key(b"a"),))
    assert (b.url, b.keys) == ("https://b.example/in", (key(b"a"), key(b"r")))
    assert (c.url, c.keys) == ("https://c.example/in", (key(b"n"), key(b"o")))
    assert settings.webhook_url_list == [a.url, b.url, c.url]  # endpoints keep their names
    assert "t0ps3cret" not in repr(a)
    assert own.removeprefix("whsec_")[:20] not in repr(settings.webhook_targets)
    # Every URL with its own: no default secret needed.
    alone = make_settings(webhook_urls=f"https://a.example/in {own}")
    assert [t.keys for t in alone.webhook_targets] == [(key(b"a"),)]


@pytest.mark.parametrize(
    ("urls", "problem"),
    [
        ("https://a.example/t0ps3cret whsec_n0t!base64", "item 1: the secret after the URL must"),
        ("https://a.example/x,https://b.example/y t0ps3cret", "item 2: the secret after the URL"),
        (f"https://a.example/x {secret(b'o', 16)}", "must hold 24 to 64 random bytes"),
        (f"https://a.example/t0ps3cret {NEW} {OLD} {STRANGER}", "more than a URL and two"),
        (f"https://a.example/t0ps3cret {NEW},https://a.example/t0ps3cret {OLD}", "listed twice"),
    ],
)
def test_a_urls_own_secret_is_checked_without_echoing_it(urls: str, problem: str) -> None:
    with pytest.raises(SettingsError) as refused:
        _webhook_settings(webhook_urls=urls, webhook_secret=NEW)
    assert "TASKFLOW_LINK_WEBHOOK_URLS" in str(refused.value)
    assert problem in str(refused.value)
    for hidden in ("t0ps3cret", "n0t!base64", OLD[6:20], STRANGER[6:20]):
        assert hidden not in str(refused.value)


def test_urls_without_their_own_secret_need_the_default_one() -> None:
    with pytest.raises(SettingsError) as refused:
        _webhook_settings(
            webhook_urls=f"https://a.example/x {OLD},https://b.example/y,https://c.example/z"
        )
    assert "needs TASKFLOW_LINK_WEBHOOK_SECRET" in str(refused.value)
    assert "(item 2, 3)" in str(refused.value)


def test_urls_sharing_a_secret_are_warned_about_by_item_and_origin_only() -> None:
    shared = make_settings(
        webhook_urls=f"https://a.example/in?token=t0ps3cret,https://b.example/in,"
        f"https://c.example/in {OLD},https://d.example/in {OLD}",
        webhook_secret=NEW,
    )
    warned = [w for w in shared.warnings() if "WEBHOOK_URLS" in w]
    assert warned == [
        "TASKFLOW_LINK_WEBHOOK_URLS: the URLs of items 1, 2 (https://a.example, "
        "https://b.example) are signed with the same secret, so each of their receivers can "
        "sign events the others accept (a made-up link.created, say): give each URL its own "
        "secret, after it in the list",
        "TASKFLOW_LINK_WEBHOOK_URLS: the URLs of items 3, 4 (https://c.example, "
        "https://d.example) are signed with the same secret, so each of their receivers can "
        "sign events the others accept (a made-up link.created, say): give each URL its own "
        "secret, after it in the list",
    ]
    own_each = make_settings(
        webhook_urls=f"https://a.example/in {OLD} {OLD},https://b.example/in,"
        f"https://c.example/in {STRANGER}",
        webhook_secret=NEW,
        webhook_secret_previous=secret(b"p"),  # the default's rotation: b's alone
    )
    assert not any("WEBHOOK_URLS" in w for w in own_each.warnings())


def test_serve_warns_once_at_start_when_urls_share_a_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    container = build_container(
        make_settings(webhook_urls="https://a.example/in,https://b.example/in", webhook_secret=NEW)
    )
    caplog.set_level(logging.WARNING, logger="taskflow_link.web")
    try:
        create_app(container)
    finally:
        container.unwire()
    shared = [r.getMessage() for r in caplog.records if "same secret" in r.getMessage()]
    assert len(shared) == 1
    assert "can sign events the others accept" in shared[0]
    assert NEW.removeprefix("whsec_")[:20] not in caplog.text


def test_config_shows_webhook_hosts_never_paths_or_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv(
        "TASKFLOW_LINK_WEBHOOK_URLS",
        "https://hooks.example.com/in?token=t0ps3cret,http://[::1]:9000/p4th,"
        f"https://own.example.net/x {STRANGER}",
    )
    monkeypatch.setenv("TASKFLOW_LINK_WEBHOOK_SECRET", NEW)
    monkeypatch.setenv("TASKFLOW_LINK_WEBHOOK_SECRET_PREVIOUS", OLD)
    shown = CliRunner().invoke(cli, ["config"])
    assert shown.exit_code == 0, shown.output
    assert (
        "TASKFLOW_LINK_WEBHOOK_URLS = https://hooks.example.com/…, http://[::1]:9000/…, "
        "https://own.example.net/…" in shown.output
    )
    assert "items 1, 2 (https://hooks.example.com, http://[::1]:9000)" in shown.output
    assert "TASKFLOW_LINK_WEBHOOK_SECRET = (set)" in shown.output
    assert "TASKFLOW_LINK_WEBHOOK_SECRET_PREVIOUS = (set)" in shown.output
    assert "TASKFLOW_LINK_AUDIT_RETENTION_DAYS = 365" in shown.output
    for hidden in ("t0ps3cret", "p4th", NEW.removeprefix("whsec_")[:20], OLD[6:26], STRANGER[6:26]):
        assert hidden not in shown.output


def test_an_endpoint_is_named_by_its_urls_digest_and_shown_by_host() -> None:
    one = endpoint_for("https://hooks.example.com/in?token=t0ps3cret")
    assert one.host == "hooks.example.com"
    assert len(one.key) == 64
    assert "t0ps3cret" not in one.key
    assert endpoint_for("https://hooks.example.com/in?token=other").key != one.key
    assert endpoint_for("http://user:pw@[::1]:9000/x").host == "[::1]:9000"


# -- metrics ------------------------------------------------------------------------------------


def test_webhook_metrics_count_deliveries_and_failures_by_type() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    event = WebhookEvent(uuid.uuid4(), WebhookEventType.LINK_DELETED, datetime.now(UTC), "{}")
    d = WebhookDelivery(uuid.uuid4(), event, "k", "h", event.occurred_at, event.occurred_at)
    record_outcome(
        metrics,
        "deliver_webhooks",
        WebhookReport(delivered=[d, d], retrying=[d], failed=[d], gone=[d]),
        None,
    )

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(f"taskflow_link_{name}", labels) or 0.0

    assert value("webhooks_delivered_total", type="link.deleted") == 2
    for outcome in ("retrying", "given_up", "gone"):
        assert value("webhooks_failed_total", type="link.deleted", outcome=outcome) == 1


# -- the audit trail ----------------------------------------------------------------------------


async def _record(h: Harness, *events: AuditEvent) -> None:
    async with h.uow() as uow:
        for event in events:
            await uow.audit.record(event)
        await uow.commit()


async def test_the_audit_trail_reads_newest_events_oldest_first() -> None:
    h = Harness.build()
    now, one = h.clock.now(), AccountId.new()
    old = AuditEvent(AuditKind.SIGNED_IN, now - timedelta(days=8), one)
    linked = AuditEvent(AuditKind.LINKED, now - timedelta(days=2), one, DiscordId(4))
    other = AuditEvent(AuditKind.SIGNED_IN, now - timedelta(days=1), AccountId.new())
    unlinked = AuditEvent(AuditKind.UNLINKED, now, one, DiscordId(4))
    await _record(h, old, linked, other, unlinked)
    read = h.container.read_audit_trail()
    assert list(await read.execute()) == [old, linked, other, unlinked]
    assert list(await read.execute(limit=2)) == [other, unlinked]  # the newest two
    assert list(await read.execute(account_id=one, since=timedelta(days=7))) == [linked, unlinked]
    assert list(await read.execute(discord_id=DiscordId(4), since=now)) == [unlinked]
    with pytest.raises(errors.InvalidInput):
        await read.execute(limit=0)


@pytest.mark.parametrize(("days", "kept"), [(365, 2), (30, 1), (0, 3)])
async def test_purge_expired_applies_the_audit_retention(days: int, kept: int) -> None:
    h = Harness.build(build_container(make_settings(audit_retention_days=days)))
    now = h.clock.now()
    await _record(
        h,
        AuditEvent(AuditKind.SIGNED_IN, now - timedelta(days=366), AccountId.new()),
        AuditEvent(AuditKind.SIGNED_IN, now - timedelta(days=364), AccountId.new()),
        AuditEvent(AuditKind.SIGNED_IN, now, AccountId.new()),
    )
    report = await h.container.purge_expired().execute()
    assert report.audit_events == 3 - kept
    assert len(await h.container.read_audit_trail().execute()) == kept


def test_audit_lines_hide_secret_looking_details_and_control_characters() -> None:
    event = AuditEvent(
        AuditKind.SIGN_IN_FAILED,
        datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC),
        AccountId(uuid.UUID(int=1)),
        None,
        {
            "client": "10.0.0.1\x1b[31m",
            "reason": "two words\u202e",
            "api_token": "tfl_abc",
            "code": "c0de",
        },
    )
    assert audit_line(event) == (
        "2026-11-23T10:00:00Z  sign_in_failed  account=00000000-0000-0000-0000-000000000001  "
        'discord=-  api_token=(hidden) client=10.0.0.1[31m code=(hidden) reason="two words"'
    )
    # What the API's unlink records is shown: the key's name and id are not secrets.
    unlinked = AuditEvent(
        AuditKind.UNLINKED,
        datetime(2026, 1, 1, tzinfo=UTC),
        detail={"via": "api", "api_key": "billing", "api_key_id": "k1", "session": "other"},
    )
    assert audit_line(unlinked).endswith("api_key=billing api_key_id=k1 session=other via=api")
    bare = AuditEvent(AuditKind.API_KEY_CREATED, datetime(2026, 1, 1, tzinfo=UTC))
    assert audit_line(bare) == "2026-01-01T00:00:00Z  api_key_created  account=-  discord=-"


def test_since_is_a_date_a_time_or_how_long_ago() -> None:
    assert parse_since("7d") == timedelta(days=7)
    assert parse_since("30m") == timedelta(minutes=30)
    assert parse_since("2w") == timedelta(weeks=2)
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T12:00+02:00") == datetime(2026, 11, 1, 10, tzinfo=UTC)
    for wrong in ("yesterday", "7 days", "-3d", "", "999999w"):
        with pytest.raises(click.BadParameter):
            parse_since(wrong)


@pytest.mark.parametrize("beyond", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00+01:00"])
def test_since_refuses_a_time_that_is_outside_the_years_1_to_9999_in_utc(beyond: str) -> None:
    with pytest.raises(click.BadParameter, match="years 1 to 9999"):
        parse_since(beyond)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "x", "--discord-id", "1"], "Give --account or --discord-id, not both."),
        (["--account", "not-a-uuid"], "is not an account id"),
        (["--discord-id", "-4"], "is not a Discord id"),
        (["--since", "last tuesday"], "give a date"),
        (["--limit", "0"], "0 is not in the range"),
    ],
)
def test_audit_options_are_checked_before_anything_runs(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["audit", *args], env={"TASKFLOW_LINK_SECRET_KEY": None})
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_webhook_status_lines_say_what_an_operator_needs() -> None:
    gone_at = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    counts: dict[WebhookState | str, int] = dict.fromkeys(WebhookState, 0)
    lines = list(
        webhook_status_lines(
            [
                EndpointStatus("a.example", True, {**counts, WebhookState.DELIVERED: 3}),
                EndpointStatus(
                    "b.example",
                    True,
                    {**counts, WebhookState.GONE: 1},
                    gone_since=gone_at,
                    last_error="http_410",
                    last_error_at=gone_at,
                ),
                EndpointStatus("old.example", False, {**counts, WebhookState.PENDING: 2}),
                EndpointStatus(
                    "c.example",
                    True,
                    {**counts, WebhookState.DELIVERED: 1},
                    last_error="http_410",
                    last_error_at=gone_at,
                    delivered_since_error=True,
                ),
            ]
        )
    )
    assert lines == [
        "3 webhook endpoint(s) configured.",
        "1. a.example: 0 pending, 3 delivered, 0 failed, 0 gone",
        "2. b.example: 0 pending, 0 delivered, 0 failed, 1 gone",
        "     answered 410 Gone at 2026-11-23T10:00:00Z: nothing is sent to it until "
        "`taskflow-link webhooks retry`",
        "     last error: http_410 at 2026-11-23T10:00:00Z",
        "-  old.example (no longer configured: its pending deliveries wait): 2 pending, "
        "0 delivered, 0 failed, 0 gone",
        # The time of its delivery, not of the error (an earlier attempt met it).
        "3. c.example: 0 pending, 1 delivered, 0 failed, 0 gone",
        "     last error: http_410, then delivered at 2026-11-23T10:00:00Z",
    ]
    assert list(webhook_status_lines([])) == [
        "No webhook URLs are configured (TASKFLOW_LINK_WEBHOOK_URLS), and none were."
    ]


def test_webhook_status_without_the_services_urls_calls_no_endpoint_removed() -> None:
    """Run from a shell or cron job given only the database, the command sees no URL at
    all: it cannot know which endpoints the service sends to, so it names none as no
    longer configured (its deliveries waiting), which would send an operator after a live
    endpoint's backlog."""
    counts: dict[WebhookState | str, int] = dict.fromkeys(WebhookState, 0)
    lines = list(
        webhook_status_lines(
            [EndpointStatus("a.example", False, {**counts, WebhookState.DELIVERED: 3})]
        )
    )
    assert lines == [
        "This process has no TASKFLOW_LINK_WEBHOOK_URLS, so it cannot tell the endpoints the "
        "service sends to from removed ones (run it with the service's settings):",
        "-  a.example: 0 pending, 3 delivered, 0 failed, 0 gone",
    ]


def test_webhook_status_lines_count_a_newer_releases_state_as_written() -> None:
    """A delivery in a state a newer release wrote (a rolling upgrade, a rollback) is counted
    after this version's states, under its own name: `webhooks status` read it into the
    enum and stopped with a traceback."""
    counts: dict[WebhookState | str, int] = dict.fromkeys(WebhookState, 0)
    lines = webhook_status_lines(
        [EndpointStatus("a.example", True, {**counts, WebhookState.PENDING: 2, "paused": 1})]
    )
    assert "1. a.example: 2 pending, 0 delivered, 0 failed, 0 gone, 1 paused" in list(lines)
