"""Settings, the composition root and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import pickle
import sqlite3
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import hikari
import pytest
import uvicorn
from click.testing import CliRunner
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect
from sqlalchemy.engine import URL

import entrypoints.asgi
import entrypoints.emulator
import entrypoints.settings as settings_module
from adapters.memory import MemoryUnitOfWork
from adapters.tokens import SecretsTokenIssuer
from domain.use_cases import SignUp
from entrypoints.bot.bridge import describe_http_error
from entrypoints.bot.context import CommandTimedOut, Deadline
from entrypoints.bot.inband import InBandRestClient
from entrypoints.cli import cli
from entrypoints.container import build_container
from entrypoints.instrumentation import Observed
from entrypoints.logs import QUIET_BELOW_INFO
from entrypoints.settings import (
    SettingsError,
    database_url_without_password,
    load_settings,
    without_password,
)
from tests.bot_support import WAIT_SECONDS, wait_until
from tests.certificates import self_signed
from tests.harness import TEST_SECRET_KEY, fail_sign_ins, make_settings, webhook_secret
from tests.servers import free_port, reserved_port


def _by_hand(database: Path, *statements: str) -> None:
    """Run ``statements`` on the SQLite file in one transaction: what another program, a
    later release or an operator wrote there."""
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        for statement in statements:
            connection.execute(statement)


def test_missing_secret_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKFLOW_LINK_SECRET_KEY", raising=False)
    with pytest.raises(SettingsError) as failed:
        load_settings(_env_file=None)
    assert "TASKFLOW_LINK_SECRET_KEY: is required but not set" in str(failed.value)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TASKFLOW_LINK_SECRET_KEY", "sh0rt-v4lue", "TASKFLOW_LINK_SECRET_KEY"),
        ("TASKFLOW_LINK_PUBLIC_URL", "not a url", "TASKFLOW_LINK_PUBLIC_URL"),
        ("TASKFLOW_LINK_STORAGE", "mongodb", "TASKFLOW_LINK_STORAGE"),
        ("TASKFLOW_LINK_DISCORD_PUBLIC_KEY", "zz", "TASKFLOW_LINK_DISCORD_PUBLIC_KEY"),
        ("TASKFLOW_LINK_SESSION_TTL_DAYS", "0", "TASKFLOW_LINK_SESSION_TTL_DAYS"),
    ],
)
def test_invalid_settings_name_the_variable_and_hide_the_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as failed:
        load_settings(_env_file=None)
    assert expected in str(failed.value)
    if variable == "TASKFLOW_LINK_SECRET_KEY":
        assert value not in str(failed.value).replace(expected, "")


@pytest.mark.parametrize(
    ("variable", "value", "needed"),
    [
        ("TASKFLOW_LINK_SECRET_KEY", "", "is empty: it needs at least 32 characters"),
        ("TASKFLOW_LINK_SECRET_KEY", "Xq7-Lp2", "is too short: it needs at least 32 characters"),
        ("TASKFLOW_LINK_METRICS_TOKEN", "Zr4-Wm9", "is too short: it needs at least 16 characters"),
    ],
)
def test_a_short_secret_is_counted_in_characters_and_says_how_to_make_one(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, needed: str
) -> None:
    """Found by helper-63's review: a blank secret key gave pydantic's "Value should have at
    least 32 items after validation, not 0"."""
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as failed:
        load_settings(_env_file=None)
    message = str(failed.value)
    assert f"{variable}: {needed}; make one with python3 -c 'import secrets;" in message
    assert "items" not in message
    if value:
        assert value not in message


def test_settings_from_environment_and_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    monkeypatch.delenv("TASKFLOW_LINK_SECRET_KEY", raising=False)
    with open(".env", "w") as env_file:
        env_file.write(f"TASKFLOW_LINK_SECRET_KEY={TEST_SECRET_KEY}\n")
        env_file.write("TASKFLOW_LINK_PUBLIC_URL=https://link.example.com\n")
        env_file.write("TASKFLOW_LINK_EMAIL_BACKEND=smtp\nTASKFLOW_LINK_SMTP_HOST=mail\n")
    monkeypatch.setenv("TASKFLOW_LINK_SESSION_TTL_DAYS", "3")
    settings = load_settings()
    assert settings.secret_key.get_secret_value() == TEST_SECRET_KEY
    assert str(settings.public_url) == "https://link.example.com/"
    assert settings.session_ttl_days == 3


def test_a_misspelt_variable_is_named_with_the_setting_it_looks_like_never_its_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """TASKFLOW_LINK_DATABSE_URL was ignored without a word: `config`, and every command,
    went on with the default SQLite file beside the Postgres meant. Names from the
    environment and from .env are said at start of every command, with the setting each
    looks like; never a value (a password in a URL, or a .env line `NAME:secret=…`, which
    the .env reader takes as a name up to the `=`)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DATABSE_URL", "postgresql+asyncpg://u:hunter1@db/link")
    monkeypatch.setenv("taskflow_link_loglevel", "DEBUG")
    monkeypatch.setenv("TASKFLOW_LINK_WHATEVER", "hunter2")
    monkeypatch.setenv("TASKFLOW_LINK_TEST_POSTGRES_IMAGE", "the test suite's own")
    (tmp_path / ".env").write_text(
        "TASKFLOW_LINK_SMTP_PASWORD=hunter3\n"
        "TASKFLOW_LINK_SMTP_PASSWORD:hunter4=x\n"
        "export TASKFLOW_LINK_DATABSE_URL=postgresql+asyncpg://u:hunter5@db/link\n"
        "POSTGRES_PASSWORD=compose's own\n"
    )
    for argv in (["config"], ["api-key", "list"], ["db", "current"], ["bot", "sync"]):
        done = CliRunner().invoke(cli, argv)
        warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
        assert warnings[:5] == [
            "warning: TASKFLOW_LINK_DATABSE_URL (in the environment and in the .env file) is "
            "not a setting of taskflow-link and is ignored: did you mean "
            "TASKFLOW_LINK_DATABASE_URL?",
            "warning: TASKFLOW_LINK_LOGLEVEL (in the environment) is not a setting of "
            "taskflow-link and is ignored: did you mean TASKFLOW_LINK_LOG_LEVEL?",
            "warning: TASKFLOW_LINK_SMTP_PASSWORD… (a name going on with a character no "
            "setting's name has, in the .env file) is not a setting of taskflow-link and is "
            "ignored: did you mean TASKFLOW_LINK_SMTP_PASSWORD?",
            "warning: TASKFLOW_LINK_SMTP_PASWORD (in the .env file) is not a setting of "
            "taskflow-link and is ignored: did you mean TASKFLOW_LINK_SMTP_PASSWORD?",
            "warning: TASKFLOW_LINK_WHATEVER (in the environment) is not a setting of "
            "taskflow-link and is ignored: see the README's configuration table for the "
            "settings there are",
        ], argv
        assert "hunter" not in done.output, argv
        assert "TEST_POSTGRES_IMAGE" not in done.output
        assert "POSTGRES_PASSWORD" not in done.output


def test_only_a_real_help_request_skips_the_warnings_about_unknown_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A command's help reads no settings, so it says nothing of them; but ``-h`` as an
    option's value or an argument after ``--`` is no help request: the command runs, and was
    run without its warnings (any ``-h`` or ``--help`` after the command's name counted)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DATABSE_URL", "sqlite+aiosqlite:///elsewhere.db")
    warning = (
        "warning: TASKFLOW_LINK_DATABSE_URL (in the environment) is not a setting of "
        "taskflow-link and is ignored: did you mean TASKFLOW_LINK_DATABASE_URL?"
    )
    for argv in (
        ["api-key", "create", "--", "-h"],
        ["api-key", "create", "--", "--help"],
        ["api-key", "create", "--scope", "links:read", "--", "x", "-h"],
        ["audit", "--login", "-h"],
        ["audit", "--login=--help"],
        ["email", "retry", "--id", "--help"],
        ["config", "--bogus", "--help"],  # a usage error, before any help
    ):
        done = CliRunner().invoke(cli, argv)
        assert warning in done.stderr.splitlines(), argv
        assert "Usage:" not in done.stdout, argv
    for argv in (
        ["api-key", "create", "-h"],
        ["api-key", "create", "x", "--help"],
        ["api-key", "create", "--scope", "links:read", "-h", "--", "x"],
        ["api-key", "-h"],
        ["audit", "--login", "x", "--help"],
        ["db", "upgrade", "-h"],
    ):
        done = CliRunner().invoke(cli, argv)
        assert (done.exit_code, done.stderr) == (0, ""), argv
        assert done.stdout.startswith("Usage: "), argv


def test_a_misspelt_variable_is_said_when_the_service_cannot_start_for_want_of_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`serve` and `bot` log the names once logging is set up; a setting missing for want of
    its misspelt variable stops them before that, so the names come with the error."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TASKFLOW_LINK_SECRET_KEY", raising=False)
    monkeypatch.setenv("TASKFLOW_LINK_SECRT_KEY", TEST_SECRET_KEY)
    for argv in (["serve"], ["bot"]):
        done = CliRunner().invoke(cli, argv)
        assert isinstance(done.exception, SettingsError), argv
        assert done.stderr.startswith(
            "warning: TASKFLOW_LINK_SECRT_KEY (in the environment) is not a setting of "
            "taskflow-link and is ignored: did you mean TASKFLOW_LINK_SECRET_KEY?"
        ), argv
        assert TEST_SECRET_KEY not in done.output

    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_TOKEN", "hunter2")
    logged = CliRunner().invoke(cli, ["bot"])  # no bot token: stops before logging starts
    assert isinstance(logged.exception, SettingsError)
    assert logged.stderr.startswith(
        "warning: TASKFLOW_LINK_DISCORD_TOKEN (in the environment) is not a setting of "
        "taskflow-link and is ignored: did you mean TASKFLOW_LINK_DISCORD_BOT_TOKEN?"
    )
    assert "hunter2" not in logged.output + caplog.text


def test_the_env_example_names_only_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every TASKFLOW_LINK_ name in .env.example, commented out or not, is a setting: a copy
    with its lines uncommented starts without a warning."""
    from entrypoints.settings import unknown_variables

    example = (Path(__file__).parents[2] / ".env.example").read_text(encoding="utf-8")
    uncommented = [line.lstrip("# ") for line in example.splitlines()]
    (tmp_path / ".env").write_text(
        "\n".join(line for line in uncommented if line.startswith("TASKFLOW_LINK_")) + "\n"
    )
    monkeypatch.chdir(tmp_path)
    assert unknown_variables(environ={}) == []
    assert unknown_variables(environ={"TASKFLOW_LINK_PUBLIC_URI": "x"}) == [
        "TASKFLOW_LINK_PUBLIC_URI (in the environment) is not a setting of taskflow-link and "
        "is ignored: did you mean TASKFLOW_LINK_PUBLIC_URL?"
    ]


def test_require_names_missing_settings() -> None:
    with pytest.raises(SettingsError) as failed:
        make_settings().require("discord_client_id", "discord_bot_token")
    assert "TASKFLOW_LINK_DISCORD_CLIENT_ID, TASKFLOW_LINK_DISCORD_BOT_TOKEN" in str(failed.value)


def test_container_wires_the_memory_adapter_set() -> None:
    container = build_container(make_settings(storage="memory"))
    assert isinstance(container.uow()(), MemoryUnitOfWork)
    made: object = container.sign_up()
    assert isinstance(made, Observed)  # observed: its outcome counted
    assert isinstance(made.use_case, SignUp)
    assert container.sign_up() is not container.sign_up()  # use cases are per call
    assert container.uow() is container.uow()  # infrastructure is shared
    unobserved = build_container(make_settings(storage="memory", metrics=False))
    assert isinstance(unobserved.sign_up(), SignUp)  # nothing counted: nothing wrapped


def test_cli_help_and_config_check(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "config" in result.output

    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    result = runner.invoke(cli, ["config"])
    assert result.exit_code == 0
    assert "TASKFLOW_LINK_SECRET_KEY = (set)" in result.output
    assert TEST_SECRET_KEY not in result.output


def test_the_http_answer_deadline_must_come_after_the_reply_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_REPLY_DEADLINE_SECONDS", "2")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_ANSWER_DEADLINE_SECONDS", "1.5")
    with pytest.raises(SettingsError) as failed:
        load_settings(_env_file=None)
    assert "TASKFLOW_LINK_DISCORD_ANSWER_DEADLINE_SECONDS must be above" in str(failed.value)
    assert "Value error" not in str(failed.value)


def test_the_deferred_deadline_is_within_what_discord_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_DEFERRED_DEADLINE_SECONDS", "841")
    with pytest.raises(SettingsError) as failed:  # Discord takes edits for 15 minutes
        load_settings(_env_file=None)
    assert "TASKFLOW_LINK_DISCORD_DEFERRED_DEADLINE_SECONDS" in str(failed.value)


def test_late_interactions_are_those_past_discords_3_seconds_and_2_for_the_clocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    assert load_settings(_env_file=None).discord_late_interaction_seconds == 5.0
    # Below Discord's 3 s it would refuse what Discord still waits for; past its 15 minutes
    # (the token's life, and a gateway claim's) it would let replays through.
    for refused in ("2.9", "901"):
        monkeypatch.setenv("TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS", refused)
        with pytest.raises(SettingsError) as failed:
            load_settings(_env_file=None)
        assert "TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS" in str(failed.value)


def test_a_deferred_deadline_below_the_reply_deadline_counts_as_the_reply_deadline() -> None:
    assert Deadline(20.0, defer_after=1.0, deferred=15.0).deferred == 20.0
    assert Deadline(2.0, defer_after=1.0, deferred=15.0).deferred == 15.0


class _Interaction:
    """What ``Deadline`` reads of a command's context: its interaction, and ``defer``."""

    def __init__(self, created: datetime) -> None:
        self.interaction = SimpleNamespace(
            id=hikari.Snowflake.from_datetime(created), command_name="whoami"
        )
        self.deferred = 0

    async def defer(self, *, ephemeral: bool = False) -> None:
        self.deferred += 1


class _FixedClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


async def test_the_defer_delay_counts_from_the_interactions_creation() -> None:
    """HTTP interactions and the gateway alike: one that reached the service 2.5 s after
    Discord created it says "thinking…" before its command starts (the 1 s delay is over),
    not 1 s after its arrival, when Discord's 3 s are over too."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    ctx = _Interaction(created)
    seen: list[int] = []

    async def work() -> str:
        seen.append(ctx.deferred)
        return "done"

    clock = _FixedClock(created + timedelta(seconds=2.5))
    deadline = Deadline(20.0, defer_after=1.0, deferred=30.0, clock=clock)
    assert await deadline.run(ctx, work()) == "done"  # type: ignore[arg-type]
    assert seen == [1]  # "thinking…" came first
    assert ctx.deferred == 1


async def test_a_command_whose_reply_deadline_is_over_at_its_start_is_not_run() -> None:
    """Without a defer delay: the reply deadline counts from the creation too, and one that
    is over leaves nothing to answer in time with."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    ctx = _Interaction(created)
    ran: list[bool] = []

    async def work() -> None:
        ran.append(True)

    clock = _FixedClock(created + timedelta(seconds=2.5))
    with pytest.raises(CommandTimedOut, match=r"\(/whoami\) not run: it came 2\.5 s"):
        await Deadline(2.0, clock=clock).run(ctx, work())  # type: ignore[arg-type]
    assert ran == []
    assert ctx.deferred == 0


