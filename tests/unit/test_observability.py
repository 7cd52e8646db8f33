"""Observability in-process: what each outcome counts, /metrics and its token, JSON log lines
(redacted, with the request id), and the request id itself."""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import pytest
from click.testing import CliRunner
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY, CollectorRegistry

from adapters.metrics import PrometheusMetrics
from domain import errors
from domain.model import AccountId, AuthPurpose, EmailKind, OutgoingEmail
from domain.use_cases import (
    AuthCompleted,
    AuthOutcome,
    DeliveryReport,
    LinkConfirmed,
    TicketIssued,
)
from entrypoints.cli import cli
from entrypoints.container import build_container
from entrypoints.instrumentation import Observed, observed, record_outcome
from entrypoints.logs import (
    TEXT_FORMAT,
    TRACE_INDENT,
    AddRequestId,
    JsonFormatter,
    RedactTokens,
    TextFormatter,
    configure_logging,
    make_formatter,
    request_id,
)
from entrypoints.settings import SettingsError, load_settings
from entrypoints.web import create_app
from entrypoints.web.request_id import choose_request_id
from tests.harness import TEST_SECRET_KEY, Browser, Harness, make_settings
from tests.web_support import Client, csrf_token

TOKEN = "metrics-token-Hq3vZ8kLw2Rt"


