"""The installed command as a separate process, the way an operator runs it."""

from __future__ import annotations

import base64
import functools
import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from adapters.sql import migrate
from adapters.tokens import SecretsTokenIssuer
from entrypoints.container import build_container
from tests.harness import TEST_SECRET_KEY, fail_sign_ins, make_settings, webhook_secret
from tests.integration.waiting import NotReadyInTime, until_ready
from tests.servers import PORT_TRIES, free_port, port_was_taken

RUNS = [
    pytest.param([sys.executable, "-c", "from entrypoints.cli import main; main()"], id="main"),
    pytest.param([sys.executable, "-m", "entrypoints"], id="python-m-entrypoints"),
    pytest.param([sys.executable, "-m", "entrypoints.cli"], id="python-m-entrypoints.cli"),
    pytest.param([str(Path(sys.executable).parent / "taskflow-link")], id="script"),
]


@pytest.mark.parametrize("command", RUNS)
def test_every_way_in_runs_the_command_and_reports_a_missing_setting_plainly(
    tmp_path: Path, command: list[str]
) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(  # noqa: S603 - our own command
        [*command, "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2, done
    assert "TASKFLOW_LINK_SECRET_KEY: is required but not set" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", RUNS)
def test_every_way_in_lists_the_commands(tmp_path: Path, command: list[str]) -> None:
    done = subprocess.run(  # noqa: S603 - our own command
        [*command, "--help"], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done
    assert "serve" in done.stdout
    assert "db" in done.stdout


# Every command's help, in one process: each warning is an error there (a deprecation too,
# which Python otherwise hides outside __main__), and one said at import shows here.
_EVERY_HELP = """
import click
from entrypoints.cli import cli

def walk(command, path):
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, [*path, name])

for path in walk(cli, []):
    cli.main([*path, "--help"], prog_name="taskflow-link", standalone_mode=False)
"""


def test_every_command_shows_its_help_without_a_warning_in_a_fresh_environment(
    tmp_path: Path,
) -> None:
    """``taskflow-link``, ``config``, ``db upgrade``, ``emulator``...: what a person first runs
    says nothing on stderr, a library's warning (deprecations included) least of all."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    done = _python(tmp_path, env, "-W", "error", "-c", _EVERY_HELP)
    assert (done.returncode, done.stderr) == (0, ""), done
    assert done.stdout.count("Usage: taskflow-link") > 20  # every command's, not one


# What a serving process builds at start (``serve`` calls the same factory), in a process of
# its own: which modules that left loaded.
_SERVING_APP_MODULES = """
import sys
from entrypoints import asgi
asgi.make_app()
print("\\n".join(sorted(sys.modules)))
"""

# Loaded when first needed, not at start-up: each costs the idle process memory (issue 14's
# target is 120 MB) for something a process answering lookups, /link and Sign in with Discord
# may never do.
_LOADED_WHEN_NEEDED = {
    "cryptography": "Linked Roles' token keys (TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY)",
    "argon2": "the first password hashed or checked",
    "zxcvbn": "the first password judged",
    "aiosmtplib": "the first email sent over SMTP",
    "difflib": "a TASKFLOW_LINK_* variable that is no setting",
    "adapters.memory": "TASKFLOW_LINK_STORAGE=memory",
    "entrypoints.emulator": "the emulator's commands",
    "jinja2": "the first page rendered (the lookup API, /link and the probes render none)",
    "litestar.plugins.jinja": "the first page rendered",
    "entrypoints.role_worker": "a role for linked members (TASKFLOW_LINK_DISCORD_LINKED_ROLES)",
    "entrypoints.role_connection_worker": "Linked Roles (TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS)",
    "entrypoints.web.linked_roles": "Linked Roles (TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS)",
}


def test_a_serving_process_loads_at_start_only_what_it_needs(tmp_path: Path) -> None:
    env = _env(
        TASKFLOW_LINK_STORAGE="sql",
        TASKFLOW_LINK_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        TASKFLOW_LINK_DISCORD_CLIENT_ID="1200000000000000042",
        TASKFLOW_LINK_DISCORD_CLIENT_SECRET="app-secret",
        TASKFLOW_LINK_EMAIL_BACKEND="outbox",
        # Answering interactions over HTTP, as the benchmark's app does: the bot's runtime
        # starts its workers too.
        TASKFLOW_LINK_DISCORD_PUBLIC_KEY="ab" * 32,
        TASKFLOW_LINK_DISCORD_BOT_TOKEN="bot-token",
    )
    done = _python(tmp_path, env, "-c", _SERVING_APP_MODULES)
    assert done.returncode == 0, done
    loaded = set(done.stdout.split())
    assert "entrypoints.web.app" in loaded  # the app was built
    assert "entrypoints.bot.runtime" in loaded  # with HTTP interactions
    early = {
        module: why
        for module, why in _LOADED_WHEN_NEEDED.items()
        if module in loaded or any(name.startswith(module + ".") for name in loaded)
    }
    assert early == {}, "loaded at start-up, though needed only for those"


# A command run as ``taskflow-link`` runs it, which writes at its exit the modules it loaded.
_COMMAND_MODULES = """
import atexit, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
sys.argv = ["taskflow-link", *sys.argv[2:]]
from entrypoints.cli import main
main()
"""

# What only the commands that serve, run the bot, deliver or call Discord load: each a
# second or so of CPU at every start-up of every other command (the integration tests run
# the CLI a hundred times).
_SERVING_LIBRARIES = {
    "aiohttp": "webhooks' and Discord's HTTP client (delivering, calling Discord, the bot)",
    "hikari": "the bot (`bot`, `bot sync`)",
    "lightbulb": "the bot (`bot`, `bot sync`)",
    "litestar": "the web app and the shared state's stores (`serve`, `demo`, workers)",
    "uvicorn": "`serve`, `demo`, `emulator`",
    "redis": "Redis (TASKFLOW_LINK_REDIS_URL), for a process that shares state",
    "entrypoints.emulator": "`demo`, `emulator`",
    "entrypoints.web": "the web app",
    "entrypoints.bot": "the bot",
}


# What no one-off command loads on SQLite: each is loaded only where it is needed.
_ONE_OFF_NEEDLESS = {
    "asyncpg": "Postgres (a postgresql+asyncpg:// URL)",
    "prometheus_client": "counting, in a process that serves /metrics (`serve`, `bot`)",
}
# What a command's help loads not either (about half a second of start-up between them).
_HELP_NEEDLESS = {
    "pydantic_settings": "reading the settings, which no help does",
    "sqlalchemy": "reading the database URL, or the database",
}

_OPERATOR_COMMANDS = [
    ["--help"],
    ["serve", "--help"],
    ["db", "--help"],
    ["db", "upgrade", "--help"],
    ["api-key", "create", "--help"],
    ["config"],
    ["db", "current"],
    ["api-key", "list"],
    ["audit"],
    ["email", "retry"],
    ["webhooks", "status"],
    ["purge-expired"],
]
_HELP = [argv for argv in _OPERATOR_COMMANDS if "--help" in argv]
_NO_USE_CASE = [*_HELP, ["db", "current"]]


def test_an_operator_command_loads_no_server_library(tmp_path: Path) -> None:
    """Which modules each command loads, not how long it takes: the database's commands load
    neither the web app, the bot nor an HTTP client (the container imports an adapter when
    it is first asked for, and closes only what it made); on SQLite none loads asyncpg, none
    counts with Prometheus's client, and a command's help reads no settings (neither
    pydantic-settings nor SQLAlchemy)."""
    env = _env(
        TASKFLOW_LINK_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        TASKFLOW_LINK_WEBHOOK_URLS="https://hooks.example.com/in",
        TASKFLOW_LINK_WEBHOOK_SECRET=webhook_secret("cli"),
    )
    assert _run(tmp_path, env, "db", "upgrade").returncode == 0
    out = tmp_path / "modules.txt"
    early: dict[str, dict[str, str]] = {}
    for argv in _OPERATOR_COMMANDS:
        done = _python(tmp_path, env, "-c", _COMMAND_MODULES, str(out), *argv)
        assert done.returncode == 0, done
        loaded = set(out.read_text().split())
        assert "entrypoints.cli" in loaded
        needless = _SERVING_LIBRARIES | _ONE_OFF_NEEDLESS
        if argv in _HELP:
            needless |= _HELP_NEEDLESS
        if argv in _NO_USE_CASE:
            needless["domain.use_cases"] = "the use cases, for a command that runs none"
        early[" ".join(argv)] = {
            module: why
            for module, why in needless.items()
            if module in loaded or any(name.startswith(module + ".") for name in loaded)
        }
    assert early == {" ".join(argv): {} for argv in _OPERATOR_COMMANDS}, "loaded needlessly"


def _env(**settings: str) -> dict[str, str]:
    """A shell's environment: the settings given, nothing of this test process's (but where
    Python finds the code under test)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY,
    }
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env | settings


def _python(
    cwd: Path, env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """This Python, run with ``args`` in ``cwd`` with ``env``: what it said and how it ended."""
    return subprocess.run(  # noqa: S603 - our own code
        [sys.executable, *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        cwd=cwd,
        timeout=120,  # a deadline only
        check=False,
    )


def _run(
    cwd: Path, env: dict[str, str], *argv: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = _python(cwd, env, "-m", "entrypoints", *argv, stdin=stdin)
    assert "Traceback" not in done.stdout + done.stderr, done
    return done


def test_an_operator_on_postgres_before_and_after_db_upgrade(
    empty_pg_url: str, tmp_path: Path
) -> None:
    """Every answer a sentence with the exit status the README gives (0 done, 1 refused,
    2 usage), the database's password never shown, an API key only once, at its creation."""
    password = make_url(empty_pg_url).password
    env = _env(TASKFLOW_LINK_DATABASE_URL=empty_pg_url)

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        done = _run(tmp_path, env, *argv)
        assert not password or password not in done.stdout + done.stderr, done
        return done

    for argv in (["audit"], ["api-key", "list"], ["purge-expired"], ["webhooks", "status"]):
        refused = run(*argv)
        assert refused.returncode == 1, refused
        assert "has no tables yet: run `taskflow-link db upgrade` first" in refused.stderr
    assert run("db", "current").stdout == "base (empty)\n"
    assert run("db", "upgrade", "").returncode == 2
    assert run("db", "current").stdout == "base (empty)\n"

    head = migrate.head_revision()
    upgraded = run("db", "upgrade")
    assert (upgraded.returncode, upgraded.stdout) == (
        0,
        f"Upgraded the database from base (empty) to {head}.\nDatabase at revision {head}.\n",
    )
    assert run("db", "current").stdout == f"{head}\n"

    created = run("api-key", "create", "crm", "--scope", "links:write", "--expires-in", "30")
    assert created.returncode == 0, created
    key = created.stdout.splitlines()[-1]
    assert key.startswith("tfl_")
    assert "API key 'crm': links:write; expires " in created.stdout
    listed = run("api-key", "list")
    assert "links:write" in listed.stdout
    assert "active" in listed.stdout
    audited = run("audit")
    assert "api_key_created" in audited.stdout
    for shown in (listed, audited):
        assert key not in shown.stdout + shown.stderr
        assert key[:12] not in shown.stdout + shown.stderr
    assert run("api-key", "revoke", "crm").stdout == "API key 'crm' revoked.\n"
    again = run("api-key", "revoke", "crm")
    assert (again.returncode, again.stderr) == (1, "Error: No active API key is named 'crm'.\n")

    kept = run("db", "downgrade", "base")
    assert kept.returncode == 1
    assert "--yes" in kept.stderr
    assert run("db", "current").stdout == f"{head}\n"
    emptied = run("db", "downgrade", "base", "--yes")
    assert (emptied.returncode, emptied.stdout) == (
        0,
        f"Downgraded the database from {head} to base (empty).\n"
        "Database at revision base (empty).\n",
    )
    assert run("db", "current").stdout == "base (empty)\n"


def test_an_operator_finds_the_failed_sign_ins_of_a_login_on_postgres(
    empty_pg_url: str, tmp_path: Path
) -> None:
    """`audit --login`: a failed sign-in's login is recorded as an HMAC under the secret key,
    which the command computes from the login given (with the service's key) and searches
    for; it prints the events, never that HMAC nor the key, and says what to check when none
    match (another key finds nothing)."""
    env = _env(TASKFLOW_LINK_DATABASE_URL=empty_pg_url)
    assert _run(tmp_path, env, "db", "upgrade").returncode == 0
    typed = "Alice@Example.com"
    container = build_container(
        make_settings(storage="sql", database_url=empty_pg_url, secret_key=TEST_SECRET_KEY)
    )
    fail_sign_ins(container, (typed, "203.0.113.7"), ("bob", "203.0.113.8"))
    keyed = SecretsTokenIssuer(TEST_SECRET_KEY).derive(typed.lower(), "sign-in-login")

    for argv, stdin in (
        (["--login", "alice@example.com"], None),
        (["--login", "-", "--since", "1h"], f"{typed}\n"),
    ):
        found = _run(tmp_path, env, "audit", *argv, stdin=stdin)
        assert found.returncode == 0, found
        [line] = found.stdout.splitlines()
        assert line.split("  ")[1:] == [
            "sign_in_failed",
            "account=-",
            "discord=-",
            "client=203.0.113.7 login=(as given)",
        ]
        for hidden in (keyed, TEST_SECRET_KEY):
            assert hidden not in found.stdout + found.stderr
    assert "client=203.0.113.8" in _run(tmp_path, env, "audit", "--login", "BOB").stdout

    another_key = _run(
        tmp_path,
        env | {"TASKFLOW_LINK_SECRET_KEY": TEST_SECRET_KEY[::-1]},
        "audit",
        "--login",
        typed,
    )
    assert (another_key.returncode, another_key.stdout) == (0, "")
    assert "No audit events match." in another_key.stderr
    assert "the service's TASKFLOW_LINK_SECRET_KEY" in another_key.stderr
    blank = _run(tmp_path, env, "audit", "--login", " ")
    assert blank.returncode == 2
    assert "give the login as it was typed to sign in" in blank.stderr


@pytest.mark.parametrize(
    "argv",
    [["db", "current"], ["db", "upgrade"], ["audit"], ["api-key", "create", "crm"]],
    ids=" ".join,
)
def test_a_database_url_that_points_at_nothing_is_said_without_its_password(
    tmp_path: Path, argv: list[str]
) -> None:
    url = f"postgresql+asyncpg://taskflow:n0-such-pw@127.0.0.1:{free_port()}/taskflow"
    done = _run(tmp_path, _env(TASKFLOW_LINK_DATABASE_URL=url), *argv)
    assert done.returncode == 1, done
    assert done.stderr.startswith(
        "Error: Cannot use the database at postgresql+asyncpg://taskflow:***@127.0.0.1:"
    )
    assert "n0-such-pw" not in done.stdout + done.stderr
    # What to do, not only the driver's "Connect call failed" (a mistyped port, a database
    # not started).
    assert "check TASKFLOW_LINK_DATABASE_URL and that the database is running" in done.stderr

    not_a_url = _run(tmp_path, _env(TASKFLOW_LINK_DATABASE_URL="nothing"), *argv)
    assert not_a_url.returncode == 2, not_a_url
    assert "TASKFLOW_LINK_DATABASE_URL: must start with postgresql+asyncpg://" in not_a_url.stderr


def _every_secret_set(database_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """The environment of a deployment with every secret set (fresh random values), and
    what must never be printed: each secret, and the passwords and tokens inside URLs."""
    password, redis_password, hook_token, proxy_password = (
        secrets.token_urlsafe(12) for _ in range(4)
    )
    hidden = {
        "TASKFLOW_LINK_SECRET_KEY": secrets.token_urlsafe(48),
        "TASKFLOW_LINK_DISCORD_CLIENT_SECRET": secrets.token_urlsafe(24),
        "TASKFLOW_LINK_DISCORD_BOT_TOKEN": secrets.token_urlsafe(48),
        "TASKFLOW_LINK_SMTP_PASSWORD": secrets.token_urlsafe(16),
        "TASKFLOW_LINK_WEBHOOK_SECRET": webhook_secret(secrets.token_hex(8)),
        "TASKFLOW_LINK_WEBHOOK_SECRET_PREVIOUS": webhook_secret(secrets.token_hex(8)),
        "TASKFLOW_LINK_METRICS_TOKEN": secrets.token_urlsafe(32),
        "TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY": base64.urlsafe_b64encode(
            secrets.token_bytes(32)
        ).decode(),
        "database password": password,
        "Redis password": redis_password,
        "webhook URL token": hook_token,
        "proxy password": proxy_password,
    }
    env = _env(
        **{name: value for name, value in hidden.items() if name.startswith("TASKFLOW_LINK_")},
        TASKFLOW_LINK_DATABASE_URL=database_url.replace("PASSWORD", password),
        TASKFLOW_LINK_REDIS_URL=f"redis://:{redis_password}@127.0.0.1:{free_port()}/0",
        TASKFLOW_LINK_WEBHOOK_URLS=f"https://hooks.example.com/in/{hook_token}?t={hook_token}",
        TASKFLOW_LINK_DISCORD_CLIENT_ID="1200000000000000042",
        TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS="true",
        TASKFLOW_LINK_EMAIL_BACKEND="smtp",
        TASKFLOW_LINK_SMTP_HOST="127.0.0.1",
        TASKFLOW_LINK_SMTP_USERNAME="mailer",
        https_proxy=f"http://proxy-user:{proxy_password}@proxy.example.com:3128",
    )
    # A webhook secret is also never shown without its prefix, nor a URL's password encoded.
    for name in ("TASKFLOW_LINK_WEBHOOK_SECRET", "TASKFLOW_LINK_WEBHOOK_SECRET_PREVIOUS"):
        hidden[name + " (key)"] = hidden[name].removeprefix("whsec_")
    return env, hidden


def _shown(done: subprocess.CompletedProcess[str], hidden: dict[str, str]) -> list[str]:
    said = done.stdout + done.stderr
    return [name for name, value in hidden.items() if value in said]


def test_no_command_prints_a_secret(tmp_path: Path) -> None:
    """Every secret set, each command run as an operator runs it: none is printed, on stdout
    or stderr, in a setting (`config`), an error (the database or Redis out of reach) or a
    listing; an API key only once, by `api-key create`."""
    database = tmp_path / "app.db"
    env, hidden = _every_secret_set(f"sqlite+aiosqlite:///{database}")
    shown: dict[str, list[str]] = {}
    created = None
    for argv in (
        ["config"],
        ["db", "upgrade"],
        ["db", "current"],
        ["api-key", "create", "crm"],
        ["api-key", "list"],
        ["audit"],
        ["webhooks", "status"],
        ["purge-expired"],
        ["role-connections", "status"],
        ["tokens", "rotate"],
        ["db", "downgrade", "base"],
    ):
        done = _run(tmp_path, env, *argv)
        assert done.returncode in (0, 1), done
        if argv == ["api-key", "create", "crm"]:
            assert done.returncode == 0, done
            created = done.stdout.splitlines()[-1]
            assert created.startswith("tfl_"), done
            hidden["the API key"] = created
            continue
        shown[" ".join(argv)] = _shown(done, hidden)
    assert created is not None
    assert (
        "TASKFLOW_LINK_REDIS_URL = redis://:***@127.0.0.1:" in _run(tmp_path, env, "config").stdout
    )

    # A database server out of reach, its URL with a password (in the user part and, for a
    # second URL, as a query parameter, which asyncpg takes too).
    for url in (
        f"postgresql+asyncpg://taskflow:PASSWORD@127.0.0.1:{free_port()}/taskflow",
        f"postgresql+asyncpg://taskflow@127.0.0.1:{free_port()}/taskflow?password=PASSWORD",
    ):
        pg_env, pg_hidden = _every_secret_set(url)
        for argv in (["config"], ["db", "current"], ["db", "upgrade"], ["api-key", "list"]):
            done = _run(tmp_path, pg_env, *argv)
            assert done.returncode == (0 if argv == ["config"] else 1), done
            shown[f"{' '.join(argv)} on {url.split('@')[0]}…"] = _shown(done, pg_hidden)
    assert shown == {command: [] for command in shown}, "printed a secret"


@pytest.mark.parametrize("attempt", range(5))
def test_a_sqlite_file_in_a_missing_directory_is_one_sentence_never_a_traceback(
    tmp_path: Path, attempt: int
) -> None:
    """aiosqlite's thread, failing to open the file, outlived the command's event loop one
    run in five and printed "RuntimeError: Event loop is closed" twice, as tracebacks, after
    the error (hence several attempts; `_run` refuses a traceback)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/missing/taskflow-link.db"
    done = _run(tmp_path, _env(TASKFLOW_LINK_DATABASE_URL=url), "db", "upgrade")
    assert (done.returncode, done.stderr) == (
        1,
        f"Error: Cannot use the database at {url}: there is no directory {tmp_path}/missing "
        "to hold the database file\n",
    )


def _as_typed_in_a_terminal() -> None:
    """SIGINT as a terminal's shell leaves it to a command: a test run in the background (CI
    runners, a shell's ``&``) ignores it, and a program inherits that, so Ctrl-C never reached
    the command and the test waited out its deadline."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_mid_command_stops_it_with_status_130(tmp_path: Path) -> None:
    """Ctrl-C while a command waits on its database: it stopped at once, but with status 1,
    as a refusal or a failure does, so a script could not tell an interruption from one;
    130 is what a shell reports for a program SIGINT ended."""
    with socket.socket() as database:  # takes the connection, never answers it
        database.bind(("127.0.0.1", 0))
        database.listen()
        database.settimeout(120)  # a deadline only
        port = database.getsockname()[1]
        env = _env(
            TASKFLOW_LINK_DATABASE_URL=f"postgresql+asyncpg://u:n0-such-pw@127.0.0.1:{port}/db",
            TASKFLOW_LINK_DB_CONNECT_TIMEOUT_SECONDS="120",
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "entrypoints", "api-key", "list"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
            preexec_fn=_as_typed_in_a_terminal,  # noqa: PLW1509 - one signal() call, no lock
        )
        connection, _ = database.accept()  # the command waits for the database now
        with connection:
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=120)  # a deadline only
    assert (process.returncode, out, err) == (130, "", "\nInterrupted.\n")


def test_serve_on_a_port_in_use_says_so_and_exits_1(tmp_path: Path) -> None:
    """uvicorn's status 3, after the app's start-up and shutdown logs, was what came out."""
    env = _env(
        TASKFLOW_LINK_STORAGE="memory",
        TASKFLOW_LINK_DISCORD_CLIENT_ID="1200000000000000042",
        TASKFLOW_LINK_DISCORD_CLIENT_SECRET="not-used-here",
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _run(tmp_path, env, "serve", "--port", str(port))
    assert done.returncode == 1, done
    assert f"Error: Port {port} on 127.0.0.1 is in use" in done.stderr
    assert "Uvicorn running" not in done.stderr


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _listening(tmp_path: Path, env: dict[str, str], command: str) -> subprocess.Popen[str]:
    """``command`` on a free port, once it takes connections there. A port found free that
    another process took before the command bound it (both cores busy, other test runs) is
    picked again."""
    for attempt in range(1, PORT_TRIES + 1):
        port = free_port()
        process = subprocess.Popen(  # noqa: S603 - our own command
            [sys.executable, "-m", "entrypoints", command, "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        try:
            if until_ready(process, functools.partial(_answers, port), within=60):
                return process
        except NotReadyInTime:
            process.kill()
            pytest.fail(f"{command} never listened:\n{process.communicate()}")
        out, err = process.communicate()
        if not (port_was_taken(out + err) and attempt < PORT_TRIES):
            pytest.fail(f"{command} ended before it listened:\n{out}{err}")
        # (another process took the port: another one)
    raise AssertionError("unreachable: the last try returns or fails")


@pytest.mark.parametrize("command", ["serve", "emulator"])
def test_sigterm_stops_serve_and_the_emulator_with_status_0(tmp_path: Path, command: str) -> None:
    """The README's exit statuses: 0 for serve, bot, demo and emulator stopped by Ctrl-C or
    SIGTERM, their usual end. uvicorn shuts down cleanly at SIGTERM, then raises the signal
    again for the handler it found, the default one, which killed the process: status -15
    (143 in a shell, "exited (143)" for a container that `docker stop` ended), where the
    gateway bot said 0."""
    env = _env(
        TASKFLOW_LINK_STORAGE="memory",
        TASKFLOW_LINK_DISCORD_CLIENT_ID="1200000000000000042",
        TASKFLOW_LINK_DISCORD_CLIENT_SECRET="not-used-here",
    )
    process = _listening(tmp_path, env, command)
    try:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)  # a deadline only
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, (out, err)
    assert "Traceback" not in out + err


def test_serving_on_a_database_that_answers_nothing_says_so_at_start(tmp_path: Path) -> None:
    """A mistyped host or port in TASKFLOW_LINK_DATABASE_URL, or a database not started yet:
    ``serve`` starts anyway (the database may come later), and only its workers
    said "email queue unreachable (database: ConnectionRefusedError)", naming neither the
    database nor the setting; an unmigrated database was said plainly. Now one line names
    the database (without its password), the setting and what fails until it answers (the
    gateway bot runs the same check, once connected to Discord)."""
    url = f"postgresql+asyncpg://taskflow:n0-such-pw@127.0.0.1:{free_port()}/taskflow"
    env = _env(
        TASKFLOW_LINK_DATABASE_URL=url,
        TASKFLOW_LINK_DISCORD_CLIENT_ID="1200000000000000042",
        TASKFLOW_LINK_DISCORD_CLIENT_SECRET="not-used-here",
    )
    log = tmp_path / "stderr.log"
    argv = ["serve", "--port", str(free_port())]
    with log.open("w") as stderr:
        process = subprocess.Popen(  # noqa: S603 - our own command
            [sys.executable, "-m", "entrypoints", *argv],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        try:
            said = "Cannot reach the database at postgresql+asyncpg://taskflow:***@127.0.0.1:"
            until_ready(process, lambda: said in log.read_text(), within=60)
        finally:
            process.kill()
            process.wait()
    text = log.read_text()
    assert said in text, text
    line = next(line for line in text.splitlines() if said in line)
    assert "TASKFLOW_LINK_DATABASE_URL" in line, line
    assert "n0-such-pw" not in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("argv", "missing", "where"),
    [
        (["bot"], "TASKFLOW_LINK_DISCORD_BOT_TOKEN", "Bot page"),
        (["bot", "sync"], "TASKFLOW_LINK_DISCORD_BOT_TOKEN", "Bot page"),
        (["serve"], "TASKFLOW_LINK_DISCORD_CLIENT_ID", "General Information page"),
    ],
    ids=["bot", "bot sync", "serve"],
)
def test_a_setting_a_command_needs_is_said_with_where_to_get_it(
    tmp_path: Path, argv: list[str], missing: str, where: str
) -> None:
    """ "Missing setting(s) needed by this command: TASKFLOW_LINK_DISCORD_BOT_TOKEN" said what
    was wrong, not what to do: where the value comes from and where it goes. And the bot
    logged warnings about its other settings (the email outbox) before it, as if it would
    start."""
    done = _run(tmp_path, _env(TASKFLOW_LINK_STORAGE="memory"), *argv)
    assert done.returncode == 2, done
    assert done.stderr.startswith(f"Error: Missing setting(s) needed by this command: {missing}")
    assert where in done.stderr, done.stderr
    assert "in a .env file" in done.stderr, done.stderr
    assert "WARNING" not in done.stderr, done.stderr


def test_a_bot_that_cannot_reach_discord_says_what_to_check_without_a_traceback(
    tmp_path: Path,
) -> None:
    """A mistyped TASKFLOW_LINK_DISCORD_API_URL (or no way out of this machine): the bot
    logged a three-part traceback for the failed command sync, then ended with aiohttp's
    "Cannot connect to host …", naming no setting."""
    api = f"http://127.0.0.1:{free_port()}/api/v10"
    env = _env(
        TASKFLOW_LINK_STORAGE="memory",
        TASKFLOW_LINK_DISCORD_BOT_TOKEN="MTIwMDAwMDAwMDAwMDAwMDA0Mg.f3JZ_A.not-a-real-token",
        TASKFLOW_LINK_DISCORD_API_URL=api,
    )
    done = _run(tmp_path, env, "bot")
    assert done.returncode == 1, done
    assert "Error: The bot could not connect to Discord" in done.stderr, done.stderr
    assert f"check TASKFLOW_LINK_DISCORD_API_URL ({api})" in done.stderr, done.stderr
    assert "Could not reach Discord to sync the slash commands" in done.stderr, done.stderr