async def test_the_deferred_deadline_counts_from_the_interactions_creation() -> None:
    """As the README and the setting say ("15 s from the interaction"): it counted from the
    command's start, so one that came late had the whole deferred deadline again, its reply
    (or "something went wrong") due after the token's 15 minutes. Here the interaction is 850 s
    old with 840 s to finish: its time is over at once."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    ctx = _Interaction(created)
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    clock = _FixedClock(created + timedelta(seconds=850))
    deadline = Deadline(2.0, defer_after=1.0, deferred=840.0, clock=clock)
    with pytest.raises(CommandTimedOut, match="no result after 840 s"):
        # Bounded only so that the old behaviour (840 s more) fails instead of hanging.
        await asyncio.wait_for(deadline.run(ctx, hangs()), WAIT_SECONDS)  # type: ignore[arg-type]
    assert ctx.deferred == 1


@pytest.mark.parametrize(("late", "deferred"), [("900", "15"), ("61", "840"), ("100", "800.5")])
def test_late_interactions_and_the_deferred_deadline_stay_within_the_tokens_15_minutes(
    monkeypatch: pytest.MonkeyPatch, late: str, deferred: str
) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS", late)
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_DEFERRED_DEADLINE_SECONDS", deferred)
    with pytest.raises(SettingsError) as failed:
        load_settings(_env_file=None)
    message = str(failed.value)
    assert f"TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS ({late})" in message
    assert f"TASKFLOW_LINK_DISCORD_DEFERRED_DEADLINE_SECONDS ({deferred})" in message
    assert "15 minutes an interaction's token lives" in message
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS", "60")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_DEFERRED_DEADLINE_SECONDS", "840")
    assert load_settings(_env_file=None).discord_deferred_deadline_seconds == 840


async def test_a_reply_the_http_answer_missed_is_sent_as_an_edit_of_the_fallback() -> None:
    """The other order of a stalled event loop: the command's reply was handed to the HTTP
    answer just before its deadline cancelled it, and "something went wrong" went instead;
    the reply, given up for sent, was lost. Now it edits that message."""
    edits: list[dict[str, object]] = []

    class Interaction:
        id = hikari.Snowflake(1)

        async def edit_initial_response(self, content: object, **kwargs: object) -> None:
            edits.append({"content": content, **kwargs})

    bot = hikari.RESTBot("token", "Bot", banner=None, logs=None)
    client = InBandRestClient(bot, default_enabled_guilds=(), sync_commands=False, defer_after=1)
    reply = hikari.impl.InteractionMessageBuilder(hikari.ResponseType.MESSAGE_CREATE, "Done")
    reply.set_user_mentions(False)
    answer: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    answer.set_result(reply)
    client._answered_without(Interaction(), answer)  # type: ignore[arg-type]
    await wait_until(lambda: edits)
    [edit] = edits
    assert edit["content"] == "Done"
    assert edit["user_mentions"] is False


@pytest.mark.parametrize(
    "public_url", ["https://link.example.com", "http://10.0.0.5:8000", "http://taskflow.example"]
)
def test_the_outbox_is_refused_with_a_public_url_that_is_not_loopback(public_url: str) -> None:
    """The issue: the outbox page next to an https URL started with only a warning, and showed
    everyone's reset links to anyone."""
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, public_url=public_url)
    assert "TASKFLOW_LINK_EMAIL_BACKEND=smtp" in str(refused.value)
    assert "TASKFLOW_LINK_DEVELOPMENT=true" in str(refused.value)
    allowed = load_settings(
        _env_file=None, secret_key=TEST_SECRET_KEY, public_url=public_url, development=True
    )
    assert allowed.email_backend == "outbox"


@pytest.mark.parametrize(
    "public_url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"]
)
def test_the_outbox_is_fine_on_this_machine(public_url: str) -> None:
    settings = load_settings(
        _env_file=None, secret_key=TEST_SECRET_KEY, public_url=public_url, email_outbox_page=True
    )
    assert settings.email_outbox_page


@pytest.mark.parametrize("name", ["discord_api_url", "discord_authorize_url"])
def test_discord_urls_must_be_https_unless_loopback(name: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(
            _env_file=None, secret_key=TEST_SECRET_KEY, **{name: "http://discord.test/api/v10"}
        )
    assert f"TASKFLOW_LINK_{name.upper()} must use https" in str(refused.value)
    # "localhost." is resolved by the network's DNS (glibc finds only "localhost" in
    # /etc/hosts): the client secret would go in clear wherever its answer points.
    with pytest.raises(SettingsError) as refused:
        load_settings(
            _env_file=None, secret_key=TEST_SECRET_KEY, **{name: "http://localhost.:8001/api/v10"}
        )
    assert f"TASKFLOW_LINK_{name.upper()} must use https" in str(refused.value)
    local = load_settings(
        _env_file=None, secret_key=TEST_SECRET_KEY, **{name: "http://127.0.0.1:8001/api/v10"}
    )
    assert any("points at 127.0.0.1, not discord.com" in w for w in local.warnings())
    real = load_settings(_env_file=None, secret_key=TEST_SECRET_KEY)
    assert not any("discord.com" in w for w in real.warnings())


_DISCORD_URLS = {
    "discord_api_url": "https://discord.com/api/v10",
    "discord_authorize_url": "https://discord.com/oauth2/authorize",
    "discord_cdn_url": "https://cdn.discordapp.com",
}


@pytest.mark.parametrize("name", sorted(_DISCORD_URLS))
@pytest.mark.parametrize("user", ["ops:s3cr3t-pw@", ":s3cr3t-pw@", "ops@"])
def test_a_discord_url_with_a_user_or_password_is_refused_without_showing_it(
    name: str, user: str
) -> None:
    """Each was taken: the authorize URL is every browser's redirect to sign in with Discord
    (its password in every Location header), the CDN's is in every page showing an avatar,
    and the API's went with the bot token to whatever host it names."""
    url = _DISCORD_URLS[name].replace("https://", f"https://{user}")
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, **{name: url})
    assert f"TASKFLOW_LINK_{name.upper()}: must have no user name or password" in str(refused.value)
    assert "s3cr3t-pw" not in str(refused.value)
    assert "ops" not in str(refused.value)
    [said] = [line for line in str(refused.value).splitlines() if name.upper() in line]
    assert said.endswith(_WHY_NO_USER[name])


# Why each may hold no user part, in its own words: the API's URL said "browsers are sent to
# it (the sign-in redirect, the pages' avatars)", which only the other two are.
_WHY_NO_USER = {
    "discord_api_url": "the service's own calls to Discord's API go to it, with their own "
    "credentials (the client secret, the bot token, members' tokens)",
    "discord_authorize_url": "browsers are sent to it (every sign-in with Discord is "
    "redirected there, the URL in its Location header)",
    "discord_cdn_url": "browsers load the avatars from it (its URL is in every page that "
    "shows one)",
}
# What the service adds to each: paths (the API, the CDN) or its own query (authorize).
_ADDED = {
    "discord_api_url": "the service adds the paths of its calls to it (/oauth2/token, "
    "/users/@me, …)",
    "discord_authorize_url": "the service adds the sign-in's own query to it "
    "(?client_id=…&state=…)",
    "discord_cdn_url": "the service adds the avatars' paths and query to it (/avatars/…?size=…)",
}


@pytest.mark.parametrize("name", sorted(_DISCORD_URLS))
@pytest.mark.parametrize(
    ("end", "part"),
    [("?x=1", "query ('?…')"), ("#top", "fragment ('#…')"), ("?", "query ('?…')")],
)
def test_a_discord_url_with_a_query_or_fragment_is_refused(name: str, end: str, part: str) -> None:
    """Paths are added to the API's and the CDN's URLs (/oauth2/token, /avatars/…), and the
    authorize URL gets its own query (?client_id=…): after a query or a fragment each was
    broken (every sign-in with Discord, every avatar, every call), and it started without
    a word. The message names the part found and what its setting has added (a fragment was
    "must have no fragment ('?…' or '#…'): paths and the service's own query are added")."""
    with pytest.raises(SettingsError) as refused:
        load_settings(
            _env_file=None, secret_key=TEST_SECRET_KEY, **{name: _DISCORD_URLS[name] + end}
        )
    [said] = [line for line in str(refused.value).splitlines() if name.upper() in line]
    assert said.strip() == f"TASKFLOW_LINK_{name.upper()}: must have no {part}: {_ADDED[name]}"
    assert load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, **{name: _DISCORD_URLS[name]})


@pytest.mark.parametrize(
    "url",
    [
        "https://discord.com",
        "https://discord.com/",
        "https://discord.com/api",
        "https://discord.com/api/v9",
        "https://discord.com/v10",
        "https://discord.com/api/v10x",
        "http://127.0.0.1:8900",
    ],
)
def test_an_api_url_without_the_api_version_is_refused(url: str) -> None:
    """The service adds its calls' paths to it (/oauth2/token, /users/@me), hikari speaks
    version 10 to it: without /api/v10 every call went elsewhere (Discord's site, or its
    default, retired API version; the emulator's 404), found only at the first sign-in."""
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, discord_api_url=url)
    [said] = [line for line in str(refused.value).splitlines() if "DISCORD_API_URL" in line]
    assert said.strip() == (
        "TASKFLOW_LINK_DISCORD_API_URL: must end in /api/v10, the version of Discord's API "
        "the service speaks (https://discord.com/api/v10; the emulator's too): the service "
        "adds the paths of its calls to it (/oauth2/token, /users/@me, …)"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://discord.com/api/v10",
        "https://discord.com/api/v10/",
        "http://127.0.0.1:8900/api/v10",
        "https://discord-proxy.example.com/discord/api/v10",
    ],
)
def test_an_api_url_ending_in_the_api_version_is_taken(url: str) -> None:
    settings = load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, discord_api_url=url)
    assert str(settings.discord_api_url).rstrip("/").endswith("/api/v10")


@pytest.mark.parametrize("url", ["https://discord.com", "https://discord.com/"])
def test_an_authorize_url_without_a_path_is_refused(url: str) -> None:
    """Browsers are sent to it with the sign-in's query: without a path, to the site's home
    page, and every sign-in with Discord ended there."""
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, discord_authorize_url=url)
    [said] = [line for line in str(refused.value).splitlines() if "AUTHORIZE_URL" in line]
    assert said.strip() == (
        "TASKFLOW_LINK_DISCORD_AUTHORIZE_URL: must have a path (Discord's is "
        "/oauth2/authorize): browsers are sent to it (every sign-in with Discord is redirected "
        "there, the URL in its Location header), and a site's home page signs no one in"
    )
    assert load_settings(
        _env_file=None,
        secret_key=TEST_SECRET_KEY,
        discord_authorize_url="http://127.0.0.1:8900/oauth2/authorize",
    )


def _production(**overrides: object) -> dict[str, object]:
    return {
        "_env_file": None,
        "secret_key": TEST_SECRET_KEY,
        "public_url": "https://link.example.com",
        "email_backend": "smtp",
        "smtp_host": "mail.example.com",
        **overrides,
    }


def test_a_plain_http_public_url_off_this_machine_is_refused() -> None:
    """Found by an attacker's review: passwords, session cookies (without Secure and
    __Host-) and Discord's codes would travel in clear, and it started without a word."""
    with pytest.raises(SettingsError) as refused:
        load_settings(**_production(public_url="http://link.example.com"))
    assert "TASKFLOW_LINK_PUBLIC_URL must use https" in str(refused.value)
    assert "TASKFLOW_LINK_DEVELOPMENT=true" in str(refused.value)
    assert load_settings(**_production(public_url="http://link.example.com", development=True))
    assert load_settings(**_production(public_url="http://127.0.0.1:8000"))


@pytest.mark.parametrize(
    ("public_url", "part"),
    [("https://link.example.com/?team=1", "query"), ("https://link.example.com/#top", "fragment")],
)
def test_a_public_url_with_a_query_or_fragment_is_refused(public_url: str, part: str) -> None:
    """Every link is the public URL with a path added: the /link button
    (https://link.example.com/?team=1/link/TICKET), the OAuth redirect URI, emailed links.
    After a query or a fragment that path is no path: each button opened the home page, and
    Discord refused the redirect URI. It started without a word."""
    with pytest.raises(SettingsError) as refused:
        load_settings(**_production(public_url=public_url))
    assert "TASKFLOW_LINK_PUBLIC_URL" in str(refused.value)
    assert f"no {part}" in str(refused.value)
    assert load_settings(**_production(public_url="https://link.example.com/"))


@pytest.mark.parametrize(
    "public_url",
    ["https://ops:s3cr3t-pw@link.example.com", "https://:s3cr3t-pw@link.example.com"],
)
def test_a_public_url_with_a_password_is_refused_without_showing_it(public_url: str) -> None:
    """Every link is built from the public URL: the password went into every email, the
    /link button and the OAuth redirect URI. It started without a word."""
    with pytest.raises(SettingsError) as refused:
        load_settings(**_production(public_url=public_url))
    assert "TASKFLOW_LINK_PUBLIC_URL: must have no user name or password" in str(refused.value)
    assert "s3cr3t-pw" not in str(refused.value)
    with pytest.raises(SettingsError, match="no user name or password"):
        load_settings(**_production(public_url="https://ops@link.example.com"))


@pytest.mark.parametrize(
    "public_url", ["https://example.com/taskflow", "https://example.com/taskflow/"]
)
def test_a_public_url_with_a_path_is_refused(public_url: str) -> None:
    """The app serves at the root of its host: its pages, redirects and forms name absolute
    paths (/account, /signin, /link/…), so behind a proxy that serves it under a prefix the
    emailed links and the /link button opened the prefix's pages, and every step after them
    left it. It started without a word."""
    with pytest.raises(SettingsError) as refused:
        load_settings(**_production(public_url=public_url))
    assert "TASKFLOW_LINK_PUBLIC_URL: must have no path (such as /taskflow)" in str(refused.value)
    assert load_settings(**_production(public_url="https://example.com/"))
    assert load_settings(**_production(public_url="https://example.com"))


@pytest.mark.parametrize(
    ("deadlines", "named"),
    [
        ({"discord_defer_after_seconds": 3}, None),  # not below the reply deadline: no defer
        (
            {"discord_reply_deadline_seconds": 4, "discord_answer_deadline_seconds": 5},
            "ANSWER_DEADLINE",
        ),
        (
            {
                "discord_reply_deadline_seconds": 4,
                "discord_answer_deadline_seconds": 5,
                "discord_defer_after_seconds": 3.5,
            },
            "DEFER_AFTER",
        ),
        (
            {
                "discord_reply_deadline_seconds": 4,
                "discord_answer_deadline_seconds": 5,
                "discord_defer_after_seconds": 4,
            },
            "REPLY_DEADLINE",
        ),
    ],
)
def test_deadlines_past_discords_three_seconds_are_warned_about(
    deadlines: dict[str, float], named: str | None
) -> None:
    """Allowed (tests on a busy machine raise them), but in production a slow command's
    first answer, or the HTTP fallback, would come after Discord stopped waiting: "The
    application did not respond", with nothing in the log to say why."""
    said = [w for w in load_settings(**_production(**deadlines)).warnings() if "3 s" in w]
    if named is None:
        assert said == []
    else:
        assert any(w.startswith(f"TASKFLOW_LINK_DISCORD_{named}_SECONDS=") for w in said), said
    assert not [w for w in load_settings(**_production()).warnings() if "3 s" in w]


def test_smtp_without_tls_to_another_machine_is_warned_about() -> None:
    plain = load_settings(**_production(smtp_tls="none", smtp_username="ops", smtp_password="pw"))
    assert any("SMTP_TLS=none: emails to mail.example.com" in w for w in plain.warnings())
    local = load_settings(**_production(smtp_tls="none", smtp_host="127.0.0.1"))
    assert not any("SMTP_TLS" in w for w in local.warnings())
    assert not any("SMTP_TLS" in w for w in load_settings(**_production()).warnings())