class Counted:
    """Fresh metrics in a registry of their own, and a way to read them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = PrometheusMetrics(self.registry)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(f"taskflow_link_{name}", labels) or 0.0

    def record(self, name: str, result: object = None, error: BaseException | None = None) -> None:
        record_outcome(self.metrics, name, result, error)


def _auth(purpose: AuthPurpose, outcome: AuthOutcome) -> AuthCompleted:
    return AuthCompleted(purpose, outcome, AccountId.new(), "/account", None)


def _email(kind: EmailKind) -> OutgoingEmail:
    now = datetime.now(UTC)
    return OutgoingEmail(uuid.uuid4(), kind, "someone@example.com", None, now, now)


# -- what each outcome counts -----------------------------------------------------------------


def test_each_way_of_linking_is_counted_with_its_how() -> None:
    c = Counted()
    c.record("complete_discord_auth", _auth(AuthPurpose.TICKET, AuthOutcome.LINKED))
    c.record("complete_discord_auth", _auth(AuthPurpose.LINK, AuthOutcome.LINKED))
    c.record("complete_discord_auth", _auth(AuthPurpose.LINK, AuthOutcome.ALREADY_LINKED))
    c.record("complete_discord_auth", _auth(AuthPurpose.LOGIN, AuthOutcome.CREATED))
    c.record("complete_discord_auth", _auth(AuthPurpose.LOGIN, AuthOutcome.LINKED_AND_SIGNED_IN))
    c.record("complete_discord_auth", _auth(AuthPurpose.REAUTH, AuthOutcome.CONFIRMED))
    c.record("confirm_link_with_email", LinkConfirmed(AccountId.new(), "session", "/"))
    assert c.value("links_created_total", how="ticket") == 1
    assert c.value("links_created_total", how="account_page") == 1  # not the idempotent one
    assert c.value("links_created_total", how="signup") == 1
    assert c.value("links_created_total", how="verified_email") == 1
    assert c.value("links_created_total", how="email_confirmed") == 1
    assert c.value("use_cases_total", use_case="complete_discord_auth", outcome="ok") == 6


def test_refusals_are_counted_by_reason_and_login_refusals_as_sign_ins() -> None:
    c = Counted()
    c.record("complete_discord_auth", error=errors.TicketForAnotherDiscord())
    c.record("start_ticket_link", error=errors.DiscordLinkedElsewhere())
    c.record("complete_discord_auth", error=errors.EmailBelongsToAccount())
    c.record("complete_discord_auth", error=errors.SecretExpired())
    assert c.value("links_refused_total", reason="ticket_for_another_discord") == 1
    assert c.value("links_refused_total", reason="discord_linked_elsewhere") == 1
    # Sign in with Discord refused by the login policy: a sign-in's outcome, not a link asked for.
    assert c.value("links_refused_total", reason="email_belongs_to_account") == 0
    assert c.value("sign_ins_total", method="discord", outcome="email_belongs_to_account") == 1
    assert (
        c.value("use_cases_total", use_case="complete_discord_auth", outcome="secret_expired") == 1
    )


def test_sign_ins_tickets_and_emails() -> None:
    c = Counted()
    c.record("sign_in", object())
    c.record("sign_in", error=errors.InvalidCredentials())
    c.record("sign_up", object())  # a sign-up is not a sign-in
    c.record("complete_discord_auth", _auth(AuthPurpose.LOGIN, AuthOutcome.SIGNED_IN))
    c.record("issue_link_ticket", TicketIssued("t", datetime.now(UTC)))
    c.record("issue_link_ticket", object())  # already linked: no ticket
    c.record("deliver_emails", DeliveryReport())
    c.record(
        "deliver_emails",
        DeliveryReport(
            sent=[_email(EmailKind.VERIFY_EMAIL), _email(EmailKind.VERIFY_EMAIL)],
            retrying=[_email(EmailKind.RESET_PASSWORD)],
            failed=[_email(EmailKind.RESET_PASSWORD)],
        ),
    )
    assert c.value("sign_ins_total", method="password", outcome="signed_in") == 1
    assert c.value("sign_ins_total", method="password", outcome="invalid_credentials") == 1
    assert c.value("sign_ins_total", method="discord", outcome="signed_in") == 1
    assert c.value("link_tickets_issued_total") == 1
    kind = EmailKind.VERIFY_EMAIL.value
    assert c.value("emails_sent_total", kind=kind) == 2
    reset = EmailKind.RESET_PASSWORD.value
    assert c.value("emails_failed_total", kind=reset, outcome="retrying") == 1
    assert c.value("emails_failed_total", kind=reset, outcome="given_up") == 1


async def test_an_observed_use_case_answers_and_fails_as_the_use_case_does() -> None:
    c = Counted()

    class Echo:
        def __init__(self, suffix: str) -> None:
            self.suffix = suffix

        async def execute(self, text: str) -> str:
            if not text:
                raise errors.InvalidInput()
            return text + self.suffix

    make = observed("echo", Echo, c.metrics)
    assert await make("!").execute("hi") == "hi!"
    assert make("?").suffix == "?"
    with pytest.raises(errors.InvalidInput):
        await make("!").execute("")
    assert c.value("use_cases_total", use_case="echo", outcome="ok") == 1
    assert c.value("use_cases_total", use_case="echo", outcome="invalid_input") == 1


async def test_a_broken_recorder_never_breaks_the_use_case(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Works:
        async def execute(self) -> int:
            return 42

    class BrokenMetrics(PrometheusMetrics):
        def use_case(self, name: str, outcome: str) -> None:
            raise RuntimeError("the counter broke")

    make = observed("works", Works, BrokenMetrics(CollectorRegistry()))
    assert await make().execute() == 42
    assert "could not record the outcome of works" in caplog.text


def test_the_container_observes_use_cases_only_when_metrics_are_on() -> None:
    assert isinstance(build_container(make_settings()).issue_link_ticket(), Observed)
    off = build_container(make_settings(metrics=False))
    assert not isinstance(off.issue_link_ticket(), Observed)
    assert off.metrics() is None


# -- /metrics ---------------------------------------------------------------------------------


@pytest.fixture
async def guarded() -> AsyncIterator[Client]:
    h = Harness.build(build_container(make_settings(metrics_token=TOKEN)))
    async with AsyncTestClient(app=create_app(h.container, rate_limit_per_minute=1)) as client:
        yield client


async def test_metrics_need_the_token_when_one_is_set(guarded: Client) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": TOKEN},
    ):
        refused = await guarded.get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "taskflow_link" not in refused.text
    answer = await guarded.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    # prometheus_client's own, once: Litestar added "; charset=utf-8" to it a second time.
    from prometheus_client import CONTENT_TYPE_LATEST

    assert answer.headers["content-type"] == CONTENT_TYPE_LATEST
    assert "taskflow_link_http_requests_total" in answer.text


async def test_metrics_are_not_rate_limited_csrf_protected_listed_or_linked(
    guarded: Client,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # The auth rate limit is 1 a minute here: every scrape still answers.
    for _ in range(5):
        answer = await guarded.get("/metrics", headers=auth)
        assert answer.status_code == 200
        assert "set-cookie" not in answer.headers  # no CSRF cookie: excluded from CSRF
    assert "/metrics" not in (await guarded.get("/schema/openapi.json")).text
    for page in ("/", "/signin", "/signup"):
        assert "/metrics" not in (await guarded.get(page)).text


async def test_refusals_by_middleware_are_counted_with_the_status_they_answer(
    guarded: Client,
) -> None:
    """The rate limit and CSRF refuse by raising, outside the route's own error handling: the
    request metrics counted those answers as 200s. (The counters belong to the process: what
    other tests counted is subtracted.)"""

    async def counts() -> dict[tuple[str, str, str], float]:
        return await _request_counts(guarded)

    before = await counts()
    assert (await guarded.get("/auth/discord/login", follow_redirects=False)).status_code == 302
    assert (await guarded.get("/auth/discord/login", follow_redirects=False)).status_code == 429
    forged = await guarded.post("/signout", data={})  # no CSRF token
    assert forged.status_code == 403
    after = await counts()
    moved = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    assert moved == {
        ("GET", "/auth/discord/login", "302"): 1,
        ("GET", "/auth/discord/login", "429"): 1,
        ("POST", "/signout", "403"): 1,
        ("GET", "/metrics", "200"): 1,  # the first scrape
    }


async def _request_counts(client: Client) -> dict[tuple[str, str, str], float]:
    """``taskflow_link_http_requests_total`` by (method, path, status)."""
    text = (await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text
    found: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("taskflow_link_http_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            method = labels.split('method="')[1].split('"')[0]
            path = labels.split('path="')[1].split('"')[0]
            status = labels.split('status_code="')[1].split('"')[0]
            found[method, path, status] = float(value)
    return found


async def _hang_up_while_sending(client: Client, path: str, headers: dict[str, str]) -> int:
    """A POST that announces 100 bytes, sends 10 and hangs up, straight to the app (the test
    client always sends the whole body); the status the app answered."""
    sent: list[int] = []
    chunks: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"discord_', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    announced = {**headers, "content-type": "application/json", "content-length": "100"}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in announced.items()]
        + [(b"host", b"testserver.local")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver.local", 80),
    }
    await client.app(scope, receive, send)
    return sent[0]


async def test_a_client_that_hangs_up_mid_body_is_no_server_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Litestar raises a 500 for a body cut short by the client: each such POST (to /signin,
    which needs nothing; to the API, with any key) counted in the request metrics and the
    access log as a server error, so anyone could raise the error rate that alerts watch (an
    attacker's review). It is nginx's 499, "client closed request"."""
    h = Harness.build(build_container(make_settings(metrics_token=TOKEN)))
    key = (await h.container.create_api_key().execute("svc")).token
    caplog.set_level(logging.INFO, logger="taskflow_link.access")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        before = await _request_counts(client)
        for path, headers in (
            ("/api/v1/links/lookup", {"authorization": f"Bearer {key}"}),
            ("/signin", {}),  # the form's CSRF check reads it, in middleware
        ):
            assert await _hang_up_while_sending(client, path, headers) == 499
        after = await _request_counts(client)
    moved = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    assert moved == {
        ("POST", "/api/v1/links/lookup", "499"): 1,
        ("POST", "/signin", "499"): 1,
        ("GET", "/metrics", "200"): 1,  # the first scrape
    }
    access = [r.getMessage() for r in caplog.records if r.name == "taskflow_link.access"]
    assert any(line.endswith("POST /api/v1/links/lookup 499") for line in access), access
    assert not any(line.endswith(" 500") for line in access), access