@pytest.mark.parametrize(
    "weak",
    ["a" * 32, "changeme" * 4, "0123456789" * 4, "0123456789abcdef" * 2, "key-" + "x" * 40],
)
def test_a_guessable_secret_key_is_refused(weak: str) -> None:
    """Found by an attacker's review: only the length was checked."""
    with pytest.raises(SettingsError) as refused:
        load_settings(**_production(secret_key=weak))
    assert "TASKFLOW_LINK_SECRET_KEY" in str(refused.value)
    assert "looks guessable" in str(refused.value)
    assert weak not in str(refused.value)


@pytest.mark.parametrize(
    "key",
    [
        "SNbvwI82imhUvdRq7HISo7_bcfMjlxMWGH59ECGi8JU",  # secrets.token_urlsafe(32)
        "22574436bbdd69c079e1bfe21169b7ce2d7387df8651f8857f88da365f3860e0",  # openssl rand -hex 32
        "c4c9ae9c02b4297146528ecda286448f",  # openssl rand -hex 16
        "correct horse battery staple, twice",
    ],
)
def test_keys_as_people_make_them_are_accepted(key: str) -> None:
    assert load_settings(**_production(secret_key=key)).secret_key.get_secret_value() == key


def test_config_never_prints_the_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv(
        "TASKFLOW_LINK_DATABASE_URL", "postgresql+asyncpg://app:s3cr3t-pw@db:5432/taskflow"
    )
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_SECRET", "client-secret-value")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0, result.output
    assert "s3cr3t-pw" not in result.output
    assert "client-secret-value" not in result.output
    assert TEST_SECRET_KEY not in result.output
    assert "postgresql+asyncpg://app:***@db:5432/taskflow" in result.output
    assert "TASKFLOW_LINK_DISCORD_CLIENT_SECRET = (set)" in result.output


def test_settings_left_blank_as_in_env_example_are_not_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """.env.example leaves the secrets blank for the operator to fill in. `config` said
    "(set)" for a blank client secret and bot token (which every command then found
    missing), and a blank SMTP user name was sent to the server as a user to log in as."""
    from entrypoints.container import _smtp_sender

    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    blank = ["DISCORD_CLIENT_ID", "DISCORD_CLIENT_SECRET", "DISCORD_BOT_TOKEN"]
    blank += ["SMTP_USERNAME", "SMTP_PASSWORD"]
    for name in blank:
        monkeypatch.setenv(f"TASKFLOW_LINK_{name}", " ")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0, result.output
    for name in blank:
        assert f"TASKFLOW_LINK_{name} = (not set)" in result.output
    sender = _smtp_sender(load_settings(email_backend="smtp", smtp_host="smtp.example.com"))
    assert (sender._username, sender._password) == (None, None)
    with pytest.raises(SettingsError) as missing:
        load_settings().require("discord_bot_token")
    assert "TASKFLOW_LINK_DISCORD_BOT_TOKEN" in str(missing.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("discord_client_id", "my-app"),
        ("discord_client_id", "-1"),
        ("discord_client_id", "0"),
    ],
)
def test_a_client_id_that_cannot_work_is_refused_at_start(name: str, value: str) -> None:
    """Found out before: Discord refused the client at every sign-in."""
    with pytest.raises(SettingsError) as refused:
        load_settings(secret_key=TEST_SECRET_KEY, **{name: value})
    assert f"TASKFLOW_LINK_{name.upper()}: must be" in str(refused.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("discord_client_id", "1100000000000000001"),
    ],
)
def test_a_client_id_as_documented_is_accepted(name: str, value: str) -> None:
    assert getattr(load_settings(secret_key=TEST_SECRET_KEY, **{name: value}), name) == value


@pytest.mark.parametrize(
    ("variable", "url", "shown"),
    [
        (
            "TASKFLOW_LINK_DATABASE_URL",
            "postgresql+asyncpg://app@db/taskflow?password=s3cr3t-pw&ssl=require",
            "postgresql+asyncpg://app@db/taskflow?password=***&ssl=require",
        ),
        (
            "TASKFLOW_LINK_DATABASE_URL",
            "postgresql+asyncpg://app:s3cr3t-pw@db/taskflow?ssl=verify-full&password=s3cr3t-pw",
            "postgresql+asyncpg://app:***@db/taskflow?password=***&ssl=verify-full",
        ),
        (
            "TASKFLOW_LINK_REDIS_URL",
            "redis://cache:6380/2?password=s3cr3t-pw",
            "redis://cache:6380/2?password=***",
        ),
        (
            "TASKFLOW_LINK_DATABASE_URL",
            "sqlite+aiosqlite:///./taskflow.db?mode=rwc",
            "sqlite+aiosqlite:///./taskflow.db?mode=rwc",
        ),
    ],
)
def test_config_never_prints_a_password_given_as_a_query_parameter(
    monkeypatch: pytest.MonkeyPatch, variable: str, url: str, shown: str
) -> None:
    """The drivers take the password in the query string too (``?password=``)."""
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv(variable, url)
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0, result.output
    assert "s3cr3t-pw" not in result.output
    assert f"{variable} = {shown}" in result.output


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("TASKFLOW_LINK_DATABASE_URL", "postgresql+asyncpg://u:s3cr3t-pw@127.0.0.1:99999/db"),
        ("TASKFLOW_LINK_REDIS_URL", "redis://u:s3cr3t-pw@127.0.0.1:x/0"),
    ],
)
def test_a_url_with_a_bad_port_is_refused_by_name_without_its_password(
    monkeypatch: pytest.MonkeyPatch, variable: str, url: str
) -> None:
    """``taskflow-link config`` printed a traceback (the password hider read the port); the
    setting is refused by name now."""
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv(variable, url)
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)
    assert f"{variable}: has a port that is not a number from 0 to 65535" in str(refused.value)
    assert "s3cr3t-pw" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+asyncpg://u:pw@h:99999/db", "postgresql+asyncpg://u:***@h:99999/db"),
        ("redis://:p@ss:word@cache:6380/0", "redis://:***@cache:6380/0"),
        ("redis://user@cache/0", "redis://user@cache/0"),
        ("postgresql+asyncpg://u:pw@[::1]:5432/db", "postgresql+asyncpg://u:***@[::1]:5432/db"),
        ("redis://u:1234/s3cr3t-pw@cache/0", "redis://u:***@cache/0"),
        ("redis://u:s3cr3t#pw@cache/0", "redis://u:***@cache/0"),
        ("http://[::1", "http://[::1"),
    ],
)
def test_without_password_takes_any_url(url: str, shown: str) -> None:
    assert without_password(url) == shown


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("sslmode=require", "has ?sslmode=, libpq's name, which asyncpg does not take"),
        (
            "ssl=require&sslpassword=s3cr3t-pw",
            "has a query parameter asyncpg does not take: 'sslpassword'",
        ),
        (
            "statement_cache_size=0",
            "has a query parameter asyncpg does not take: 'statement_cache_size'",
        ),
        ("ssl=true", "has an ?ssl= that asyncpg does not take (give it once, one of disable"),
        ("ssl=require&ssl=disable", "has an ?ssl= that asyncpg does not take"),
        (
            "connect_timeout=30",
            "has ?connect_timeout=, libpq's name, which asyncpg does not take: set "
            "TASKFLOW_LINK_DB_CONNECT_TIMEOUT_SECONDS instead",
        ),
        (
            "prepared_statement_cache_size=s3cr3t",
            "has a prepared_statement_cache_size that is not a number of statements",
        ),
        ("port=s3cr3t", "has hosts or ports in its query that cannot be read"),
        ("host=a:1&host=b", "has hosts or ports in its query that cannot be read"),
        ("host=a:1&host=b:99999", "has a port that is not a number from 0 to 65535"),
        # asyncpg checks these when it connects (ClientConfigurationError): `config` showed
        # the URL, and every command and /readyz failed at the first connection.
        (
            "target_session_attrs=s3cr3t",
            "has a ?target_session_attrs= that asyncpg does not take (give it once, one of any, "
            "primary, standby, prefer-standby, read-write, read-only)",
        ),
        (
            "target_session_attrs=prefer_standby",
            "has a ?target_session_attrs= that asyncpg does not take",
        ),
        (
            "target_session_attrs=primary&target_session_attrs=standby",
            "has a ?target_session_attrs= that asyncpg does not take (give it once",
        ),
        (
            "gsslib=s3cr3t",
            "has a ?gsslib= that asyncpg does not take (give it once, one of gssapi, sspi)",
        ),
        # Given twice, SQLAlchemy passes a tuple where asyncpg wants text.
        ("krbsrvname=a&krbsrvname=b", "has ?krbsrvname= more than once (give it once)"),
        ("passfile=a&passfile=b", "has ?passfile= more than once (give it once)"),
        ("password=s3cr3t&password=pw", "has ?password= more than once (give it once)"),
    ],
)
def test_a_postgres_url_whose_query_asyncpg_cannot_take_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, query: str, reason: str
) -> None:
    """Each query parameter of a Postgres URL is given to ``asyncpg.connect`` by its name:
    libpq's ``sslmode`` (the usual way to ask for TLS elsewhere) stopped every command at
    its first connection with a TypeError's traceback, and ``serve`` answered 503. It is
    refused when the settings are read, naming the variable, never showing a value."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv(
        "TASKFLOW_LINK_DATABASE_URL", f"postgresql+asyncpg://app:pw@127.0.0.1:1/db?{query}"
    )
    for command in (["config"], ["db", "current"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code != 0
        assert isinstance(result.exception, SettingsError)
        assert f"TASKFLOW_LINK_DATABASE_URL: {reason}" in str(result.exception)
        assert "s3cr3t" not in str(result.exception) + result.output


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "sqlite+aiosqlite://s3cr3t-host/taskflow.db",
            "is not a SQLite URL: a file has no host, user or port",
        ),
        (
            "sqlite+aiosqlite:///taskflow.db?timeout=s3cr3t",
            "has a ?timeout= whose value the SQLite driver cannot read",
        ),
        (
            "sqlite+aiosqlite:///taskflow.db?timeout=5&timeout=10",
            "has a ?timeout= whose value the SQLite driver cannot read (give it once",
        ),
        (
            "sqlite+aiosqlite:///taskflow.db?check_same_thread=s3cr3t",
            "has a ?check_same_thread= whose value the SQLite driver cannot read",
        ),
    ],
)
def test_a_sqlite_url_sqlalchemy_cannot_read_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, reason: str
) -> None:
    """A SQLite URL with a host, or a typed parameter whose value is not one, passed the
    settings: `config` showed it, and every other command stopped at its first connection
    with SQLAlchemy's traceback (ArgumentError, ValueError, TypeError)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DATABASE_URL", url)
    for command in (["config"], ["db", "upgrade"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code != 0
        assert isinstance(result.exception, SettingsError), result.exception
        assert f"TASKFLOW_LINK_DATABASE_URL: {reason}" in str(result.exception)
        assert "s3cr3t" not in str(result.exception) + result.output


def test_checking_a_sqlite_url_silences_only_sqlalchemys_word_on_an_unused_parameter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The settings ask SQLAlchemy's SQLite dialect whether it can read the URL: a parameter
    the driver does not take is SQLAlchemy's to say (a SAWarning) when it connects, not twice.
    That check silenced every warning, a deprecation of the dialect's among them."""
    url = "sqlite+aiosqlite:///taskflow.db?not_a_driver_parameter=1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, database_url=url)

    class DeprecatingDialect(aiosqlite_dialect):
        def create_connect_args(self, url: URL) -> Any:
            warnings.warn("a dialect deprecation", DeprecationWarning, stacklevel=2)
            return super().create_connect_args(url)

    monkeypatch.setattr(settings_module, "aiosqlite_dialect", DeprecatingDialect)
    with pytest.warns(DeprecationWarning, match="a dialect deprecation"):
        load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, database_url=url)


@pytest.mark.parametrize(
    "query",
    [
        "ssl=require",
        "ssl=verify-full&target_session_attrs=read-write",
        "target_session_attrs=prefer-standby&gsslib=gssapi&krbsrvname=postgres",
        "target_session_attrs=any&gsslib=sspi",
        "host=/var/run/postgresql&port=5432",
        "host=a:5432&host=b:5433",
        # SQLAlchemy's own (its engine's statement cache; 0 for PgBouncer): it worked before
        # these checks, and stopping start-up at an upgrade for it would be an outage.
        "prepared_statement_cache_size=0",
        "prepared_statement_cache_size=500&ssl=verify-full",
    ],
)
def test_a_postgres_url_with_a_query_asyncpg_takes_is_accepted(
    monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DATABASE_URL", f"postgresql+asyncpg://app:pw@/db?{query}")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://taskflow:1234/s3cr3t-pw@127.0.0.1:1/taskflow",
        "postgresql+asyncpg://taskflow:s3cr3t/pw@127.0.0.1:1/taskflow",
        "postgresql+asyncpg://taskflow:s3cr3t#pw@127.0.0.1:1/taskflow",
        "postgresql+asyncpg://taskflow:s3cr3t?pw@127.0.0.1:1/taskflow",
    ],
)
def test_config_and_database_errors_hide_the_password_the_driver_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str
) -> None:
    """SQLAlchemy gives the driver everything between the user's ``:`` and the ``@`` as the
    password; urllib reads ``1234/s3cr3t-pw`` as a port and a path instead, so a hider built on
    it showed the password. The URL is read as SQLAlchemy reads it, in `config` and in
    "Cannot use the database at …" (a database nobody listens to here)."""
    from sqlalchemy.engine import make_url

    assert "s3cr3t" in (make_url(url).password or "")  # what the driver is given
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DATABASE_URL", url)
    shown = CliRunner().invoke(cli, ["config"])
    assert shown.exit_code == 0, shown.output
    hidden = "postgresql+asyncpg://taskflow:***@127.0.0.1:1/taskflow"
    assert f"TASKFLOW_LINK_DATABASE_URL = {hidden}" in shown.output
    failed = CliRunner().invoke(cli, ["db", "current"])
    assert failed.exit_code != 0
    assert f"Cannot use the database at {hidden}:" in failed.output
    assert "s3cr3t" not in shown.output + failed.output


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+asyncpg://u:pw@h:5432/db", "postgresql+asyncpg://u:***@h:5432/db"),
        ("postgresql+asyncpg://u@h/db?password=pw", "postgresql+asyncpg://u@h/db?password=***"),
        (
            "sqlite+aiosqlite:///./taskflow.db?mode=rwc",
            "sqlite+aiosqlite:///./taskflow.db?mode=rwc",
        ),
        ("sqlite+aiosqlite:///:memory:", "sqlite+aiosqlite:///:memory:"),
        (
            "postgresql+asyncpg://u:pw@h:port/db",
            "postgresql+asyncpg://(not shown: not a URL that can be read)",
        ),
        ("u:pw@h/db", "(not shown: not a URL that can be read)"),
    ],
)
def test_a_database_url_is_shown_without_its_password_or_not_at_all(url: str, shown: str) -> None:
    """A URL SQLAlchemy cannot read shows its scheme at most: where its password ends is
    anyone's guess."""
    assert database_url_without_password(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://app:s3cr3t-pw@db:5432/taskflow",
        "postgresql+asyncpg://app@db:5432/taskflow?password=s3cr3t-pw",
    ],
)
def test_printed_settings_never_show_the_database_password(url: str) -> None:
    """A log line or a traceback that prints the settings (their ``repr``, as pydantic
    writes it) shows the database URL without its password, as `config` does."""
    settings = load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, database_url=url)
    for printed in (repr(settings), str(settings)):
        assert "s3cr3t-pw" not in printed
        assert "db:5432/taskflow" in printed
    assert settings.database_url == url  # what the driver is given


def test_a_database_password_with_a_slash_is_not_mistaken_for_a_bad_port() -> None:
    """The database URL's port is checked as the driver reads it: ``u:ab/cd@h`` is a password,
    not the port ``ab``."""
    url = "postgresql+asyncpg://u:ab/cd@h/db"
    assert load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, database_url=url)


def test_a_discord_rate_limit_is_logged_as_one() -> None:
    from hikari.internal import routes

    limited = hikari.RateLimitTooLongError(
        route=routes.POST_INTERACTION_RESPONSE.compile(interaction=1, token="secret-token"),
        is_global=False,
        retry_after=42.0,
        max_retry_after=5.0,
        reset_at=0.0,
        limit=5,
        period=1.0,
    )
    described = describe_http_error(limited)
    assert described == "rate limited by Discord (HTTP 429, per route): retry after 42.0 s"
    assert "secret-token" not in described  # interaction URLs carry the token


def test_the_app_factory_leaves_start_up_objects_out_of_garbage_collection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A serving process's full collections walk only what requests built, not every module,
    handler and type it loaded (their pauses were the lookup API's slowest requests)."""
    import gc

    from entrypoints import asgi

    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_STORAGE", "memory")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_ID", "1200000000000000042")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_SECRET", "app-secret")
    monkeypatch.setattr(asgi, "configure_logging", lambda *_: None)  # the process's, not ours
    gc.unfreeze()
    try:
        asgi.make_app()
        assert gc.get_freeze_count() > 10_000  # the modules, the app, its handlers
    finally:
        gc.collect()
        gc.freeze()  # as the suite had it (tests/conftest.py)


def test_serve_runs_uvicorn_without_proxy_headers_or_its_access_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app reads X-Forwarded-* itself, from trusted proxies only, and writes its own access
    log (uvicorn's prints query strings). WebSockets are off: the app has none (the
    emulator's gateway is the emulator's server's), and an upgrade not made is answered as
    plain HTTP, its connection closed after it (``entrypoints/http11.py``), so a proxy that
    tunnels on "Upgrade: websocket" carries nothing more on it."""
    ran: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.update(options, app=app))
    # Not in the test process: freezing its heap would keep whatever is garbage now for good.
    monkeypatch.setattr(entrypoints.asgi, "settle_start_up_objects", lambda: None)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_STORAGE", "memory")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_ID", "1200000000000000042")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_SECRET", "not-used-here")
    monkeypatch.setenv("TASKFLOW_LINK_REQUEST_HEAD_TIMEOUT_SECONDS", "7.5")
    monkeypatch.setenv("TASKFLOW_LINK_REQUEST_BODY_TIMEOUT_SECONDS", "12.5")
    with reserved_port() as port:
        done = CliRunner().invoke(cli, ["serve", "--port", str(port)])
    assert done.exit_code == 0, done.output
    assert ran["ws"] == "none"
    assert ran["proxy_headers"] is False
    assert ran["access_log"] is False
    assert ran["port"] == port
    # httptools by name (uvicorn's "auto" falls back to h11 silently), its head bounded, in
    # time by the setting, a body too; what it is pickles, as uvicorn hands it to each of
    # --workers.
    from entrypoints.http11 import BoundedHttpToolsProtocol

    protocol = pickle.loads(pickle.dumps(ran["http"]))  # noqa: S301 - our own object
    assert isinstance(protocol, functools.partial)
    assert protocol.func is BoundedHttpToolsProtocol
    assert protocol.keywords == {"head_timeout_seconds": 7.5, "body_timeout_seconds": 12.5}


def test_the_servers_refuse_to_start_without_their_http_parser_saying_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """httptools is a dependency: without it, uvicorn's "auto" would serve with h11 without a
    word (other answers to malformed requests, more CPU), and its "httptools" would fail with
    a traceback once the app had started. Each command says it before anything runs."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "httptools" else real_find_spec(name, *args),
    )
    ran: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append(app))
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_STORAGE", "memory")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_ID", "1200000000000000042")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_SECRET", "not-used-here")
    for argv in (
        ["serve", "--port", str(free_port())],
        ["emulator", "--port", str(free_port())],
        ["demo", "--database", str(tmp_path / "demo.db")],
    ):
        refused = CliRunner().invoke(cli, argv)
        assert refused.exit_code == 1, (argv, refused.output)
        assert refused.stderr.startswith("Error: httptools is not installed"), argv
        assert refused.stdout == "", argv
    assert ran == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])  # noqa: S104 - the point
def test_serve_does_not_let_other_machines_reach_the_outbox_page(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    """Its guard trusts a loopback peer; listening beyond loopback would let another machine
    come through a proxy or a port forward on this one."""
    ran: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append(app))
    monkeypatch.setattr(entrypoints.asgi, "settle_start_up_objects", lambda: None)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_STORAGE", "memory")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_ID", "1200000000000000042")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_SECRET", "not-used-here")
    monkeypatch.setenv("TASKFLOW_LINK_EMAIL_OUTBOX_PAGE", "true")
    refused = CliRunner().invoke(cli, ["serve", "--host", host])
    assert refused.exit_code == 2
    assert f"--host {host} would let other machines reach the outbox page" in refused.output
    assert ran == []
    with reserved_port() as port:
        listening = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        assert CliRunner().invoke(cli, listening).exit_code == 0
    assert len(ran) == 1


def _serve_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entrypoints.asgi, "settle_start_up_objects", lambda: None)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_STORAGE", "memory")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_ID", "1200000000000000042")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_SECRET", "not-used-here")


def test_serve_on_a_port_in_use_says_so_before_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn found the port taken only after the app had started (its workers reaching for
    the database), logged it between start-up and shutdown lines, and exited with status 3."""
    import socket

    ran: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append(app))
    _serve_settings(monkeypatch)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        refused = CliRunner().invoke(cli, ["serve", "--port", str(port)])
    assert refused.exit_code == 1, refused.output
    assert f"Error: Port {port} on 127.0.0.1 is in use" in refused.output
    assert "--port" in refused.output
    assert "taskflow-link on" not in refused.output  # said before anything started
    assert ran == []


def test_serve_names_a_missing_setting_before_a_port_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both wrong: the missing Discord client was said only once the port was freed (with
    several workers it came first already)."""
    import socket

    ran: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append(app))
    _serve_settings(monkeypatch)
    monkeypatch.delenv("TASKFLOW_LINK_DISCORD_CLIENT_SECRET")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        refused = CliRunner().invoke(cli, ["serve", "--port", str(port)])
    assert isinstance(refused.exception, SettingsError), refused.output
    assert "TASKFLOW_LINK_DISCORD_CLIENT_SECRET" in str(refused.exception)
    assert "is in use" not in refused.output
    assert ran == []


def test_the_emulator_on_a_port_in_use_says_so_before_printing_its_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`taskflow-link emulator` printed the settings to export, as if it ran, then uvicorn's
    "[Errno 98] error while attempting to bind", and exited with uvicorn's status 3."""
    import socket

    ran: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append(app))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        refused = CliRunner().invoke(cli, ["emulator", "--port", str(port)])
    assert refused.exit_code == 1, refused.output
    assert refused.stderr.startswith(f"Error: Port {port} on 127.0.0.1 is in use")
    assert refused.stdout == ""
    assert ran == []
    unknown = CliRunner().invoke(cli, ["emulator", "--host", "999.0.0.1"])
    assert unknown.exit_code == 1, unknown.output
    assert unknown.stderr.startswith("Error: Cannot listen on 999.0.0.1 port 8900: ")
    assert unknown.stdout == ""


def test_serve_that_uvicorn_could_not_start_exits_1_saying_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The port taken between the check and uvicorn's bind, or the app's start-up failing:
    uvicorn's ``sys.exit(3)`` was the command's status, outside the 0, 1, 2 it documents."""

    def cannot_start(app: object, **options: object) -> None:
        sys.exit(3)

    monkeypatch.setattr(uvicorn, "run", cannot_start)
    _serve_settings(monkeypatch)
    with reserved_port() as port:
        failed = CliRunner().invoke(cli, ["serve", "--port", str(port)])
    assert failed.exit_code == 1, failed.output
    assert "Error: The web app could not start (see the messages above)." in failed.output


def test_serve_names_an_ipv6_address_as_a_url_writes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """It printed ``http://::1:8000``, which is no URL."""
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: None)
    _serve_settings(monkeypatch)
    done = CliRunner().invoke(cli, ["serve", "--host", "::1", "--port", str(port)])
    assert done.exit_code == 0, done.output
    assert f"taskflow-link on http://[::1]:{port} (public URL" in done.output


def test_config_shows_where_calls_out_go_without_the_proxys_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv(
        "TASKFLOW_LINK_WEBHOOK_URLS",
        "https://hooks.example.com/in?token=t0ps3cret,https://direct.example.org/h",
    )
    monkeypatch.setenv("TASKFLOW_LINK_WEBHOOK_SECRET", webhook_secret("entrypoints"))
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pr0xy-pw@filter.internal:3128")
    monkeypatch.setenv("NO_PROXY", "direct.example.org")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0, result.output
    assert "proxy for Discord's API = http://user:***@filter.internal:3128" in result.output
    assert (
        "proxy for webhooks to https://hooks.example.com = http://user:***@filter.internal:3128"
        in result.output
    )
    assert "proxy for webhooks to https://direct.example.org = (none)" in result.output
    assert "pr0xy-pw" not in result.output
    assert "t0ps3cret" not in result.output

    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:pr0xy-pw@filter.internal:1080")
    refused = CliRunner().invoke(cli, ["config"])
    assert refused.exit_code != 0
    assert "Discord's API: HTTPS_PROXY must be an http:// proxy" in str(refused.exception)
    assert "pr0xy-pw" not in refused.output + str(refused.exception)


@pytest.fixture
def sqlite_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The commands' settings from the environment only, on a SQLite file of this test."""
    database = tmp_path / "taskflow-link.db"
    monkeypatch.chdir(tmp_path)  # away from a .env of the repository
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DATABASE_URL", f"sqlite+aiosqlite:///{database}")
    return database


def test_db_downgrade_drops_nothing_without_yes(sqlite_database: Path) -> None:
    """A downgrade drops tables and columns with their data (`base`: every table), so it
    needs --yes; without it the command names the revision and the database, and stops."""
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(cli, ["api-key", "create", "crm-sync"]).exit_code == 0

    refused = runner.invoke(cli, ["db", "downgrade", "base"], input="y\n")
    assert refused.exit_code != 0
    assert "base (every table)" in refused.output
    assert str(sqlite_database) in refused.output
    assert "deletes data" in refused.output
    assert "--yes" in refused.output
    assert "crm-sync" in runner.invoke(cli, ["api-key", "list"]).output

    done = runner.invoke(cli, ["db", "downgrade", "base", "--yes"])
    assert done.exit_code == 0, done.output
    assert "Database at revision base (empty)." in done.output
    assert runner.invoke(cli, ["db", "current"]).output.strip() == "base (empty)"


def test_api_key_revoke_names_the_key_as_create_stored_it(sqlite_database: Path) -> None:
    """`api-key create " crm "` stores ``crm`` (and says so); `revoke " crm "` revoked it but
    said it had revoked ``' crm '``, a name that `api-key list` shows no key by."""
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    created = runner.invoke(cli, ["api-key", "create", " crm "])
    assert created.exit_code == 0, created.output
    assert "API key 'crm':" in created.output

    revoked = runner.invoke(cli, ["api-key", "revoke", " crm "])
    assert revoked.exit_code == 0, revoked.output
    assert revoked.output == "API key 'crm' revoked.\n"
    assert "revoked" in runner.invoke(cli, ["api-key", "list"]).output


class _DriverState(Exception):
    """A driver error with its SQLSTATE, as asyncpg says it."""

    def __init__(self, words: str, sqlstate: str) -> None:
        super().__init__(words)
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
def test_a_command_the_database_rolled_back_for_another_says_to_run_it_again(
    sqlite_database: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    sqlstate: str,
) -> None:
    """Postgres broke a deadlock (or a serialization failure) by rolling the command's
    transaction back: "Cannot use the database at …: deadlock detected" read as an outage.
    It is the database busy, to run again, with an exit status of its own (75, EX_TEMPFAIL)
    for a script to tell it from a failure."""
    from sqlalchemy.exc import DBAPIError

    from adapters.sql.errors import translate
    from domain import errors
    from domain.use_cases import ListApiKeys
    from entrypoints.cli import BUSY_EXIT_STATUS

    assert CliRunner().invoke(cli, ["db", "upgrade"]).exit_code == 0
    words = "deadlock detected" if sqlstate == "40P01" else "could not serialize access"

    async def rolled_back(*_: object, **__: object) -> None:
        driver = DBAPIError("SELECT", {}, _DriverState(words, sqlstate))
        translated = translate(driver)
        assert isinstance(translated, errors.StorageContention)
        raise translated from driver

    monkeypatch.setattr(ListApiKeys, "execute", rolled_back)
    status, out, err = _run_main(monkeypatch, capsys, "api-key", "list")
    assert (status, out) == (BUSY_EXIT_STATUS, "")
    assert BUSY_EXIT_STATUS not in {0, 1, 2, 130}
    assert err == (
        "Error: The database was busy: it rolled this command's transaction back to let "
        f"another one through ({words}). Nothing is wrong, and what that transaction did was "
        "undone: run the command again.\n"
    )
    assert "Cannot use the database" not in err

    async def without_cause(*_: object, **__: object) -> None:
        raise errors.StorageContention()  # as a use case that tried again in place says it

    monkeypatch.setattr(ListApiKeys, "execute", without_cause)
    status, _, err = _run_main(monkeypatch, capsys, "api-key", "list")
    assert status == BUSY_EXIT_STATUS
    assert err.startswith("Error: The database was busy:"), err


def test_a_migration_the_database_rolled_back_for_another_says_to_run_it_again() -> None:
    """`db upgrade` and the schema check meet the driver's error itself (no use case turns
    it into the domain's): a deadlock there is the database busy too; an outage stays one,
    with the URL's password hidden."""
    from sqlalchemy.exc import DBAPIError

    from entrypoints.cli import BUSY_EXIT_STATUS, _database_failure

    url = "postgresql+asyncpg://taskflow:hunter2@db.internal/taskflow"
    busy = _database_failure(url, DBAPIError("ALTER", {}, _DriverState("deadlock", "40P01")))
    assert busy.exit_code == BUSY_EXIT_STATUS
    assert busy.message.startswith("The database was busy:"), busy.message
    assert "hunter2" not in busy.message
    down = _database_failure(url, DBAPIError("SELECT", {}, _DriverState("gone", "57P01")))
    assert (down.exit_code, down.message) == (
        1,
        "Cannot use the database at postgresql+asyncpg://taskflow:***@db.internal/taskflow: gone",
    )


def test_only_a_service_counts_what_it_does() -> None:
    """A one-off command's container counts nothing (it serves no /metrics, and loads no
    Prometheus client); the web app's and the gateway bot's count."""
    settings = make_settings(metrics=True)
    assert build_container(settings, counted=False).metrics() is None
    assert build_container(settings).metrics() is not None