async def test_metrics_label_requests_by_route_never_by_path(h: Harness) -> None:
    async with AsyncTestClient(app=create_app(h.container)) as client:
        ticket = "T" * 43
        assert (await client.get(f"/link/{ticket}")).status_code == 404
        await client.get("/no-such-page-" + "Z" * 20)
        text = (await client.get("/metrics")).text
    assert 'path="/link/{token}"' in text
    assert ticket not in text
    assert "no-such-page" not in text  # a request no route matched is not counted


async def test_metrics_can_be_turned_off() -> None:
    h = Harness.build(build_container(make_settings(metrics=False)))
    async with AsyncTestClient(app=create_app(h.container)) as client:
        assert (await client.get("/metrics")).status_code == 404


async def test_a_metrics_token_read_from_a_file_with_its_line_break_still_matches() -> None:
    """A secret mounted as a file ends with a line break: the presented token (read from
    the header without it) never matched, and every scrape got a 401."""
    h = Harness.build(build_container(make_settings(metrics_token=f"{TOKEN}\n")))
    async with AsyncTestClient(app=create_app(h.container)) as client:
        answer = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200


def test_discord_secrets_read_from_a_file_lose_their_line_break() -> None:
    """With its line break, the bot token failed every call to Discord (aiohttp refuses a
    control character in a header) and the client secret every sign-in with Discord."""
    settings = make_settings(discord_bot_token="bot.to.ken\r\n", discord_client_secret=" cs\n")
    assert settings.discord_bot_token is not None
    assert settings.discord_bot_token.get_secret_value() == "bot.to.ken"
    assert settings.discord_client_secret is not None
    assert settings.discord_client_secret.get_secret_value() == "cs"
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, discord_bot_token="bot\nto")
    assert "TASKFLOW_LINK_DISCORD_BOT_TOKEN: holds a space or a control character" in str(
        refused.value
    )