def _declined_on_file(username: str, *addresses: str) -> str:
    """An account on the configured database whose holder of each address declined it."""
    from domain.model import Account, AccountId
    from entrypoints.container import close_resources

    container = build_container(load_settings())
    account = Account(AccountId.new(), username, None, False, "argon2-hash", datetime.now(UTC))

    async def add() -> None:
        try:
            async with container.uow()() as uow:
                await uow.accounts.add(account)
                for address in addresses:
                    await uow.declined_addresses.add(account.id, address, datetime.now(UTC))
                await uow.commit()
        finally:
            await close_resources(container)

    asyncio.run(add())
    return str(account.id)


def _run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """``taskflow-link ARGV`` as the installed command runs it: exit status, stdout, stderr."""
    from entrypoints.cli import main

    monkeypatch.setattr(sys, "argv", ["taskflow-link", *argv])
    try:
        main()
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else 1
    else:
        code = 0
    said = capsys.readouterr()
    return code, said.out, said.err


def test_email_lift_decline_lifts_it_once_and_audits_it(
    sqlite_database: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "This is not my account" pressed by mistake on one's own account's link: nothing
    undid it. `email lift-decline ACCOUNT ADDRESS` does (a username in any case, or the id;
    the address however written), says what it did, audits it; run again, there is nothing
    to lift (exit 1, so a script notices); the account's other declines stay."""
    assert CliRunner().invoke(cli, ["db", "upgrade"]).exit_code == 0
    account_id = _declined_on_file("mallory", "victim@example.com", "else@example.com")

    code, out, err = _run_main(
        monkeypatch, capsys, "email", "lift-decline", "Mallory", " Victim@EXAMPLE.com"
    )
    assert (code, err) == (0, "")
    assert out.startswith(
        f"Lifted the decline of victim@example.com for the account mallory (id {account_id}): "
    )
    for secret in (TEST_SECRET_KEY, "argon2-hash"):
        assert secret not in out

    for account in ("mallory", account_id):
        code, out, err = _run_main(
            monkeypatch, capsys, "email", "lift-decline", account, "victim@example.com"
        )
        assert (code, out) == (1, "")
        assert err == (
            f"Error: The account mallory (id {account_id}) has no decline of "
            "victim@example.com: nothing was lifted.\n"
        )
    code, out, err = _run_main(
        monkeypatch, capsys, "email", "lift-decline", "nobody", "victim@example.com"
    )
    assert (code, err) == (1, "Error: There is no TaskFlow account named 'nobody'.\n")

    audited = CliRunner().invoke(cli, ["audit", "--account", account_id])
    assert [line.split("  ")[1:] for line in audited.output.splitlines()] == [
        ["email_decline_lifted", f"account={account_id}", "discord=-", "via=cli"]
    ]
    code, out, _ = _run_main(
        monkeypatch, capsys, "email", "lift-decline", account_id, "ELSE@example.com"
    )
    assert code == 0
    assert "Lifted the decline of else@example.com for the account mallory" in out


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["", "victim@example.com"], "Invalid value for 'ACCOUNT'"),
        (["  ", "victim@example.com"], "Invalid value for 'ACCOUNT'"),
        (["mallory", ""], "Invalid value for 'ADDRESS': '' is not an email address"),
        (["mallory", "victim"], "Invalid value for 'ADDRESS': 'victim' is not an email address"),
        (["mallory"], "Missing argument 'ADDRESS'"),
        (["mallory", "a@b.c", "d@e.f"], "unexpected extra argument"),
        # Shown as "victim@example.com": said escaped, and refused (no account may take it,
        # so no decline of it keeps anything from one).
        (
            ["mallory", "vic\u3164tim@example.com"],
            "'vic\\u3164tim@example.com' holds characters that show as nothing",
        ),
        (["mallory", "victim@example.com\u200b"], "'victim@example.com\\u200b' holds"),
    ],
    ids=[
        "empty-account",
        "blank-account",
        "empty-address",
        "no-at",
        "missing",
        "extra",
        "hangul-filler",
        "zero-width",
    ],
)
def test_email_lift_decline_refuses_bad_arguments_as_usage_errors(
    sqlite_database: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    said: str,
) -> None:
    """Exit 2 naming what to change, before the database is opened."""
    code, out, err = _run_main(monkeypatch, capsys, "email", "lift-decline", *argv)
    assert (code, out) == (2, "")
    assert said in err
    assert "Traceback" not in err
    assert not sqlite_database.exists()


@pytest.mark.parametrize(
    ("argv", "environment", "said"),
    [
        (["config"], {}, "Error: Invalid configuration:"),
        (
            ["serve", "--port", str(free_port())],
            {"TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY, "TASKFLOW_LINK_STORAGE": "memory"},
            "Error: Missing setting(s) needed by this command: TASKFLOW_LINK_DISCORD_CLIENT_ID",
        ),
        (
            ["bot"],
            {"TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY, "TASKFLOW_LINK_STORAGE": "memory"},
            "Error: Missing setting(s) needed by this command: TASKFLOW_LINK_DISCORD_BOT_TOKEN",
        ),
    ],
    ids=["invalid", "serve", "bot"],
)
def test_a_missing_or_invalid_setting_is_said_as_an_error_like_the_others(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    environment: dict[str, str],
    said: str,
) -> None:
    """Every other error of the CLI starts "Error: " (click's, the database's); a setting
    missing or invalid at start said only "Invalid configuration:" or "Missing setting(s)…"."""
    from entrypoints.cli import main

    monkeypatch.chdir(tmp_path)  # no .env file
    for name in ("TASKFLOW_LINK_SECRET_KEY", "TASKFLOW_LINK_DISCORD_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["taskflow-link", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert said in error
    assert "Traceback" not in error


@pytest.mark.parametrize("command", ["create", "revoke"])
@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\there", "\x1b[31mred"])
def test_api_key_commands_refuse_a_name_that_is_none_as_a_usage_error(
    sqlite_database: Path, name: str, command: str
) -> None:
    """`api-key create ""` exited 1 (the use case's refusal, after opening the database),
    where other usage errors exit 2 naming what to change; `api-key revoke ""` did so still,
    looking for a key no one can make ("No active API key is named ''")."""
    refused = CliRunner().invoke(cli, ["api-key", command, name])
    assert refused.exit_code == 2, refused.output
    assert "Invalid value for 'NAME'" in refused.output
    assert "An API key name is 1 to 64 printable characters." in refused.output
    assert not sqlite_database.exists()  # refused before the database was opened


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["db", "upgrade", "no-such-revision"], "no-such-revision"),
        (["db", "downgrade", "no-such-revision", "--yes"], "no-such-revision"),
        (["audit", "--since", "9999-12-31T23:59:59-01:00"], "'--since'"),
        (["audit", "--since", "0001-01-01T00:00+01:00"], "'--since'"),
        (["serve", "--port", "70000"], "'--port'"),
        (["demo", "--port", "70000"], "'--port'"),
        (["demo", "--emulator-port", "0"], "'--emulator-port'"),
        (["emulator", "--port", "70000"], "'--port'"),
    ],
    ids=[
        "unknown-upgrade-revision",
        "unknown-downgrade-revision",
        "since-after-year-9999-in-utc",
        "since-before-year-1-in-utc",
        "serve-port",
        "demo-port",
        "demo-emulator-port",
        "emulator-port",
    ],
)
def test_bad_input_on_the_command_line_is_a_message_not_a_traceback(
    sqlite_database: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    said: str,
) -> None:
    """An unknown revision, a time outside the years datetime holds once in UTC, a port that
    is not one: each is an error naming what was given, and a non-zero exit."""
    from entrypoints.cli import main

    assert CliRunner().invoke(cli, ["db", "upgrade"]).exit_code == 0
    monkeypatch.setattr(sys, "argv", ["taskflow-link", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code not in (0, None)
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert error.strip().splitlines()[-1].startswith("Error: ")
    assert said in error.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "argv",
    [
        ["api-key", "create", "crm"],
        ["api-key", "list"],
        ["api-key", "revoke", "crm"],
        ["audit"],
        ["purge-expired"],
        ["webhooks", "retry"],
        ["email", "retry"],
    ],
    ids=" ".join,
)
@pytest.mark.parametrize(
    "storage",
    [{"TASKFLOW_LINK_STORAGE": "memory"}, {"TASKFLOW_LINK_DATABASE_URL": "sqlite+aiosqlite://"}],
    ids=["memory", "in-memory-sqlite"],
)
def test_a_command_on_storage_no_other_process_sees_refuses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, storage: dict[str, str], argv: list[str]
) -> None:
    """`api-key create` printed a key "shown once; store it now" that was kept in the
    command's own memory, gone when it exited: no service would ever take it. The others
    read an empty store, or changed one, and said so as if they had done their work."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    for name, value in storage.items():
        monkeypatch.setenv(name, value)
    refused = CliRunner().invoke(cli, argv)
    assert refused.exit_code == 1, refused.output
    assert "storage of its own" in refused.output
    assert "TASKFLOW_LINK_STORAGE=sql" in refused.output
    assert "tfl_" not in refused.output  # no key to keep
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [["db", "upgrade", ""], ["db", "downgrade", "", "--yes"], ["db", "upgrade", "  "]],
    ids=["upgrade", "downgrade", "upgrade-blank"],
)
def test_an_empty_revision_is_a_usage_error_not_a_traceback(
    sqlite_database: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    """`db upgrade "$REVISION"` with the variable unset: Alembic's assertion came out as a
    traceback (exit 1), the database left as it was."""
    from adapters.sql import revisions
    from entrypoints.cli import main

    assert CliRunner().invoke(cli, ["db", "upgrade"]).exit_code == 0
    monkeypatch.setattr(sys, "argv", ["taskflow-link", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    last = error.strip().splitlines()[-1]
    assert last.startswith("Error: Invalid value for ")
    assert "REVISION" in last
    assert "give a revision" in last
    current = CliRunner().invoke(cli, ["db", "current"]).output.strip()
    assert current == revisions.head_revision()


@pytest.mark.parametrize("since", ["0001-01-01", "9999-12-31T23:59:59Z", "5200w"])
def test_audit_takes_the_earliest_and_latest_times_there_are(
    sqlite_database: Path, since: str
) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    listed = runner.invoke(cli, ["audit", "--since", since])
    assert listed.exit_code == 0, listed.output


def test_audit_shows_an_event_of_a_kind_a_newer_release_wrote(sqlite_database: Path) -> None:
    """A newer release (a rolling upgrade, a rollback) may record events of a kind this one
    does not know: `audit` read each back into its enum and stopped on the first with a
    traceback, the rest of the trail unseen. It shows the kind as written."""
    import uuid

    from sqlalchemy import insert

    from adapters.sql import SqlDatabase
    from adapters.sql.tables import audit_events

    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    fail_sign_ins(build_container(load_settings()), ("mallory", "203.0.113.8"))

    async def newer_release() -> None:
        database = SqlDatabase(f"sqlite+aiosqlite:///{sqlite_database}")
        try:
            async with database.engine.begin() as conn:
                await conn.execute(
                    insert(audit_events).values(
                        id=uuid.uuid4(),
                        kind="account_deleted",
                        at=datetime.now(UTC),
                        detail={"by": "operator"},
                    )
                )
        finally:
            await database.dispose()

    asyncio.run(newer_release())
    listed = runner.invoke(cli, ["audit"])
    assert listed.exit_code == 0, listed.output
    kinds = [line.split("  ")[1] for line in listed.output.splitlines()]
    assert kinds == ["sign_in_failed", "account_deleted"]
    assert "by=operator" in listed.output.splitlines()[-1]


def test_audit_finds_a_login_and_prints_neither_its_hmac_nor_the_key(
    sqlite_database: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`audit --login`: the failed sign-ins tried with the login, found by its HMAC under the
    secret key (which the use case computes), shown as `login=(as given)`: the command prints
    neither the HMAC, which would name the login to whoever reads the output later, nor the
    key, nor logs the login. `-` reads the login from standard input (a login field sometimes
    holds a password, kept out of the shell's history)."""
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    typed = "Tr0ub4dor&3 horse"
    container = build_container(load_settings())
    fail_sign_ins(container, (typed, "203.0.113.7"), ("mallory", "203.0.113.8"))
    keyed = SecretsTokenIssuer(TEST_SECRET_KEY).derive(typed.lower(), "sign-in-login")
    everything = runner.invoke(cli, ["audit"])
    assert keyed in everything.output  # the whole trail shows each login's HMAC, as recorded

    caplog.set_level(logging.DEBUG)
    for quiet in QUIET_BELOW_INFO:  # as the commands' logging has them: their data withheld
        caplog.set_level(logging.INFO, logger=quiet)
    for args, stdin in (
        (["--login", typed.upper()], None),
        (["--login", "-"], f"  {typed}\n"),
        (["--login", typed, "--since", "1d"], None),
    ):
        found = runner.invoke(cli, ["audit", *args], input=stdin)
        assert found.exit_code == 0, found.output
        [line] = found.output.splitlines()
        assert line.split("  ")[1:] == [
            "sign_in_failed",
            "account=-",
            "discord=-",
            "client=203.0.113.7 login=(as given)",
        ]
        for secret in (keyed, TEST_SECRET_KEY, typed.lower()):
            assert secret not in found.output + caplog.text
    nothing = runner.invoke(cli, ["audit", "--login", "nobody"])
    assert nothing.exit_code == 0
    assert "No audit events match." in nothing.output
    assert "TASKFLOW_LINK_SECRET_KEY" in nothing.output
    assert "nobody" not in nothing.output
    other_key = runner.invoke(
        cli, ["audit", "--login", typed], env={"TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY[::-1]}
    )
    assert "No audit events match." in other_key.output


@pytest.mark.parametrize(
    "case",
    [(KeyboardInterrupt, 130, "Interrupted."), (EOFError, 1, "Aborted.")],
    ids=["ctrl-c", "end-of-input"],
)
def test_ctrl_c_at_the_login_prompt_is_an_interruption(
    sqlite_database: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    case: tuple[type[BaseException], int, str],
) -> None:
    """`audit --login -` asks for the login at a terminal: Ctrl-C there is an interruption
    (130, as the README has it for every command), not the end of the input (1). Click's
    prompt turns both into an Abort that hides what caused it."""
    from entrypoints.cli import main

    stop, status, said = case

    def typed(_prompt: str) -> str:
        raise stop

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("click.termui.hidden_prompt_func", typed)
    monkeypatch.setattr(sys, "argv", ["taskflow-link", "audit", "--login", "-"])
    # On Ctrl-C, main() silences the "asyncio" logger for the rest of the process (which then
    # exits): here the process is pytest's, so it is given back. Left disabled, it hid every
    # record of the event loop's exception handler from the tests after this one, and
    # test_hostile_requests' payload guard waited for its line in vain.
    asyncio_log = logging.getLogger("asyncio")
    monkeypatch.setattr(asyncio_log, "disabled", asyncio_log.disabled)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == status
    assert capsys.readouterr().err.strip().splitlines()[-1] == said


@pytest.mark.parametrize(
    ("login", "message"),
    [
        ("   ", "give the login as it was typed to sign in"),
        ("pass\x1bword", "is no login a sign-in records"),
        ("p" * 255, "is no login a sign-in records"),
    ],
)
def test_audit_refuses_a_login_no_sign_in_records_without_repeating_it(
    login: str, message: str
) -> None:
    result = CliRunner().invoke(
        cli, ["audit", "--login", login], env={"TASKFLOW_LINK_SECRET_KEY": None}
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert login.strip() not in result.output or not login.strip()


@pytest.mark.parametrize(
    "weak",
    [
        # Found by an attacker's review: a repeat was refused only when it was the whole
        # key, so one character more passed.
        "0123456789abcdef0123456789abcdef!",
        "password1234password1234password1234!",
        "taskflowtaskflowtaskflowtaskflow-2024",
    ],
)
def test_a_repeated_piece_with_a_character_added_is_still_guessable(weak: str) -> None:
    with pytest.raises(SettingsError, match="looks guessable"):
        load_settings(**_production(secret_key=weak))


def test_a_random_128_bit_hex_key_is_not_refused() -> None:
    """Found by an attacker's review: ``openssl rand -hex 16`` makes 32 hex digits, and about
    1 in 10,000 of them held fewer than 10 different digits, refused as "guessable"."""
    key = "33e3577ac231a732c743e7531c73e735"  # random.Random(1): the 4709th 128-bit draw
    assert load_settings(**_production(secret_key=key)).secret_key.get_secret_value() == key


def test_the_bot_without_a_token_names_it_before_saying_it_connects(
    sqlite_database: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by helper-63's review: `bot` printed "connecting to Discord's gateway" and then
    that the token was missing."""
    from entrypoints.cli import main

    monkeypatch.delenv("TASKFLOW_LINK_DISCORD_BOT_TOKEN", raising=False)
    monkeypatch.setattr(sys, "argv", ["taskflow-link", "bot"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    said = capsys.readouterr()
    assert "TASKFLOW_LINK_DISCORD_BOT_TOKEN" in said.err
    assert "connecting" not in said.out + said.err


# Commands that read or change the database through the use cases.
_COMMANDS_ON_THE_SCHEMA = [
    ["api-key", "list"],
    ["api-key", "create", "crm-sync"],
    ["audit"],
    ["purge-expired"],
    ["webhooks", "status"],
    ["email", "retry"],
]


@pytest.mark.parametrize("argv", _COMMANDS_ON_THE_SCHEMA, ids=" ".join)
def test_a_command_before_db_upgrade_says_to_run_it(sqlite_database: Path, argv: list[str]) -> None:
    """Found by helper-63's review: on a database without tables, the commands said "The
    service cannot reach its database right now" (a missing table reads as an outage)."""
    sqlite_database.touch()  # an empty database (one that does not exist: the next test)
    refused = CliRunner().invoke(cli, argv)
    assert refused.exit_code == 1
    assert (
        f"The database at sqlite+aiosqlite:///{sqlite_database} has no tables yet: run "
        "`taskflow-link db upgrade` first." in refused.output
    )
    assert "cannot reach" not in refused.output


@pytest.mark.parametrize("argv", _COMMANDS_ON_THE_SCHEMA, ids=" ".join)
def test_a_command_on_a_database_file_that_does_not_exist_leaves_it_so(
    sqlite_database: Path, argv: list[str]
) -> None:
    """A mistyped path (or another working directory) created an empty database file there,
    then said it had no tables."""
    refused = CliRunner().invoke(cli, argv)
    assert refused.exit_code == 1
    assert (
        f"There is no database at sqlite+aiosqlite:///{sqlite_database} (no such file)"
        in refused.output
    )
    assert not sqlite_database.exists()


@pytest.mark.parametrize(
    "argv", [["db", "current"], ["db", "downgrade", "base", "--yes"]], ids=" ".join
)
def test_db_current_and_downgrade_on_a_database_file_that_does_not_exist_leave_it_so(
    sqlite_database: Path, argv: list[str]
) -> None:
    """`db current` in another working directory (or with a mistyped path) created an empty
    database file there and answered "base (empty)", as did `db downgrade base --yes` ("Database
    at revision base (empty)."): an operator checking the wrong file read that the database
    was empty. Only `db upgrade` (and `serve`) make one."""
    refused = CliRunner().invoke(cli, argv)
    assert refused.exit_code == 1
    assert (
        f"There is no database at sqlite+aiosqlite:///{sqlite_database} (no such file)"
        in refused.output
    )
    assert "base (empty)" not in refused.output
    assert not sqlite_database.exists()


def test_a_sqlite_file_in_a_directory_that_is_not_there_is_said_before_sqlite_opens_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's "unable to open database file" came from aiosqlite's thread, which then
    (one run in five) outlived the command's event loop and printed "RuntimeError: Event loop
    is closed" as two tracebacks after the error. The file's directory, or a directory where
    the file should be, is now looked at first."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    (tmp_path / "a-directory.db").mkdir()
    for path, said in (
        (
            tmp_path / "missing" / "x.db",
            f"there is no directory {tmp_path / 'missing'} to hold the database file",
        ),
        (
            tmp_path / "a-directory.db",
            f"{tmp_path / 'a-directory.db'} is a directory, not a database file",
        ),
    ):
        monkeypatch.setenv("TASKFLOW_LINK_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
        done = CliRunner().invoke(cli, ["db", "upgrade"])
        assert done.exit_code == 1, done.output
        assert done.stderr == (
            f"Error: Cannot use the database at sqlite+aiosqlite:///{path}: {said}\n"
        ), done.output
        assert "unable to open" not in done.output
        assert "can be read or written by other users" not in done.output


def test_a_database_that_refuses_a_write_is_said_in_its_words_not_as_an_outage(
    sqlite_database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only database (a file the user may not write, a Postgres replica after a
    failover): `api-key create` and `purge-expired` said "The service cannot reach its
    database right now. Try again shortly.", which no wait mends."""
    assert CliRunner().invoke(cli, ["db", "upgrade"]).exit_code == 0
    url = f"sqlite+aiosqlite:///file:{sqlite_database}?mode=ro&uri=true"
    monkeypatch.setenv("TASKFLOW_LINK_DATABASE_URL", url)
    for argv in (["api-key", "create", "crm"], ["purge-expired"]):
        refused = CliRunner().invoke(cli, argv)
        assert refused.exit_code == 1, refused.output
        assert refused.stderr == (
            f"Error: Cannot use the database at {url}: attempt to write a readonly database\n"
        )
    assert "No API keys" in CliRunner().invoke(cli, ["api-key", "list"]).stdout


def test_a_command_on_an_older_schema_names_both_revisions(sqlite_database: Path) -> None:
    from adapters.sql import revisions

    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(cli, ["db", "downgrade", "--yes", "--", "-1"]).exit_code == 0
    older = runner.invoke(cli, ["db", "current"]).output.strip()
    assert older != revisions.head_revision()
    refused = runner.invoke(cli, ["api-key", "list"])
    assert refused.exit_code == 1
    assert (
        f"is at revision {older}, this version needs {revisions.head_revision()}: run "
        "`taskflow-link db upgrade` first." in refused.output
    )
    assert runner.invoke(cli, ["db", "downgrade", "base", "--yes"]).exit_code == 0
    assert "has no tables yet" in runner.invoke(cli, ["api-key", "list"]).output
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(cli, ["api-key", "list"]).exit_code == 0


def test_db_upgrade_and_downgrade_say_what_they_did_and_what_to_do(sqlite_database: Path) -> None:
    """`db upgrade` said "Database at revision X." whatever happened: from where it came,
    nothing; asked up to a revision behind the database's (a downgrade meant), it did nothing
    and said only where the database was; `head+1` was Alembic's AssertionError as a
    traceback, an unknown revision Alembic's words alone."""
    from adapters.sql import revisions

    head = revisions.head_revision()
    older = "0016_email_domains_in_ascii"
    runner = CliRunner()

    def run(*argv: str) -> tuple[int, str, str]:
        done = runner.invoke(cli, list(argv))
        assert "Traceback" not in done.output
        return done.exit_code, done.stdout, done.stderr

    assert run("db", "upgrade", older) == (
        0,
        f"Upgraded the database from base (empty) to {older}.\nDatabase at revision {older}.\n",
        "",
    )
    assert run("db", "upgrade") == (
        0,
        f"Upgraded the database from {older} to {head}.\nDatabase at revision {head}.\n",
        "",
    )
    assert run("db", "upgrade") == (
        0,
        f"Nothing to do: the database was at {head} already.\nDatabase at revision {head}.\n",
        "",
    )
    assert run("db", "upgrade", "0016") == (
        0,
        f"Nothing to do: the database is at {head}, past 0016. To take it back there: "
        "`taskflow-link db downgrade 0016 --yes` (it drops what the later revisions added).\n"
        f"Database at revision {head}.\n",
        "",
    )
    where = (
        f"It is at {head}; this version's revisions go from 0001 to {head} (also: head, base, "
        "and steps such as +1 or -1).\n"
    )
    assert run("db", "upgrade", "head+1") == (
        1,
        "",
        f"Error: Cannot upgrade the database to head+1: no way there from the database's "
        f"revision. {where}",
    )
    assert run("db", "upgrade", "0x") == (
        1,
        "",
        f"Error: Cannot upgrade the database to 0x: Can't locate revision identified by "
        f"'0x'. {where}",
    )
    assert run("db", "downgrade", "--yes", older) == (
        0,
        f"Downgraded the database from {head} to {older}.\nDatabase at revision {older}.\n",
        "",
    )
    assert run("db", "downgrade", "--yes", older) == (
        0,
        f"Nothing to do: the database was at {older} already.\nDatabase at revision {older}.\n",
        "",
    )
    assert run("db", "downgrade", "--yes", "base") == (
        0,
        f"Downgraded the database from {older} to base (empty).\n"
        "Database at revision base (empty).\n",
        "",
    )


def test_a_command_on_a_revision_it_does_not_know_goes_ahead_with_a_warning(
    sqlite_database: Path,
) -> None:
    """A newer release's migration (this copy is the older one): warned about, not refused."""
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    _by_hand(sqlite_database, "UPDATE alembic_version SET version_num = '9999_from_the_future'")
    listed = runner.invoke(cli, ["api-key", "list"])
    assert listed.exit_code == 0, listed.output
    assert "revision 9999_from_the_future, which this version does not know" in listed.stderr
    assert "No API keys" in listed.stdout


@pytest.mark.parametrize(
    ("schema", "level", "said"),
    [
        (
            "UPDATE alembic_version SET version_num = '9999_from_the_future'",
            logging.WARNING,
            [
                "is at revision 9999_from_the_future, which this version does not know",
                "a later release migrated it. This version serves on it, as an older release "
                "does during a rolling upgrade. If this is a rollback meant to last: stop every "
                "instance, take the schema back with the later release's `taskflow-link db "
                "downgrade {head} --yes`",
            ],
        ),
        (
            "UPDATE alembic_version SET version_num = '0016_email_domains_in_ascii'",
            logging.ERROR,
            [
                "is at revision 0016_email_domains_in_ascii, this version needs {head}: run "
                "`taskflow-link db upgrade`; until then",
            ],
        ),
        ("DELETE FROM alembic_version", logging.ERROR, ["has no schema revision: run"]),
        ("SELECT 1", None, []),
    ],
    ids=["later", "older", "none", "current"],
)
async def test_the_web_app_says_at_start_when_the_schema_is_not_its_own(
    sqlite_database: Path,
    caplog: pytest.LogCaptureFixture,
    schema: str,
    level: int | None,
    said: list[str],
) -> None:
    """`serve` on a database a later release migrated (this version rolled back) logged
    nothing: it serves on it (as during a rolling upgrade; refusing would take the older
    instances down as each restarts), and now says so and how to take the schema back should
    the rollback last. On an older schema it says to run `db upgrade`."""
    from litestar.testing import AsyncTestClient

    from adapters.sql import SqlDatabase, migrate, revisions
    from entrypoints.web import create_app

    url = f"sqlite+aiosqlite:///{sqlite_database}"
    database = SqlDatabase(url)
    await migrate.upgrade(database)
    await database.dispose()
    _by_hand(sqlite_database, schema)
    caplog.set_level(logging.DEBUG, logger="taskflow_link.web")
    container = build_container(make_settings(storage="sql", database_url=url))

    def logged() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.getMessage().startswith(("The database at", "schema revision checked"))
        ]

    async with AsyncTestClient(app=create_app(container)):
        await wait_until(logged, 30)  # looked at in the background: a start is not held up
    head = revisions.head_revision()
    if level is None:
        assert [r.getMessage() for r in logged()] == ["schema revision checked at start: current"]
        return
    [record] = logged()
    assert (record.name, record.levelno) == ("taskflow_link.web", level)
    for words in said:
        assert words.format(head=head) in record.getMessage()


def test_db_commands_on_a_newer_releases_schema_say_so(sqlite_database: Path) -> None:
    """A later release migrated the database (this copy is the older one: a rollback). `db
    upgrade` answered Alembic's "Can't locate revision identified by '9999_from_the_future'"
    and failed, so a rollback's release step (compose's `migrate` job, which every instance
    waits for) stopped the rollback; `db downgrade` said the same. Now `db upgrade` has nothing
    to do and says why; a downgrade says which release can do it."""
    from adapters.sql import revisions

    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    _by_hand(sqlite_database, "UPDATE alembic_version SET version_num = '9999_from_the_future'")
    head = revisions.head_revision()

    upgraded = runner.invoke(cli, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout == "Database at revision 9999_from_the_future.\n"
    assert "a later release migrated it" in upgraded.stderr
    assert f"this version's newest is {head}" in upgraded.stderr
    assert (
        "Nothing to do: this version serves on it, as an older release does during a rolling "
        "upgrade. If this is a rollback meant to last: stop every instance, take the schema "
        f"back with the later release's `taskflow-link db downgrade {head} --yes`"
    ) in upgraded.stderr
    assert "Can't locate" not in upgraded.output

    current = runner.invoke(cli, ["db", "current"])
    assert current.exit_code == 0
    assert current.stdout == "9999_from_the_future\n"
    assert "a later release migrated it" in current.stderr

    for argv in (["db", "downgrade", "--yes", head], ["db", "upgrade", head]):
        refused = runner.invoke(cli, argv)
        assert refused.exit_code == 1, argv
        assert "a later release migrated it" in refused.output
        assert f"that release's `taskflow-link db downgrade {head} --yes`" in refused.output
        assert "Can't locate" not in refused.output


def test_db_upgrade_heads_on_a_newer_releases_schema_is_done_as_head(
    sqlite_database: Path,
) -> None:
    """`db upgrade heads` (Alembic's name for every head; this history has one, so it is
    `head`) on a schema a later release migrated was refused with exit status 1, "Run that
    release's `taskflow-link db downgrade …`", as if a revision behind the database had been
    named: a rollback's release step written with `heads` stopped the rollback, where `head`
    has nothing to do and says so."""
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade", "heads"]).exit_code == 0
    _by_hand(sqlite_database, "UPDATE alembic_version SET version_num = '9999_from_the_future'")

    upgraded = runner.invoke(cli, ["db", "upgrade", "heads"])
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout == "Database at revision 9999_from_the_future.\n"
    assert "a later release migrated it. Nothing to do:" in upgraded.stderr


def test_db_commands_on_another_programs_migrations_say_it_is_not_taskflow_links(
    sqlite_database: Path,
) -> None:
    """TASKFLOW_LINK_DATABASE_URL naming another Alembic application's database (TaskFlow's
    own, say): `db upgrade` said "Can't locate revision identified by 'ae1027a6acf'", `db
    current` printed that revision as if it were one of ours, and the data commands warned
    "a newer release's?" and then failed with "The service cannot reach its database"."""
    _by_hand(
        sqlite_database,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
        "INSERT INTO alembic_version VALUES ('ae1027a6acf')",
        "CREATE TABLE users (id INTEGER PRIMARY KEY)",
    )
    runner = CliRunner()
    said = "holds another program's migrations (ae1027a6acf) and none of taskflow-link's tables"
    for argv in (["db", "upgrade"], ["db", "downgrade", "base", "--yes"], ["api-key", "list"]):
        refused = runner.invoke(cli, argv)
        assert refused.exit_code == 1, argv
        assert said in refused.output, refused.output
        assert "cannot reach" not in refused.output
        assert "Can't locate" not in refused.output
    current = runner.invoke(cli, ["db", "current"])
    assert current.stdout == "ae1027a6acf\n"
    assert said in current.stderr
    with contextlib.closing(sqlite3.connect(sqlite_database)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert tables == {"alembic_version", "users"}


def test_db_upgrade_of_another_programs_tables_refuses_naming_them(sqlite_database: Path) -> None:
    """A database of another program that has a table called `accounts` or `sessions` (no
    alembic_version): `db upgrade` failed with "Cannot use the database at …: table accounts
    already exists" followed by the whole CREATE TABLE statement."""
    _by_hand(
        sqlite_database,
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE sessions (id INTEGER PRIMARY KEY)",
        "CREATE TABLE invoices (id INTEGER PRIMARY KEY)",
    )
    refused = CliRunner().invoke(cli, ["db", "upgrade"])
    assert refused.exit_code == 1
    assert (
        f"The database at sqlite+aiosqlite:///{sqlite_database} has tables named as "
        "taskflow-link's (accounts, sessions) but no schema revision, so `taskflow-link db "
        "upgrade` will not take them over" in refused.output
    )
    assert "CREATE TABLE" not in refused.output
    with contextlib.closing(sqlite3.connect(sqlite_database)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert tables == {"accounts", "sessions", "invoices"}


def test_a_database_that_does_not_answer_is_said_so(
    sqlite_database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that takes the connection and never answers: the message ended at the colon,
    "Cannot use the database at …: " (a TimeoutError has no text)."""
    from adapters.sql import migrate

    async def no_answer(database: object) -> None:
        raise TimeoutError

    sqlite_database.touch()
    monkeypatch.setattr(migrate, "current_revision", no_answer)
    failed = CliRunner().invoke(cli, ["db", "current"])
    assert failed.exit_code == 1
    assert (
        f"Cannot use the database at sqlite+aiosqlite:///{sqlite_database}: no answer in time "
        "(TASKFLOW_LINK_DB_CONNECT_TIMEOUT_SECONDS, TASKFLOW_LINK_DB_STATEMENT_TIMEOUT_SECONDS)"
    ) in failed.output


def test_a_database_error_is_said_in_the_drivers_words_without_the_statement(
    sqlite_database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration the database refused printed SQLAlchemy's text: the statement (a whole
    CREATE TABLE), then "(Background on this error at: https://sqlalche.me/…)"."""
    from sqlalchemy.exc import DBAPIError

    from adapters.sql import migrate

    async def refused(database: object, revision: str = "head") -> None:
        raise DBAPIError(
            "UPDATE accounts SET email=? WHERE id = ?",
            None,
            Exception("value too long for type character varying(254)"),
        )

    monkeypatch.setattr(migrate, "upgrade", refused)
    failed = CliRunner().invoke(cli, ["db", "upgrade"])
    assert failed.exit_code == 1
    assert failed.output == (
        f"Error: Cannot use the database at sqlite+aiosqlite:///{sqlite_database}: value too "
        "long for type character varying(254)\n"
    )


def test_a_command_on_a_schema_without_a_table_it_needs_names_it(
    sqlite_database: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A later release's schema without a table this version reads: "The service cannot
    reach its database right now. Try again shortly." (it answered at once, every time)."""
    from entrypoints.cli import main

    assert CliRunner().invoke(cli, ["db", "upgrade"]).exit_code == 0
    _by_hand(
        sqlite_database,
        "UPDATE alembic_version SET version_num = '9999_from_the_future'",
        "DROP TABLE api_keys",
    )
    monkeypatch.setattr(sys, "argv", ["taskflow-link", "api-key", "list"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    said = capsys.readouterr().err
    assert "cannot reach" not in said
    assert "Error: The database has not got what this version needs (no such table: api_keys)" in (
        said
    )


def test_db_current_on_another_programs_tables_does_not_call_the_database_empty(
    sqlite_database: Path,
) -> None:
    """A database with another program's tables and no schema revision: `db current` said
    "base (empty)"."""
    _by_hand(
        sqlite_database,
        "CREATE TABLE invoices (id INTEGER PRIMARY KEY)",
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY)",
    )
    current = CliRunner().invoke(cli, ["db", "current"])
    assert current.exit_code == 0
    assert current.stdout == (
        "base (no schema revision, yet tables named as taskflow-link's: accounts; others: "
        "invoices)\n"
    )
    _by_hand(sqlite_database, "DROP TABLE accounts")
    current = CliRunner().invoke(cli, ["db", "current"])
    assert current.stdout == "base (no taskflow-link tables; it has others: invoices)\n"


def test_a_command_that_cannot_reach_the_database_hides_its_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv(
        "TASKFLOW_LINK_DATABASE_URL", "postgresql+asyncpg://taskflow:s3cr3t-pw@127.0.0.1:1/db"
    )
    monkeypatch.setenv("TASKFLOW_LINK_DB_CONNECT_TIMEOUT_SECONDS", "2")
    failed = CliRunner().invoke(cli, ["api-key", "list"])
    assert failed.exit_code == 1
    assert "Cannot use the database at postgresql+asyncpg://taskflow:***@127.0.0.1:1/db" in (
        failed.output
    )
    assert "s3cr3t-pw" not in failed.output


@pytest.mark.parametrize("wait", ["nan", "NaN", "-nan"])
def test_roles_sync_refuses_a_wait_that_is_not_a_number(
    monkeypatch: pytest.MonkeyPatch, wait: str
) -> None:
    """click's FloatRange takes nan (every comparison with it is false), and a deadline of
    nan never came: the command kept waiting for Discord with no end."""
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    result = CliRunner().invoke(cli, ["roles", "sync", "--wait", wait])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--wait'" in result.output
    assert "is not a number of seconds" in result.output
    assert CliRunner().invoke(cli, ["roles", "sync", "--wait", "3601"]).exit_code == 2


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("TaskFlow, Inc. <no-reply@example.com>", "names 2 addresses"),
        ("no-reply", "has no address"),
        ("TaskFlow <no-reply>", "has no address"),
        ("", "has no address"),
        ("TaskFlow <no-reply@example.com>\nBcc: x@example.com", "holds a line break"),
        # The whole value in double quotes, as `docker run --env-file` passes a quoted .env
        # line (it strips no quotes): one quoted local part with an @ inside and no domain,
        # which was taken, and every email's envelope sender was that quoted string.
        ('"TaskFlow Link <no-reply@example.com>"', "has no address, only one quoted string"),
    ],
)
def test_a_from_address_that_is_not_one_mailbox_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    """Taken as it was, 'TaskFlow, Inc. <no-reply@example.com>' (a comma in an unquoted display
    name) made every email's envelope sender 'TaskFlow' and its From line two mailboxes, and
    a line break made every send fail, retried and given up, with no word at start (an
    attacker's review)."""
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_EMAIL_FROM", value)
    with pytest.raises(SettingsError) as failed:
        load_settings(_env_file=None)
    assert f"TASKFLOW_LINK_EMAIL_FROM: {problem}" in str(failed.value)


@pytest.mark.parametrize(
    "value",
    [
        "TaskFlow Link <no-reply@localhost>",
        '"TaskFlow, Inc." <no-reply@example.com>',
        "no-reply@example.com",
        "Tâche <no-reply@example.com>",
        '"no reply"@example.com',
        "TaskFlow <no-reply@[127.0.0.1]>",
    ],
)
def test_one_mailbox_is_a_from_address(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_EMAIL_FROM", value)
    assert load_settings(_env_file=None).email_from == value


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--host", "0.0.0.0"], "'0.0.0.0' is not this machine"),  # noqa: S104
        (["--host", "192.0.2.1"], "Invalid value for '--host': '192.0.2.1' is not this machine"),
        (
            ["--database", "no-such-directory/demo.db"],
            "Invalid value for '--database':",
        ),
    ],
)
def test_the_demo_refuses_a_host_or_database_it_cannot_use_before_starting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], said: str
) -> None:
    """A host that is not this machine was refused by the settings, in words about
    TASKFLOW_LINK_EMAIL_BACKEND (which the demo sets itself), and a database in a directory
    that does not exist stopped it with SQLite's traceback."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["demo", "--port", "1", "--emulator-port", "2", *argv])
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split())
    assert not (tmp_path / "no-such-directory").exists()


def test_the_demo_names_the_settings_it_takes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The demo ignores .env but takes every setting it does not set itself from the
    environment, without a word: run from a shell holding a deployment's variables, it sent
    its test users' link events to that deployment's webhook receivers, signed with its
    secret, and kept its rate limits in that deployment's Redis. Names only, never a value."""
    monkeypatch.chdir(tmp_path)
    receiver = "https://crm.example.com/hooks/taskflow"
    monkeypatch.setenv("TASKFLOW_LINK_WEBHOOK_URLS", receiver)
    monkeypatch.setenv("TASKFLOW_LINK_WEBHOOK_SECRET", webhook_secret("demo"))
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)  # the demo makes its own
    monkeypatch.setenv("TASKFLOW_LINK_REDIS_URL", "")  # blank: unset
    import socket

    with socket.socket() as holder:  # a port in use stops the demo before it starts anything
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        result = CliRunner().invoke(cli, ["demo", "--port", port, "--emulator-port", "1"])
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "The demo takes these settings from the environment: " in said, said
    taken = said.split("from the environment: ")[1].split(" (unset them")[0].split(", ")
    assert {"TASKFLOW_LINK_WEBHOOK_SECRET", "TASKFLOW_LINK_WEBHOOK_URLS"} <= set(taken), said
    assert "SECRET_KEY," not in said
    assert "REDIS_URL" not in said
    assert receiver not in said
    assert "is in use" in said


def test_the_demo_listens_on_an_ipv6_loopback_address_as_uvicorn_binds_it() -> None:
    """``--host ::1`` was said to be "in use" (the probe was an IPv4 socket), and its URLs
    need the address in brackets."""
    import socket

    from entrypoints.listening import listen_problem, url_host

    assert url_host("::1") == "[::1]"
    assert url_host("127.0.0.1") == "127.0.0.1"
    try:
        holder = socket.socket(socket.AF_INET6)
        holder.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with holder:
        port = holder.getsockname()[1]
        holder.listen()
        assert listen_problem("::1", port) == "in use"
    assert listen_problem("::1", port) is None


def test_the_port_probe_binds_as_the_server_will(monkeypatch: pytest.MonkeyPatch) -> None:
    """One process serves with asyncio, whose IPv6 socket takes IPv6 only: ``serve --host ::``
    was refused as "in use" when another program listened on the port over IPv4 alone, though
    uvicorn would have served. Several worker processes share the socket uvicorn binds itself,
    one that takes IPv4 too: there the port is in use."""
    import socket

    from entrypoints.listening import listen_problem

    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 here")
    ran: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.append(app))
    _serve_settings(monkeypatch)
    with socket.socket() as holder:  # another program, on IPv4 only
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", 0))  # noqa: S104 - a test's listener, closed at once
        holder.listen()
        port = holder.getsockname()[1]
        assert listen_problem("::", port) is None
        assert listen_problem("::", port, workers=2) == "in use"
        started = CliRunner().invoke(cli, ["serve", "--host", "::", "--port", str(port)])
    assert started.exit_code == 0, started.output
    assert len(ran) == 1


def test_the_emulator_prints_settings_that_work_for_an_ipv6_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It printed ``http://::1:8900/api/v10``, which the service refuses as a URL."""
    monkeypatch.setattr(uvicorn, "run", lambda *_args, **_kwargs: None)
    result = CliRunner().invoke(cli, ["emulator", "--host", "::1", "--port", "8900"])
    assert result.exit_code == 0, result.output
    exports = dict(
        line.strip().removeprefix("export ").split("=", 1)
        for line in result.output.splitlines()
        if line.strip().startswith("export TASKFLOW_LINK_DISCORD_")
    )
    assert exports["TASKFLOW_LINK_DISCORD_API_URL"] == "http://[::1]:8900/api/v10"
    settings = load_settings(
        secret_key=TEST_SECRET_KEY,
        **{k.removeprefix("TASKFLOW_LINK_").lower(): v for k, v in exports.items()},
    )
    assert settings.discord_authorize_url.host == "[::1]"


def test_the_emulator_has_no_interactions_url_for_a_gateway_bot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway bot's application has no Interactions Endpoint URL (with one, Discord sends
    it no command): ``--interactions-url ''`` sets none, as an operator leaves it blank."""
    states: list[entrypoints.emulator.EmulatorState] = []
    made = entrypoints.emulator.create_emulator_app

    def keeping(state: entrypoints.emulator.EmulatorState) -> Any:
        states.append(state)
        return made(state)

    monkeypatch.setattr(uvicorn, "run", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(entrypoints.emulator, "create_emulator_app", keeping)
    with reserved_port() as number:
        port = ["--port", str(number)]
        for_gateway = CliRunner().invoke(cli, ["emulator", *port, "--interactions-url", ""])
        by_default = CliRunner().invoke(cli, ["emulator", *port])
    assert for_gateway.exit_code == by_default.exit_code == 0, for_gateway.output
    assert [s.interactions_url for s in states] == [None, "http://127.0.0.1:8000/interactions"]
    assert "over the gateway to `taskflow-link bot`" in for_gateway.output
    assert "Slash commands go to http://127.0.0.1:8000/interactions" in by_default.output


def test_a_dot_env_file_that_is_not_utf8_or_cannot_be_read_is_named_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A .env saved in Latin-1 (an editor's default somewhere) stopped every command with a
    UnicodeDecodeError's traceback; one the process may not read, with a PermissionError's."""
    from pydantic_settings.sources.providers import dotenv as dotenv_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_bytes(
        f"TASKFLOW_LINK_SECRET_KEY={TEST_SECRET_KEY}\nTASKFLOW_LINK_EMAIL_FROM=Caf\xe9 "
        "<no-reply@example.com>\n".encode("latin-1")
    )
    result = CliRunner().invoke(cli, ["config"])
    assert isinstance(result.exception, SettingsError)
    assert "The .env file in the working directory is not UTF-8 text" in str(result.exception)

    def refused(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dotenv_source, "dotenv_values", refused)
    result = CliRunner().invoke(cli, ["config"])
    assert isinstance(result.exception, SettingsError)
    assert "Cannot read the .env file in the working directory: Permission denied" in str(
        result.exception
    )


def test_a_dot_env_that_is_a_directory_is_named_not_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Found by helper-187's review: Docker makes a directory of a bind mount's missing
    source (`-v ./.env:/home/taskflow/.env` before the file was written), and a `.env` that is
    not a file was skipped without a word: every setting at its default, and the operator told
    only that the secret key "is required but not set", though the .env they meant sets it."""
    monkeypatch.delenv("TASKFLOW_LINK_SECRET_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").mkdir()
    result = CliRunner().invoke(cli, ["config"])
    assert isinstance(result.exception, SettingsError)
    assert "The .env in the working directory is not a file (a directory)" in str(result.exception)
    assert "is required but not set" not in str(result.exception)


@pytest.mark.parametrize("name", ["SECRET_KEY", "DISCORD_CLIENT_SECRET", "SMTP_HOST"])
def test_a_setting_holding_a_byte_that_is_not_utf8_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Python keeps such a byte of the environment as a lone surrogate: a secret key holding
    one was accepted ("(set)"), and `serve` stopped with a UnicodeEncodeError's traceback."""
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv(f"TASKFLOW_LINK_{name}", TEST_SECRET_KEY + "\udce9")
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)
    assert f"TASKFLOW_LINK_{name}: is not UTF-8 text" in str(refused.value)


def test_timeouts_in_the_urls_query_start_with_a_warning_saying_what_they_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """URLs that started before keep starting: asyncpg's timeouts in the database's (never
    used: the settings are passed over them), redis-py's in Redis's (used, over the setting)."""
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv(
        "TASKFLOW_LINK_DATABASE_URL",
        "postgresql+asyncpg://u:s3cr3t@db/app?command_timeout=30&timeout=9",
    )
    monkeypatch.setenv(
        "TASKFLOW_LINK_REDIS_URL",
        "redis://:s3cr3t@cache:6379/0?socket_timeout=3&retry_on_timeout=1",
    )
    warnings = load_settings(_env_file=None).warnings()
    said = [w for w in warnings if "_URL: ?" in w]
    assert [w.split(" (")[0] for w in said] == [
        "TASKFLOW_LINK_DATABASE_URL: ?command_timeout= is not used",
        "TASKFLOW_LINK_DATABASE_URL: ?timeout= is not used",
        "TASKFLOW_LINK_REDIS_URL: ?retry_on_timeout= wins over what the service sets",
        "TASKFLOW_LINK_REDIS_URL: ?socket_timeout= wins over what the service sets",
    ]
    assert not any("s3cr3t" in w or "=30" in w for w in warnings)


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("ssl_cert_reqs=none", True),
        ("ssl_check_hostname=false", True),
        ("ssl_cert_reqs=required", False),
        ("", False),
    ],
)
def test_tls_to_redis_that_checks_no_certificate_starts_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, query: str, *, said: bool
) -> None:
    """``rediss://`` with ``?ssl_cert_reqs=none`` (or no hostname check) started silently:
    whoever is on the way to Redis can pass for it, read its password and answer the rate
    limits' counts and the replay guard as they like."""
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_REDIS_URL", f"rediss://:s3cr3t@cache:6379/0?{query}")
    warnings = load_settings(_env_file=None).warnings()
    found = [w for w in warnings if "Redis' certificate" in w]
    assert bool(found) is said, warnings
    assert not any("s3cr3t" in w for w in warnings)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("foo=bar", "has a query parameter this service does not take: 'foo'"),
        ("db=s3cr3t", "has a query parameter whose value redis-py cannot read: 'db'"),
        ("protocol=s3cr3t", "has a query parameter whose value redis-py cannot read"),
        ("decode_responses=true", "has a query parameter this service does not take"),
    ],
)
def test_a_redis_url_whose_query_cannot_work_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, query: str, reason: str
) -> None:
    """redis-py gives each query parameter to its connections by name: an unknown one stopped
    `serve` at start with an ExceptionGroup's traceback (a TypeError inside), a value that is
    not a number where one is wanted with a ValueError's; a timeout there overrode
    TASKFLOW_LINK_REDIS_TIMEOUT_SECONDS without a word."""
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_REDIS_URL", f"redis://cache:6379/0?{query}")
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)
    assert f"TASKFLOW_LINK_REDIS_URL: {reason}" in str(refused.value)
    assert "s3cr3t" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # A traceback at start (the pool is made with the app).
        (
            "redis://:s3cr3t@cache:6379/0?max_connections=-1",
            "has a query parameter whose value redis-py cannot use: 'max_connections'",
        ),
        # Refused by each connection redis-py makes: "unreachable" (or "refuses writes") in
        # /readyz for good, and every instance in its own memory.
        (
            "redis://:s3cr3t@cache:6379/0?protocol=9",
            "has a query parameter whose value redis-py cannot use: 'protocol'",
        ),
        (
            "rediss://:s3cr3t@cache:6380/0?ssl_cert_reqs=maybe",
            "has a query parameter whose value redis-py cannot use: 'ssl_cert_reqs'",
        ),
        ("redis://:s3cr3t@cache:6379?db=-1", "has a database number below 0"),
        # Read as database 0 by redis-py, without a word.
        (
            "redis://:s3cr3t@cache:6379/staging",
            "has a path that is not a database number (redis://cache:6379/2)",
        ),
    ],
)
def test_a_redis_url_redis_py_cannot_use_is_refused_at_start(url: str, reason: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, redis_url=url)
    assert f"TASKFLOW_LINK_REDIS_URL: {reason}" in str(refused.value)
    assert "s3cr3t" not in str(refused.value)