def test_config_hides_the_metrics_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_METRICS_TOKEN", TOKEN)
    monkeypatch.setenv("TASKFLOW_LINK_LOG_FORMAT", "json")
    shown = CliRunner().invoke(cli, ["config"])
    assert shown.exit_code == 0, shown.output
    assert "TASKFLOW_LINK_METRICS_TOKEN = (set)" in shown.output
    assert "TASKFLOW_LINK_LOG_FORMAT = json" in shown.output
    assert TOKEN not in shown.output


def test_metrics_settings_are_checked() -> None:
    with pytest.raises(SettingsError) as short:
        load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, metrics_token="short-secret")
    assert "TASKFLOW_LINK_METRICS_TOKEN" in str(short.value)
    assert "short-secret" not in str(short.value)  # never echoed
    for guessable in ("a" * 16, "metrics-token-" + "m" * 20, "s3cr3tt0k3n!" * 2):
        with pytest.raises(SettingsError, match="METRICS_TOKEN: looks guessable") as weak:
            load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, metrics_token=guessable)
        assert guessable not in str(weak.value)
    with pytest.raises(SettingsError, match="TASKFLOW_LINK_LOG_FORMAT"):
        load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, log_format="xml")
    public = make_settings(
        public_url="https://link.example.com", email_backend="smtp", smtp_host="mail.example"
    )
    assert any("/metrics answers anyone" in w for w in public.warnings())
    tokened = make_settings(
        public_url="https://link.example.com",
        email_backend="smtp",
        smtp_host="mail.example",
        metrics_token=TOKEN,
    )
    assert not any("/metrics" in w for w in tokened.warnings())


# -- the request id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123_X.y", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("two words", False),
        ("line\nbreak", False),
        ('{"json": 1}', False),
        ("é", False),
    ],
)
def test_a_request_id_is_taken_from_the_client_only_when_short_and_plain(
    sent: str, kept: bool
) -> None:
    chosen = choose_request_id([(b"x-request-id", sent.encode("utf-8"))])
    assert (chosen == sent) is kept
    assert len(chosen) <= 64


def test_fresh_request_ids_are_random_hex_and_never_repeat() -> None:
    """Fresh ids come from batches of random bytes: across several batches each is 32 hex
    digits (16 bytes, as secrets.token_hex(16) writes them) and none comes twice."""
    chosen = [choose_request_id([]) for _ in range(2000)]
    assert all(len(c) == 32 and int(c, 16) >= 0 for c in chosen)
    assert len(set(chosen)) == len(chosen)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_request_ids_of_its_own() -> None:
    """A worker forked from a process that made ids (gunicorn forks its workers) does not hand
    out the ids its parent's batch still holds: the parent's next one is not the child's."""
    choose_request_id([])  # a batch under way in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, choose_request_id([]).encode())
        os._exit(0)
    os.close(write)
    try:
        childs = os.read(read, 64).decode()
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert len(childs) == 32
    assert childs != choose_request_id([])


def test_text_lines_of_one_second_are_timed_as_logging_times_them() -> None:
    """The text format reuses the time of the second it wrote last: each line still reads as
    logging's own formatTime writes it, milliseconds included, across seconds."""
    formatter = make_formatter("text")
    plain = logging.Formatter(TEXT_FORMAT)
    for created in (1_700_000_000.001, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25):
        record = logging.makeLogRecord({"msg": "x", "created": created})
        record.msecs = int((created - int(created)) * 1000)
        assert formatter.formatTime(record) == plain.formatTime(record)
    record = logging.makeLogRecord({"msg": "x", "created": 1_700_000_000.5})
    assert formatter.formatTime(record, "%Y") == plain.formatTime(record, "%Y")


async def test_every_answer_carries_a_request_id(client_app: Client) -> None:
    kept = await client_app.get("/healthz", headers={"X-Request-ID": "from-the-proxy.1"})
    assert kept.headers["x-request-id"] == "from-the-proxy.1"
    replaced = await client_app.get("/no-such-page", headers={"X-Request-ID": "bad id!"})
    assert replaced.status_code == 404
    assert replaced.headers["x-request-id"] not in ("", "bad id!")
    first = (await client_app.get("/healthz")).headers["x-request-id"]
    assert first != (await client_app.get("/healthz")).headers["x-request-id"]