@pytest.mark.parametrize(
    "query",
    [
        "ssl_cert_reqs=required&ssl_check_hostname=false",
        "ssl_cert_reqs=none",
        # How connections talk and are kept: they worked before these checks (RESP3 too),
        # and stopping start-up at an upgrade for them would be an outage.
        "protocol=3",
        "health_check_interval=10&socket_keepalive=true&max_connections=100",
        "max_connections=0",  # redis-py 8: its default cap (100)
    ],
)
def test_a_redis_url_with_connection_settings_in_its_query_is_accepted(
    monkeypatch: pytest.MonkeyPatch, query: str
) -> None:
    url = f"rediss://:pw@cache:6380/2?{query}"
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_REDIS_URL", url)
    settings = load_settings(_env_file=None)
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == url


def _tls_files(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key, as PEM files in ``folder``."""
    return self_signed(folder, "cache", "cache")


@pytest.mark.parametrize("parameter", ["ssl_ca_certs", "ssl_certfile", "ssl_keyfile"])
@pytest.mark.parametrize("problem", ["missing", "a folder", "not PEM"])
def test_a_redis_tls_file_that_cannot_be_read_is_refused_at_start_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, parameter: str, problem: str
) -> None:
    """redis-py reads the URL's TLS files only when it connects: a CA file, certificate or
    key that was not there (or not a PEM file) showed only as "unreachable" in /readyz and
    a log line per call, every instance in its own memory. Start-up stops with one line
    naming the setting, the parameter and the file (never the password)."""
    cert_file, key_file = _tls_files(tmp_path)
    files = {"ssl_ca_certs": cert_file, "ssl_certfile": cert_file, "ssl_keyfile": key_file}
    bad = {"missing": tmp_path / "gone.pem", "a folder": tmp_path, "not PEM": tmp_path / "x"}
    bad["not PEM"].write_text("not a certificate\n", encoding="utf-8")
    files[parameter] = bad[problem]
    query = "&".join(f"{name}={path}" for name, path in files.items())
    url = f"rediss://:s3cr3t@cache:6380/0?ssl_cert_reqs=required&{query}"
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_REDIS_URL", url)
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None)
    message = str(refused.value)
    assert f"TASKFLOW_LINK_REDIS_URL: its {parameter} file " in message, message
    assert repr(str(bad[problem])) in message, message
    assert "s3cr3t" not in message
    served = CliRunner().invoke(cli, ["serve", "--port", str(free_port())])
    assert isinstance(served.exception, SettingsError), served.output
    assert f"its {parameter} file" in str(served.exception)


def test_a_redis_tls_ca_folder_that_is_not_one_is_refused_at_start(tmp_path: Path) -> None:
    url = f"rediss://:s3cr3t@cache:6380/0?ssl_ca_path={tmp_path / 'certs'}"
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, redis_url=url)
    message = str(refused.value)
    assert "TASKFLOW_LINK_REDIS_URL: its ssl_ca_path folder " in message, message
    assert repr(str(tmp_path / "certs")) in message
    assert "s3cr3t" not in message


def test_a_redis_url_with_tls_files_that_can_be_read_is_accepted(tmp_path: Path) -> None:
    cert_file, key_file = _tls_files(tmp_path)
    url = (
        f"rediss://:pw@cache:6380/0?ssl_cert_reqs=required&ssl_ca_certs={cert_file}"
        f"&ssl_certfile={cert_file}&ssl_keyfile={key_file}&ssl_ca_path={tmp_path}"
    )
    settings = load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, redis_url=url)
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == url


def test_each_migrations_header_names_the_revision_it_revises() -> None:
    """0006, 0007 and 0008 said "Revises: 0004" (each revises the one before it)."""
    import re

    from adapters.sql.revisions import VERSIONS

    for path in sorted(VERSIONS.glob("0*.py")):
        text = path.read_text(encoding="utf-8")
        code = re.search(r'^down_revision: str \| None = (?:"([^"]*)"|None)', text, re.MULTILINE)
        header = re.search(r"^Revises: *(.*)$", text, re.MULTILINE)
        assert code is not None, path.name
        assert header is not None, path.name
        assert header.group(1).strip() == (code.group(1) or ""), path.name


def test_db_commands_on_a_version_table_with_two_revisions_say_both(
    sqlite_database: Path,
) -> None:
    """An alembic_version holding two rows (a later release's branch, or one written by
    hand): `db current` and `db upgrade` ended in a traceback, Alembic's "has more than one
    head present; please use get_current_heads()"."""
    from adapters.sql import revisions

    head = revisions.head_revision()
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    _by_hand(sqlite_database, "INSERT INTO alembic_version VALUES ('9999_from_the_future')")

    current = runner.invoke(cli, ["db", "current"])
    assert current.exit_code == 0, current.output
    assert current.stdout == f"{head}, 9999_from_the_future\n"
    assert (
        f"is at revisions {head}, 9999_from_the_future, of which this version does not know "
        "9999_from_the_future" in current.stderr
    )
    upgraded = runner.invoke(cli, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout == f"Database at revision {head}, 9999_from_the_future.\n"
    assert "a later release migrated it. Nothing to do:" in upgraded.stderr

    _by_hand(
        sqlite_database,
        "DELETE FROM alembic_version WHERE version_num = '9999_from_the_future'",
        "INSERT INTO alembic_version VALUES ('0015_web_instances')",
    )
    current = runner.invoke(cli, ["db", "current"])
    assert current.exit_code == 0, current.output
    assert current.stdout == f"0015_web_instances, {head}\n"
    refused = runner.invoke(cli, ["db", "upgrade"])
    assert refused.exit_code == 1
    assert "Traceback" not in refused.output
    assert "get_current_heads" not in refused.output
    assert refused.output.startswith("Error: Cannot upgrade the database to head: ")


def test_commands_on_taskflow_links_tables_without_their_revision_agree(
    sqlite_database: Path,
) -> None:
    """Every table of taskflow-link's and an empty alembic_version (a partial restore, a
    hand-made `alembic stamp base`): `db current` said "base (no taskflow-link tables; it has
    others: accounts, api_keys, …)", the data commands "has no tables yet: run `taskflow-link
    db upgrade` first", and that upgrade then "it is another program's database"."""
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    _by_hand(sqlite_database, "DELETE FROM alembic_version")

    current = runner.invoke(cli, ["db", "current"])
    assert current.exit_code == 0
    assert current.stdout.startswith(
        "base (no schema revision, yet tables named as taskflow-link's: accounts, api_keys, "
    )
    assert "others" not in current.stdout
    said = "but no schema revision, so `taskflow-link db upgrade` will not take them over"
    for argv in (["api-key", "list"], ["db", "upgrade"]):
        refused = runner.invoke(cli, argv)
        assert refused.exit_code == 1, argv
        assert said in refused.output, refused.output
        assert "has no tables yet" not in refused.output
        assert "write the revision back into its alembic_version table" in refused.output


def test_db_upgrade_racing_a_later_releases_upgrade_has_nothing_to_do(
    sqlite_database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later release's `db upgrade` migrates the database between this version's look at
    its revision and the migration's lock (on Postgres it waits for that lock, on SQLite for
    the write lock): Alembic said "Can't locate revision identified by '9999_from_the_future'"
    and the command failed, where it would have had nothing to do a moment later."""
    from adapters.sql import SqlDatabase, migrate

    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    real_upgrade = migrate.upgrade

    async def after_a_later_release(database: SqlDatabase, revision: str = "head") -> None:
        _by_hand(sqlite_database, "UPDATE alembic_version SET version_num = '9999_from_the_future'")
        await real_upgrade(database, revision)

    monkeypatch.setattr(migrate, "upgrade", after_a_later_release)
    upgraded = runner.invoke(cli, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout == "Database at revision 9999_from_the_future.\n"
    assert "a later release migrated it. Nothing to do:" in upgraded.stderr
    assert "Can't locate" not in upgraded.output


def test_db_commands_on_a_guide_followers_database_say_it_is_not_taskflow_links(
    sqlite_database: Path,
) -> None:
    """The database of an application that followed the original guide: its own Alembic
    revision, an `accounts` table and the guide's `user_links`. It passed for a later
    release's schema: `db upgrade` had "nothing to do" (exit 0), and the data commands (and
    `/readyz`, and so `serve`) went on to use its tables."""
    _by_hand(
        sqlite_database,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
        "INSERT INTO alembic_version VALUES ('ae1027a6acf')",
        "CREATE TABLE accounts (id CHAR(32) PRIMARY KEY, name TEXT)",
        "CREATE TABLE user_links (discord_id BIGINT PRIMARY KEY, "
        "taskflow_user_id CHAR(32) NOT NULL, linked_at TIMESTAMP)",
    )
    runner = CliRunner()
    said = "holds another program's migrations (ae1027a6acf) and none of taskflow-link's tables"
    for argv in (["db", "upgrade"], ["api-key", "list"]):
        refused = runner.invoke(cli, argv)
        assert refused.exit_code == 1, argv
        assert said in refused.output, refused.output
        assert "later release" not in refused.output


@pytest.mark.parametrize(
    ("redis", "named"),
    [
        (
            {"redis_timeout_seconds": 2.5},
            "TASKFLOW_LINK_REDIS_TIMEOUT_SECONDS=2.5 with TASKFLOW_LINK_DISCORD_DEFER_AFTER",
        ),
        ({"redis_timeout_seconds": 2}, "TASKFLOW_LINK_REDIS_TIMEOUT_SECONDS=2 with"),  # 2 + 1
        (  # a timeout in the URL wins over the setting (the longer of the two there)
            {"redis_url": "redis://cache:6379/0?socket_timeout=1&socket_connect_timeout=2.5"},
            "TASKFLOW_LINK_REDIS_URL's ?socket_connect_timeout=2.5 with",
        ),
        (  # no "thinking…": the first answer is at the reply deadline (2 s)
            {"redis_timeout_seconds": 1, "discord_defer_after_seconds": 2},
            "TASKFLOW_LINK_REDIS_TIMEOUT_SECONDS=1 with TASKFLOW_LINK_DISCORD_REPLY_DEADLINE",
        ),
        ({"redis_timeout_seconds": 1.9}, None),
        ({}, None),  # the defaults: 0.5 s, then "thinking…" 1 s later
    ],
)
def test_a_redis_timeout_that_eats_discords_three_seconds_is_warned_about(
    redis: dict[str, object], named: str | None
) -> None:
    """Every interaction is checked against Redis before its command starts (HTTP: the
    replay guard; the gateway: which copy runs it), and the command's deadlines count from
    then: with TASKFLOW_LINK_REDIS_TIMEOUT_SECONDS at 2.5 (it may be up to 30), a Redis
    that stopped answering held each interaction that tried it 2.5 s, and its "thinking…",
    1 s later, came after Discord's 3 s: "The application did not respond", without a word
    at start."""
    settings = load_settings(**_production(**{"redis_url": "redis://cache:6379/0", **redis}))
    said = [w for w in settings.warnings() if "3 s" in w]
    if named is None:
        assert said == []
    else:
        assert len(said) == 1, said
        assert said[0].startswith(named)
        assert "The application did not respond" in said[0]
    without_redis = {k: v for k, v in redis.items() if k != "redis_url"}
    assert not [w for w in load_settings(**_production(**without_redis)).warnings() if "3 s" in w]