@pytest.fixture
async def client_app(h: Harness) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(h.container)) as test_client:
        yield test_client


# -- log lines --------------------------------------------------------------------------------


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactTokens())
    handler.addFilter(AddRequestId())
    logger = logging.getLogger(f"test.observability.{id(stream)}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.DEBUG)
    return logger, stream


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_and_the_request_id() -> None:
    logger, stream = _logger(JsonFormatter())
    logger.info("outside any request")
    token = request_id.set("req-42")
    try:
        logger.warning("inside %s", "one", extra={"method": "GET", "status": 200})
    finally:
        request_id.reset(token)
    outside, inside = _lines(stream)
    assert outside.keys() == {"time", "level", "logger", "message"}
    assert inside["request_id"] == "req-42"
    assert inside["message"] == "inside one"
    assert (inside["level"], inside["method"], inside["status"]) == ("WARNING", "GET", 200)
    assert inside["logger"] == logger.name
    assert datetime.fromisoformat(inside["time"]).tzinfo is not None


def test_json_lines_keep_interaction_tokens_out() -> None:
    logger, stream = _logger(JsonFormatter())
    secret = "S" * 70
    logger.error("POST /api/v10/interactions/123/%s/callback failed", secret)
    logger.info("payload {'token': '%s'}", secret)
    logger.info("access", extra={"path": f"/webhooks/1/{secret}/messages/@original"})
    try:
        raise RuntimeError(f"PATCH /webhooks/99/{secret} answered 404")
    except RuntimeError:
        logger.exception("the edit failed")
    written = stream.getvalue()
    assert secret not in written
    lines = _lines(stream)
    assert "/interactions/123/<token>/callback" in lines[0]["message"]
    assert lines[2]["path"] == "/webhooks/1/<token>/messages/@original"
    assert "/webhooks/99/<token>" in lines[3]["exception"]


def test_a_line_whose_arguments_do_not_fit_its_message_is_written_without_them() -> None:
    """The redacting filter reads the message: arguments that do not fit it (a number for a
    string, an object that cannot be written) must not raise into the code that logged (a
    request answered 500), nor be printed unredacted by logging's report of a failed line."""
    logger, stream = _logger(TextFormatter())
    secret = "S" * 70

    class Unwritable:
        def __str__(self) -> str:
            raise ValueError(secret)

    logger.warning("retrying %d", f"/interactions/1/{secret}")
    logger.warning("answer %s", Unwritable())
    first, second = stream.getvalue().splitlines()
    assert first.endswith("retrying %d (its arguments could not be written: TypeError)")
    assert second.endswith("answer %s (its arguments could not be written: ValueError)")
    assert secret not in stream.getvalue()


def test_a_json_line_is_one_line_of_printable_characters_whatever_it_holds() -> None:
    """json.dumps escapes the C0 controls, but with ensure_ascii=False it wrote the others as
    they are: NEL (U+0085) and the line and paragraph separators end a line for readers that
    follow Unicode (Python's splitlines, many log viewers), and U+009B starts an escape
    sequence on a terminal that takes 8-bit controls; a name from Discord, a path or a header
    could carry them into a record. Text beyond ASCII that is printable stays as it is."""
    logger, stream = _logger(JsonFormatter())
    forged = '{"level": "CRITICAL", "message": "forged"}'
    held = f"caf\u00e9 \u2603 x\x85{forged}\u2028{forged}\u2029\x9b2J\u202e\U000e0041\x7f"
    logger.info("refused %s", held, extra={"path": f"/{held}"})
    written = stream.getvalue()
    [line] = written.splitlines()
    assert line.isprintable(), line
    assert "café ☃" in line
    entry = json.loads(line)
    assert entry["message"] == f"refused {held}"
    assert entry["path"] == f"/{held}"


def test_text_lines_name_the_request_when_there_is_one() -> None:
    logger, stream = _logger(make_formatter("text"))
    logger.info("no request")
    token = request_id.set("req-7")
    try:
        logger.info("in a request")
    finally:
        request_id.reset(token)
    first, second = stream.getvalue().splitlines()
    assert "[" not in first
    assert f"INFO {logger.name} [req-7] in a request" in second


def test_a_text_line_is_one_line_whatever_its_message_holds() -> None:
    logger, stream = _logger(make_formatter("text"))
    logger.info("refused %s", "/x\r\n2026-01-01 00:00:00,000 CRITICAL forged\x1b[2J")
    try:
        # An exception's text can hold what a request carried, line breaks included.
        raise ValueError("boom\n2026-01-01 00:00:00,000 CRITICAL forged too\r\x1b[2J")
    except ValueError:
        logger.exception("with a traceback")
    text = stream.getvalue()
    lines = text.splitlines()
    assert lines[0].endswith("refused /x\\r\\n2026-01-01 00:00:00,000 CRITICAL forged\\x1b[2J")
    assert "\x1b" not in text
    assert "\r" not in text
    # Two records, two lines at the left edge; the traceback keeps its lines, each indented.
    records = [line for line in lines if not line.startswith(TRACE_INDENT)]
    assert len(records) == 2, lines
    assert records[1].endswith("with a traceback")
    assert f"\n{TRACE_INDENT}Traceback (most recent call last):\n" in text
    assert f"\n{TRACE_INDENT}ValueError: boom\n" in text
    assert f"\n{TRACE_INDENT}2026-01-01 00:00:00,000 CRITICAL forged too\\r\\x1b[2J" in text


async def test_an_anonymous_client_cannot_forge_a_log_line_through_a_refused_path() -> None:
    """Found by an attacker's review: the access log escaped the path, but the "refused
    <method> <path>: <code>" line wrote it decoded. Anyone with a CSRF token from /signin
    could start a forged line (%0D%0A) or send an escape sequence (%1B) to a terminal."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter("text"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    forged = "2026-11-23 10:00:00,000 CRITICAL taskflow_link.web forged"
    evil = "x%0D%0A" + forged.replace(" ", "%20") + "%1B[2J"
    h = Harness.build(build_container(make_settings()))
    try:
        async with AsyncTestClient(app=create_app(h.container)) as client:
            token = csrf_token((await client.get("/signin")).text)
            refused = await client.post(
                f"/account/sessions/{evil}/end", data={"_csrf_token": token}
            )
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        h.container.unwire()
    assert refused.status_code == 404  # no such session
    lines = stream.getvalue().splitlines()
    assert any("refused POST /account/sessions/x\\r\\n" in line for line in lines), lines
    assert not any(line.startswith(forged) for line in lines)
    assert "\x1b" not in stream.getvalue()


async def test_the_lean_request_metrics_count_as_litestars_own_middleware() -> None:
    """``RequestMetrics`` caches each label set's series; what it records must be what
    Litestar's stock middleware records for the same requests (200, 404, 500)."""
    from litestar import Litestar, get
    from litestar.exceptions import NotFoundException
    from litestar.params import FromPath
    from litestar.plugins.prometheus import PrometheusConfig
    from prometheus_client import REGISTRY

    from entrypoints.web.metrics import RequestMetrics

    @get("/ok", sync_to_thread=False)
    def ok() -> str:
        return "ok"

    @get("/things/{thing:str}", sync_to_thread=False)
    def thing(thing: FromPath[str]) -> str:
        raise NotFoundException(thing)

    @get("/boom", sync_to_thread=False)
    def boom() -> str:
        raise RuntimeError("boom")

    def app(prefix: str, middleware_class: type) -> Litestar:
        config = PrometheusConfig(
            app_name="t", prefix=prefix, group_path=True, middleware_class=middleware_class
        )
        return Litestar([ok, thing, boom], middleware=[config.middleware], logging_config=None)

    from litestar.plugins.prometheus import PrometheusMiddleware

    seen: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for prefix, cls in (("stock_probe", PrometheusMiddleware), ("lean_probe", RequestMetrics)):
        async with AsyncTestClient(app=app(prefix, cls)) as client:
            for path in ("/ok", "/ok", "/things/a", "/things/b", "/boom"):
                await client.get(path)
        seen[prefix] = {
            (sample.name.removeprefix(prefix), tuple(sorted(sample.labels.items()))): sample.value
            for family in REGISTRY.collect()
            if family.name.startswith(prefix)
            for sample in family.samples
            if not sample.name.endswith(("_sum", "_created")) and "_bucket" not in sample.name
        }
    assert seen["lean_probe"] == seen["stock_probe"]
    counts = {k: v for k, v in seen["lean_probe"].items() if k[0] == "_requests_total"}
    assert sorted(counts.values()) == [1.0, 2.0, 2.0]  # 500 once, 404 twice, 200 twice


def test_linked_roles_round_trips_are_counted_as_links_and_sign_ins() -> None:
    c = Counted()
    c.record("complete_discord_auth", _auth(AuthPurpose.ROLES_LINK, AuthOutcome.LINKED))
    c.record("complete_discord_auth", _auth(AuthPurpose.ROLES, AuthOutcome.SIGNED_IN))
    c.record("complete_discord_auth", _auth(AuthPurpose.ROLES, AuthOutcome.ALREADY_LINKED))
    assert c.value("links_created_total", how="linked_role") == 1
    assert c.value("sign_ins_total", method="discord", outcome="signed_in") == 1


def test_records_skip_what_no_format_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure_logging turns off the caller lookup (a walk up the stack on every line, the
    access log's too) and the process name; lines read the same. The process and thread ids
    stay: gunicorn's formatter writes "[%(process)d]", and failed at every line of its uvicorn
    workers without it (helper-93's review)."""
    root = logging.getLogger()
    # As a process starts (CLI commands run in this process may have configured it already).
    monkeypatch.setattr(logging, "_srcfile", logging.addLevelName.__code__.co_filename)
    for name in ("logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, True)
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    configure_logging("INFO")
    records: list[logging.LogRecord] = []
    logger, stream = _logger(make_formatter("text"))

    def keep(record: logging.LogRecord) -> bool:
        records.append(record)
        return True

    logger.addFilter(keep)
    logger.info("a line %s", "here")
    (record,) = records
    assert (record.funcName, record.lineno) == ("(unknown function)", 0)
    assert (record.processName, record.process) == (None, os.getpid())
    assert stream.getvalue().rstrip().endswith(f"INFO {logger.name} a line here")
    gunicorns = logging.Formatter("%(asctime)s [%(process)d] [%(thread)d] %(message)s")
    assert gunicorns.format(record).endswith(f"[{os.getpid()}] [{record.thread}] a line here")


async def test_debug_logs_carry_no_sqlite_statement_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """At DEBUG, aiosqlite logs every call with its SQL and bound values (on SQLite, every
    email address, password hash and token digest the service writes or looks up): the
    process's logging keeps it at INFO."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    quiet = logging.getLogger("aiosqlite")
    monkeypatch.setattr(quiet, "level", quiet.level)
    configure_logging("DEBUG")
    (handler,) = root.handlers
    stream = io.StringIO()
    monkeypatch.setattr(handler, "stream", stream)
    async with aiosqlite.connect(tmp_path / "t.db") as db:
        await db.execute("CREATE TABLE t (email TEXT)")
        await db.execute("INSERT INTO t VALUES (?)", ("someone@example.com",))
    logging.getLogger("taskflow_link.test").debug("our own DEBUG lines still show")
    assert "someone@example.com" not in stream.getvalue()
    assert "our own DEBUG lines still show" in stream.getvalue()


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_metrics_token_is_unset_and_the_warning_says_so(blank: str) -> None:
    """A blank secret means unset, as .env.example's blank lines do (a `METRICS_TOKEN=` left
    blank, or `${METRICS_TOKEN}` of a variable the shell does not have): /metrics is open.
    The warning at start said the token "is unset" to an operator who had written the line,
    and who looked for a typo in its name."""
    settings = make_settings(
        public_url="https://link.example.com",
        email_backend="smtp",
        smtp_host="mail.example",
        metrics_token=blank,
    )
    assert settings.metrics_token is None
    said = [w for w in settings.warnings() if "/metrics answers anyone" in w]
    assert said
    assert "TASKFLOW_LINK_METRICS_TOKEN is unset or blank" in said[0]


@pytest.mark.parametrize(
    "token",
    [
        # Found by helper-164's review: the guessable-key rules were made for 32 characters
        # and more, and refused about 1 in 70 `openssl rand -hex 8` tokens (fewer than 8
        # different digits) and 1 in 4 random 16-digit numbers.
        "7c1e97b2c1e7b297",
        "5150535405165728",  # six 5s: more than a third, as 1 random 16-digit number in 30
        "4812093315720948",
    ],
)
def test_a_random_16_character_metrics_token_is_not_refused(token: str) -> None:
    settings = load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, metrics_token=token)
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == token


async def test_a_sign_in_callback_loaded_twice_counts_its_sign_up_once(h: Harness) -> None:
    """Its second load (a double click on Authorize, a reload) is handed the session the first
    one made, or told to wait for it: nothing is made again, so nothing is counted again. It
    counted a second sign-up, a second link created, and a sign-in 'confirming'."""
    c = Counted()
    profile = h.discord_user(7301, username="dora", email="dora@example.com")
    browser = Browser()
    started = await h.start_login(browser)
    approval = h.discord.approve(started.authorize_url, profile.id)
    loads: list[AuthCompleted] = []
    for _ in range(2):  # the first one's answer never reached the browser
        loads.append(
            await h.complete(
                Browser(bindings=browser.bindings), state=approval.state, code=approval.code
            )
        )
    for done in loads:
        c.record("complete_discord_auth", done)
    assert loads[1].session_token == loads[0].session_token  # handed over
    assert c.value("links_created_total", how="signup") == 1
    assert c.value("sign_ins_total", method="discord", outcome="created") == 1


def _from(app: Any, address: str) -> Any:
    """``app`` as a client at ``address`` reaches it (the test client is ``testclient``)."""

    async def connected(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["client"] = (address, 40000)
        await app(scope, receive, send)

    return connected


@pytest.mark.parametrize(
    ("address", "headers"),
    [
        ("127.0.0.1", {"X-Forwarded-For": "198.51.100.7"}),  # through a proxy on this host
        ("10.0.0.2", {"Forwarded": "for=198.51.100.7"}),
        ("172.17.0.1", {"X-Real-IP": "198.51.100.7"}),
        # A proxy that names the client in none of those three (HAProxy without
        # `option forwardedfor`, a CDN's own header) still says it is one.
        ("10.0.0.2", {"X-Forwarded-Proto": "https"}),
        ("10.0.0.2", {"Via": "1.1 google"}),
        ("10.0.0.2", {"CF-Connecting-IP": "198.51.100.7"}),
        ("10.0.0.2", {"True-Client-IP": "198.51.100.7"}),
        ("93.184.216.34", {}),  # straight from the internet
        ("::ffff:93.184.216.34", {}),
        # Tunnelled or translated from the internet, in ranges Python's is_global calls
        # not global: Teredo (2001:0::/32, a public client's IPv4 in its last bits) and a
        # local-use NAT64 prefix (64:ff9b:1::/48) carrying a public IPv4 address.
        ("2001:0:4136:e378:8000:63bf:a247:2bdd", {}),
        ("64:ff9b:1::5db8:d822", {}),
    ],
)
async def test_metrics_without_a_token_answer_no_one_from_the_internet(
    h: Harness, address: str, headers: dict[str, str]
) -> None:
    """Without a token, /metrics answered anyone who reached it, and its counters move with
    what happens: a stranger asking for a password reset for an address, then reading
    ``emails_sent_total{kind="reset_password"}`` (or the email worker's passes, woken by the
    queued email), learnt whether an account has that address. Without a token it now
    answers only a scrape made straight from this machine or a private network, never one a
    proxy forwarded (the README's "keep /metrics from the internet at the proxy", kept by
    the service too); a token lets any client that has it in, as before."""
    app = create_app(h.container)
    async with AsyncTestClient(app=_from(app, address)) as stranger:
        refused = await stranger.get("/metrics", headers=headers)
        assert refused.status_code == 403, refused.text
        assert "TASKFLOW_LINK_METRICS_TOKEN" in refused.text
        assert "taskflow_link" not in refused.text.replace("TASKFLOW_LINK", "")
    for scraper in ("127.0.0.1", "10.1.2.3", "192.168.0.9", "::1", "fd00::5"):
        async with AsyncTestClient(app=_from(app, scraper)) as prometheus:
            answer = await prometheus.get("/metrics")
            assert answer.status_code == 200, (scraper, answer.text)
    guarded = create_app(
        Harness.build(build_container(make_settings(metrics_token=TOKEN))).container
    )
    async with AsyncTestClient(app=_from(guarded, address)) as holder:
        auth = {"Authorization": f"Bearer {TOKEN}", **headers}
        assert (await holder.get("/metrics", headers=auth)).status_code == 200


async def test_the_front_door_refuses_a_bad_host_uncounted_and_counts_the_rest(
    client_app: Client,
) -> None:
    """The Host check and the request metrics, one layer (``front_door``): a bad Host is
    refused before anything counts it, with its request id as every answer; a request it lets
    through is counted once."""

    def counted(status: int) -> float:
        labels = {"method": "GET", "path": "/healthz", "status_code": str(status)}
        labels["app_name"] = "taskflow-link"
        return REGISTRY.get_sample_value("taskflow_link_http_requests_total", labels) or 0.0

    refused_before, served_before = counted(400), counted(200)
    refused = await client_app.get("/healthz", headers={"host": "x:abc"})
    assert refused.status_code == 400
    assert len(refused.headers.get_list("x-request-id")) == 1
    served = await client_app.get("/healthz", headers={"X-Request-ID": "door.1"})
    assert served.status_code == 200
    assert served.headers.get_list("x-request-id") == ["door.1"]
    assert (counted(400), counted(200)) == (refused_before, served_before + 1)
