"""The benchmark suite: one table of ratios measured in one run, on Postgres with 1M links.

    make bench                                 # the full run (1,000,000 links, ~10 s a row)
    make bench-smoke                           # CI's smoke run: 1000 links, ~1 s a row
    .venv/bin/python -m benchmarks.run --help  # every knob

A throwaway Postgres (the machine's initdb/pg_ctl, or ``--database-url`` with an empty
database) gets the app's migrations and the seeded links; the app (``taskflow-link serve``),
the hand-written reference (``benchmarks/reference.py``), the guide's connect-per-call
(``benchmarks/guide.py``) and the Discord emulator each run in their own process; ``wrk`` and
this process's asyncio drivers make the load. The app and the emulator run from ``--app-venv``
(``make bench``: ``.venv-runtime``, the app without the dev extras, as deployed), the others
from this Python's environment; the header says which install the app ran from. Numbers of
one run are compared with each other only: the machine is shared and noisy. Targets are
reported, never enforced: the run fails only when something is broken (a server does not
start, a request fails).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import math
import os
import platform
import resource
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if not __package__:  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import asyncpg
from nacl.signing import SigningKey

from benchmarks import load, report
from benchmarks.emulator import CLIENT_ID
from benchmarks.load import Measured
from benchmarks.postgres import (
    FIRST_DISCORD_ID,
    LocalPostgres,
    asyncpg_dsn,
    seed_postgres,
    seed_sqlite,
)
from benchmarks.procs import (
    PORT_TRIES,
    PortTakenError,
    Server,
    describe_install,
    free_port,
    python_module,
    start_ready,
    start_server,
    taskflow_link,
)
from benchmarks.report import X
from entrypoints.listening import HTTP_PARSER

CPU_COLUMNS = ("server", "emulator", "postgres", "load generator")


# -- options --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    links: int
    sqlite_links: int
    seconds: float
    warmup: float
    rounds: int
    connections: int
    threads: int
    batch: int
    signin_workers: int
    link_workers: int
    link_workers_sqlite: int
    mixed_requests: int
    generous_deadlines: bool
    # Seconds the app is left idle before each RSS reading (the smoke run's are not read).
    settle: float
    # The SQLite stack starts while the Postgres rows run (the smoke run: its numbers are not
    # read; a full run keeps the machine to the row measured).
    overlap_sqlite: bool
    emulator_as_shipped: bool
    database_url: str | None
    app_python: Path
    output: Path | None
    keep: bool
    start_timeout: float


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark taskflow-link against a hand-written reference; print a table.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CI's smoke run: 1000 links, 1 s a row, 1 round, 1000 mixed requests, no "
        "warm-up, no settling before the RSS readings, the SQLite stack started during the "
        "Postgres rows, generous bot deadlines (only breakage fails it)",
    )
    parser.add_argument("--links", type=int, help="links seeded in Postgres (1,000,000)")
    parser.add_argument("--sqlite-links", type=int, help="links seeded in SQLite (100,000)")
    parser.add_argument("--seconds", type=float, help="seconds of load per measurement (10)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per server (2)")
    parser.add_argument(
        "--rounds",
        type=int,
        help="lookup rounds of app and reference, in turn first (4; guide once)",
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--batch", type=int, default=1000, help="ids per bulk lookup (1000)")
    parser.add_argument("--signin-workers", type=int, default=16)
    parser.add_argument("--link-workers", type=int, default=64, help="/link on Postgres (64)")
    parser.add_argument(
        "--link-workers-sqlite", type=int, default=16, help="/link, SQLite vs Postgres (16)"
    )
    parser.add_argument("--mixed-requests", type=int, help="requests before the RSS (10,000)")
    parser.add_argument(
        "--emulator-as-shipped",
        action="store_true",
        help="let the emulator build an HTTP client per interaction (see benchmarks/emulator.py)",
    )
    parser.add_argument(
        "--database-url",
        help="an EMPTY Postgres database (postgresql+asyncpg://…) instead of a throwaway "
        "cluster from initdb",
    )
    parser.add_argument(
        "--app-venv",
        type=Path,
        help="the virtual environment the app and the emulator run from (`make bench`: "
        ".venv-runtime, taskflow-link without the dev extras, as deployed); default: this "
        "Python's. The reference and the guide run from this Python's",
    )
    parser.add_argument("--output", type=Path, help="also write the report (Markdown) here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--start-timeout", type=float, default=90.0)
    args = parser.parse_args(argv)
    smoke = args.smoke

    def pick(value: float | None, full: float, small: float) -> float:
        return value if value is not None else (small if smoke else full)

    return Options(
        links=int(pick(args.links, 1_000_000, 1000)),
        sqlite_links=int(pick(args.sqlite_links, 100_000, 1000)),
        seconds=pick(args.seconds, 10, 1),
        warmup=pick(args.warmup, 2, 0),
        rounds=int(pick(args.rounds, 4, 1)),
        connections=args.connections,
        threads=args.threads,
        batch=args.batch,
        signin_workers=args.signin_workers,
        link_workers=args.link_workers,
        link_workers_sqlite=args.link_workers_sqlite,
        mixed_requests=int(pick(args.mixed_requests, 10_000, 1000)),
        generous_deadlines=smoke,
        settle=0 if smoke else 1,
        overlap_sqlite=smoke,
        emulator_as_shipped=args.emulator_as_shipped,
        database_url=args.database_url,
        app_python=(
            args.app_venv.absolute() / "bin" / "python"
            if args.app_venv is not None
            else Path(sys.executable)
        ),
        output=args.output,
        keep=args.keep,
        start_timeout=args.start_timeout,
    )


# -- measuring CPU --------------------------------------------------------------------------------


def _load_generator_cpu() -> float:
    """This process (the asyncio drivers) and its reaped children (wrk)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def cpu_of(
    sources: Mapping[str, Callable[[], float] | None],
) -> Iterator[Callable[[Measured], None]]:
    """Yields ``note(measured)``, which stores CPU ms per request of each source since entry."""

    def read() -> dict[str, float]:
        values: dict[str, float] = {}
        for name, source in sources.items():
            try:
                values[name] = source() if source is not None else math.nan
            except (OSError, ValueError, IndexError):
                values[name] = math.nan
        return values

    before = read()

    def note(measured: Measured) -> None:
        after = read()
        count = max(measured.requests, 1)
        measured.cpu_ms = {k: (after[k] - before[k]) * 1000 / count for k in sources}

    yield note


# -- the stack ------------------------------------------------------------------------------------


@dataclass
class DiscordKeys:
    """The emulated application's secrets, chosen here and given to emulator and app."""

    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    seed: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    bot_token: str = field(
        default_factory=lambda: (
            base64.b64encode(CLIENT_ID.encode()).decode().rstrip("=")
            + f".{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(27)}"
        )
    )

    @property
    def public_key(self) -> str:
        return SigningKey(self.seed).verify_key.encode().hex()

    def emulator_env(self) -> dict[str, str]:
        return {
            "BENCH_EMULATOR_SEED": self.seed.hex(),
            "BENCH_EMULATOR_BOT_TOKEN": self.bot_token,
            "BENCH_EMULATOR_CLIENT_SECRET": self.client_secret,
        }


@dataclass
class Stack:
    """An emulator and the app wired to it (on one database)."""

    app: Server
    emulator: Server


async def start_stack(
    name: str, database_url: str, workdir: Path, options: Options, *, secret_key: str
) -> Stack:
    """The emulator and the app, ready; both started again, the app on another port, when
    another process took the app's port before it bound it (the emulator, told the app's
    address, starts again on another port by itself)."""
    keys = DiscordKeys()
    for attempt in range(1, PORT_TRIES + 1):
        try:
            return await _start_stack_on(
                free_port(), name, database_url, workdir, options, keys=keys, secret_key=secret_key
            )
        except PortTakenError:
            if attempt == PORT_TRIES:
                raise
    raise AssertionError("unreachable")


async def _start_stack_on(
    app_port: int,
    name: str,
    database_url: str,
    workdir: Path,
    options: Options,
    *,
    keys: DiscordKeys,
    secret_key: str,
) -> Stack:
    app_url = f"http://127.0.0.1:{app_port}"
    deadline = "60" if options.generous_deadlines else "3"
    emulator = await start_ready(
        f"emulator-{name}",
        lambda emulator_port: python_module(
            "benchmarks.emulator",
            f"--port={emulator_port}",
            f"--app-url={app_url}",
            f"--response-deadline={deadline}",
            *(["--as-shipped"] if options.emulator_as_shipped else []),
            python=options.app_python,
        ),
        env=keys.emulator_env(),
        workdir=workdir,
        within=options.start_timeout,
        path="/_emulator/users",
    )
    servers = [emulator]
    try:
        env = {
            "TASKFLOW_LINK_DATABASE_URL": database_url,
            "TASKFLOW_LINK_PUBLIC_URL": app_url,
            "TASKFLOW_LINK_SECRET_KEY": secret_key,
            "TASKFLOW_LINK_DISCORD_CLIENT_ID": CLIENT_ID,
            "TASKFLOW_LINK_DISCORD_CLIENT_SECRET": keys.client_secret,
            "TASKFLOW_LINK_DISCORD_BOT_TOKEN": keys.bot_token,
            "TASKFLOW_LINK_DISCORD_PUBLIC_KEY": keys.public_key,
            "TASKFLOW_LINK_DISCORD_API_URL": f"{emulator.url}/api/v10",
            "TASKFLOW_LINK_DISCORD_AUTHORIZE_URL": f"{emulator.url}/oauth2/authorize",
            # All load comes from one address; 10,000 a minute is the setting's maximum.
            "TASKFLOW_LINK_AUTH_RATE_LIMIT_PER_MINUTE": "10000",
            "TASKFLOW_LINK_EMAIL_BACKEND": "outbox",
        }
        if options.generous_deadlines:  # a slow CI machine must not make /link "late"
            env["TASKFLOW_LINK_DISCORD_REPLY_DEADLINE_SECONDS"] = "20"
            env["TASKFLOW_LINK_DISCORD_ANSWER_DEADLINE_SECONDS"] = "25"
            env["TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS"] = "60"
        app = start_server(
            f"app-{name}",
            taskflow_link("serve", f"--port={app_port}", python=options.app_python),
            port=app_port,
            env=env,
            workdir=workdir,
        )
        servers.append(app)
        await app.wait_ready(within=options.start_timeout)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return Stack(app, emulator)


async def prepare_database(database_url: str, secret_key: str, links: int) -> str:
    """Migrate with the app's migrations, seed, and create an API key with the app's own use
    case. Returns the key."""
    from adapters.sql import SqlDatabase, migrate  # noqa: PLC0415
    from entrypoints.container import build_container  # noqa: PLC0415
    from entrypoints.settings import Settings  # noqa: PLC0415

    database = SqlDatabase(database_url)
    try:
        await migrate.upgrade(database)
    finally:
        await database.dispose()
    if database_url.startswith("postgresql"):
        await seed_postgres(asyncpg_dsn(database_url), links)
    settings = Settings(
        storage="sql",
        database_url=database_url,
        secret_key=secret_key,
        _env_file=None,
    )
    container = build_container(settings)
    try:
        created = await container.create_api_key().execute("bench")
    finally:
        await container.sql_db().dispose()
    token: str = created.token
    return token


# -- checks ---------------------------------------------------------------------------------------


async def check_lookups(servers: Sequence[Server], api_key: str, links: int) -> None:
    """Before timing anything: every server answers the same JSON for the same id, 404 for an
    unknown one and 401 without a valid key."""
    path = f"/api/v1/links/{FIRST_DISCORD_ID + max(1, links // 2)}"
    headers = {"Authorization": f"Bearer {api_key}"}
    answers = {}
    async with aiohttp.ClientSession() as session:
        for server in servers:
            async with session.get(server.url + path, headers=headers) as answer:
                if answer.status != 200:
                    raise RuntimeError(f"{server.name}: GET {path} -> {answer.status}")
                answers[server.name] = await answer.json()
            unknown = f"/api/v1/links/{FIRST_DISCORD_ID + links + 1}"
            async with session.get(server.url + unknown, headers=headers) as answer:
                if answer.status != 404:
                    raise RuntimeError(f"{server.name}: unknown id -> {answer.status}")
            bad = {"Authorization": "Bearer tfl_" + "x" * 43}
            async with session.get(server.url + path, headers=bad) as answer:
                if answer.status != 401:
                    raise RuntimeError(f"{server.name}: a wrong key -> {answer.status}")
    first = next(iter(answers.values()))
    for name, answer in answers.items():
        if answer != first:
            raise RuntimeError(f"{name} answers {answer}, not {first}: not the same handler")


async def bulk_route_status(app: Server, api_key: str) -> int:
    body = {"discord_ids": [str(FIRST_DISCORD_ID + 1), str(FIRST_DISCORD_ID + 2)]}
    headers = {"Authorization": f"Bearer {api_key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{app.url}/api/v1/links/lookup", json=body, headers=headers) as answer,
    ):
        await answer.read()
        return answer.status


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Results:
    options: Options
    install: str = ""
    measured: list[Measured] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)
    lookup: dict[str, Measured] = field(default_factory=dict)
    bulk: Measured | None = None
    bulk_status: int | None = None
    signin: Measured | None = None
    link_pg: Measured | None = None
    link_pg_small: Measured | None = None
    link_sqlite: Measured | None = None
    postgres_version: str = ""

    def keep(self, measured: Measured) -> Measured:
        self.measured.append(measured)
        for problem in measured.problems:
            self.problems.append(f"{measured.label}: {problem}")
        if measured.errors and not measured.problems:
            self.problems.append(f"{measured.label}: {measured.errors} failed requests")
        return measured


def combine(label: str, runs: Sequence[Measured]) -> Measured:
    """Rounds of one server: total requests over total time, mean percentiles."""

    def mean(values: Sequence[float]) -> float:
        return sum(values) / len(values)

    combined = Measured(
        label,
        sum(r.requests for r in runs),
        sum(r.seconds for r in runs),
        mean([r.p50 for r in runs]),
        mean([r.p90 for r in runs]),
        mean([r.p99 for r in runs]),
        max(r.max for r in runs),
        sum(r.errors for r in runs),
    )
    combined.cpu_ms = {k: mean([r.cpu_ms.get(k, math.nan) for r in runs]) for k in runs[0].cpu_ms}
    return combined


async def run(options: Options, workdir: Path, install: str) -> Results:  # noqa: PLR0912, PLR0915 - the run, in order
    results = Results(options, install)
    secret_key = secrets.token_urlsafe(48)
    postgres: LocalPostgres | None = None
    servers: list[Server] = []
    sqlite_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"

    async def start_sqlite_stack() -> Stack:
        await prepare_database(sqlite_url, secret_key, 0)
        seed_sqlite(workdir / "bench.db", options.sqlite_links)
        return await start_stack("sqlite", sqlite_url, workdir, options, secret_key=secret_key)

    sqlite_starting: asyncio.Task[Stack] | None = None
    try:
        # -- database
        t0 = time.monotonic()
        if options.database_url:
            database_url = options.database_url
        else:
            postgres = LocalPostgres(workdir)
            database_url = postgres.url
        dsn = asyncpg_dsn(database_url)
        api_key = await prepare_database(database_url, secret_key, options.links)
        connection = await asyncpg.connect(dsn)
        try:
            version = await connection.fetchval("SHOW server_version")
            collation = await connection.fetchval("SHOW lc_collate")
            results.postgres_version = f"{version.split()[0]}, collation {collation}"
        finally:
            await connection.close()
        log(f"Postgres ready and {options.links:,} links seeded in {time.monotonic() - t0:.0f} s")
        postgres_cpu = postgres.cpu_seconds if postgres is not None else None

        # -- servers: the emulator and the app, then the reference and the guide
        stack = await start_stack("postgres", database_url, workdir, options, secret_key=secret_key)
        servers += [stack.app, stack.emulator]
        app = stack.app
        if options.overlap_sqlite:
            sqlite_starting = asyncio.create_task(start_sqlite_stack())
        db_env = {"BENCH_DSN": dsn}
        reference = await start_ready(
            "reference",
            lambda port: python_module("benchmarks.reference", f"--port={port}"),
            env=db_env,
            workdir=workdir,
            within=options.start_timeout,
        )
        servers.append(reference)
        guide = await start_ready(
            "guide",
            lambda port: python_module("benchmarks.guide", f"--port={port}"),
            env=db_env,
            workdir=workdir,
            within=options.start_timeout,
        )
        servers.append(guide)
        await check_lookups([app, reference, guide], api_key, options.links)
        log("servers up; app, reference and guide agree on a lookup")

        # -- memory: idle (after start-up and the requests above), then after mixed requests
        await asyncio.sleep(options.settle)
        results.rss["app idle"] = app.rss_mb()
        results.rss["reference idle"] = reference.rss_mb()
        mixed = results.keep(
            await load.drive(
                f"{options.mixed_requests:,} mixed requests",
                load.mixed_call(app.url, api_key, options.links),
                workers=16,
                seconds=3600,
                limit=options.mixed_requests,
            )
        )
        await asyncio.sleep(options.settle)
        results.rss["app after mixed"] = app.rss_mb()
        log(f"RSS measured (mixed requests at {mixed.rate:,.0f}/s)")

        # -- lookups: app, reference (interleaved rounds) and the guide, same wrk settings
        wrk_env = {"BENCH_LINKS": str(options.links), "BENCH_API_KEY": api_key}

        def lookup(server: Server, label: str, seconds: float) -> Measured:
            sources = {
                "server": server.cpu_seconds,
                "postgres": postgres_cpu,
                "load generator": _load_generator_cpu,
            }
            with cpu_of(sources) as note:
                measured = load.run_wrk(
                    label,
                    server.url,
                    "lookup.lua",
                    seconds=seconds,
                    connections=options.connections,
                    threads=options.threads,
                    env=wrk_env,
                )
                note(measured)
            return measured

        if options.warmup > 0:
            for server in (app, reference, guide):
                lookup(server, "warm-up", options.warmup)
        runs: dict[str, list[Measured]] = {"app": [], "reference": [], "guide": []}
        pair = (("app", app), ("reference", reference))
        for number in range(options.rounds):
            # App first, then reference first: the machine's drift falls on both alike.
            for name, server in pair if number % 2 == 0 else pair[::-1]:
                runs[name].append(lookup(server, f"lookup: {name}", options.seconds))
            if number == 0:
                runs["guide"].append(lookup(guide, "lookup: guide", options.seconds))
        for name, measured in runs.items():
            results.lookup[name] = results.keep(combine(f"lookup: {name}", measured))
        log(
            "lookups: app {:,.0f}/s, reference {:,.0f}/s, guide {:,.0f}/s".format(
                *(results.lookup[n].rate for n in ("app", "reference", "guide"))
            )
        )
        reference.stop()
        guide.stop()

        # -- bulk lookup (once the route exists)
        app_sources = {
            "server": app.cpu_seconds,
            "emulator": stack.emulator.cpu_seconds,
            "postgres": postgres_cpu,
            "load generator": _load_generator_cpu,
        }
        results.bulk_status = await bulk_route_status(app, api_key)
        if results.bulk_status in (404, 405):
            log(f"bulk lookup: route missing ({results.bulk_status})")
        else:
            with cpu_of(app_sources) as note:
                bulk = load.run_wrk(
                    f"bulk lookup ({options.batch} ids)",
                    app.url,
                    "bulk.lua",
                    seconds=options.seconds,
                    connections=options.connections,
                    threads=options.threads,
                    env={**wrk_env, "BENCH_BATCH": str(options.batch)},
                )
                note(bulk)
            results.bulk = results.keep(bulk)
            log(f"bulk lookup: {bulk.rate:,.1f}/s")

        # -- Sign in with Discord: new users, through the emulator
        results.signin = results.keep(
            await sign_in(stack, options, app_sources, "Sign in with Discord")
        )
        log(f"sign-in: {results.signin.rate:,.1f}/s")

        # -- /link over HTTP interactions, on Postgres
        from entrypoints.bot.replies import SOMETHING_WENT_WRONG  # noqa: PLC0415

        strict = options.generous_deadlines
        link_users = await load.create_emulator_users(
            stack.emulator.url, "benchlink", 256, verified_email=False
        )
        link_call = load.slash_link_call(
            stack.emulator.url, link_users, SOMETHING_WENT_WRONG, late_is_error=strict
        )
        if options.warmup > 0:
            await load.drive("warm-up", link_call, workers=16, seconds=options.warmup)
        results.link_pg = results.keep(
            await _drive_with_cpu(
                app_sources,
                f"/link, Postgres, {options.link_workers} concurrent",
                link_call,
                workers=options.link_workers,
                seconds=options.seconds,
            )
        )
        results.link_pg_small = results.keep(
            await _drive_with_cpu(
                app_sources,
                f"/link, Postgres, {options.link_workers_sqlite} concurrent",
                link_call,
                workers=options.link_workers_sqlite,
                seconds=options.seconds,
            )
        )
        log(f"/link on Postgres: {results.link_pg.rate:,.1f}/s")
        results.rss["app at the end"] = app.rss_mb()
        for server in (app, stack.emulator):
            _check_log(server, results)
            server.stop()

        # -- /link on SQLite
        if sqlite_starting is None:
            sqlite_stack = await start_sqlite_stack()
        else:
            sqlite_stack, sqlite_starting = await sqlite_starting, None
        servers += [sqlite_stack.app, sqlite_stack.emulator]
        sqlite_users = await load.create_emulator_users(
            sqlite_stack.emulator.url, "benchlink", 256, verified_email=False
        )
        sqlite_call = load.slash_link_call(
            sqlite_stack.emulator.url, sqlite_users, SOMETHING_WENT_WRONG, late_is_error=strict
        )
        if options.warmup > 0:
            await load.drive("warm-up", sqlite_call, workers=16, seconds=options.warmup)
        sqlite_sources = {
            "server": sqlite_stack.app.cpu_seconds,
            "emulator": sqlite_stack.emulator.cpu_seconds,
            "load generator": _load_generator_cpu,
        }
        results.link_sqlite = results.keep(
            await _drive_with_cpu(
                sqlite_sources,
                f"/link, SQLite, {options.link_workers_sqlite} concurrent",
                sqlite_call,
                workers=options.link_workers_sqlite,
                seconds=options.seconds,
            )
        )
        log(f"/link on SQLite: {results.link_sqlite.rate:,.1f}/s")
        for server in (sqlite_stack.app, sqlite_stack.emulator):
            _check_log(server, results)
    finally:
        if sqlite_starting is not None:  # the run failed before it: stop what it started
            sqlite_starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                early = await sqlite_starting
                for server in (early.app, early.emulator):
                    server.stop()
        for server in servers:
            server.stop()
        if postgres is not None:
            postgres.stop()
    return results


async def sign_in(
    stack: Stack, options: Options, sources: Mapping[str, Callable[[], float] | None], label: str
) -> Measured:
    """16 browsers at a time, each login a new Discord user (so Discord shows its consent
    screen) with a verified email nobody uses: each login creates an account."""
    # Enough new users for the warm-up and the run; the app's rate limit (10,000 a minute)
    # caps logins at about 170/s anyway.
    needed = int((options.warmup + options.seconds) * 170) + 4 * options.signin_workers
    users = await load.create_emulator_users(
        stack.emulator.url, "benchsignin", needed, verified_email=True
    )
    queue = iter(users)
    shown_consent: set[int] = set()

    async def call(session: aiohttp.ClientSession, worker: int) -> load.Outcome:
        user = next(queue, None)
        if user is None:
            return load.Outcome(False, "ran out of emulator users: raise the estimate")
        show = worker not in shown_consent
        shown_consent.add(worker)
        return await load.sign_in_with_discord(
            session, stack.app.url, stack.emulator.url, user, show_consent_page=show
        )

    if options.warmup > 0:
        await load.drive("warm-up", call, workers=options.signin_workers, seconds=options.warmup)
    return await _drive_with_cpu(
        sources,
        f"{label}, {options.signin_workers} concurrent",
        call,
        workers=options.signin_workers,
        seconds=options.seconds,
        limit=len(users),
    )


async def _drive_with_cpu(
    sources: Mapping[str, Callable[[], float] | None],
    label: str,
    call: load.Call,
    *,
    workers: int,
    seconds: float,
    limit: int | None = None,
) -> Measured:
    """``load.drive``, with the CPU each of ``sources`` spent per request noted."""
    with cpu_of(sources) as note:
        measured = await load.drive(label, call, workers=workers, seconds=seconds, limit=limit)
        note(measured)
    return measured


def _check_log(server: Server, results: Results) -> None:
    """The server's errors, as notes: how many, and the commonest messages."""
    errors: Counter[str] = Counter()
    tracebacks = 0
    for line in server.log_lines():
        tracebacks += line.startswith("Traceback (most recent call last)")
        fields = line.split(" ", 3)  # date, time, level, logger and message
        if len(fields) == 4 and fields[2] in ("ERROR", "CRITICAL"):
            errors[fields[3][:160]] += 1
    if errors or tracebacks:
        common = "; ".join(f"{n}{X} `{message}`" for message, n in errors.most_common(3))
        results.notes.append(
            f"{server.name} logged {errors.total()} error(s) and {tracebacks} traceback(s)"
            + (f"; commonest: {common}" if common else "")
            + "."
        )


# -- the table ------------------------------------------------------------------------------------


def table(results: Results) -> list[report.Row]:
    r, rows = report, []
    app, ref, guide = (results.lookup[n] for n in ("app", "reference", "guide"))
    n = results.options.connections
    rows.append(
        r.Row(
            f"lookup `GET /api/v1/links/{{id}}`, {n} connections: throughput",
            r.rate(app.rate),
            f"reference {r.rate(ref.rate)}",
            r.times(r.ratio(app.rate, ref.rate), 0.8),
            f"≥ 0.8{X}",
            r.met(r.ratio(app.rate, ref.rate) >= 0.8),
        )
    )
    rows.append(
        r.Row(
            "lookup vs the guide's connect-per-call",
            r.rate(app.rate),
            f"guide {r.rate(guide.rate)}",
            r.times(r.ratio(app.rate, guide.rate), 10),
            f"≥ 10{X}",
            r.met(r.ratio(app.rate, guide.rate) >= 10),
        )
    )
    rows.append(
        r.Row(
            f"lookup p99 at {n} connections",
            r.ms(app.p99),
            f"reference {r.ms(ref.p99)}",
            r.times(r.ratio(app.p99, ref.p99), 2),
            f"≤ 2{X}",
            r.met(r.ratio(app.p99, ref.p99) <= 2),
        )
    )
    for name, attribute in (("p50", "p50"), ("p90", "p90"), ("max", "max")):
        rows.append(
            r.Row(
                f"lookup {name}",
                r.ms(getattr(app, attribute)),
                f"reference {r.ms(getattr(ref, attribute))}, guide "
                f"{r.ms(getattr(guide, attribute))}",
                r.times(r.ratio(getattr(app, attribute), getattr(ref, attribute))),
                "",
                "",
            )
        )
    batch = results.options.batch
    if results.bulk is None:
        rows.append(
            r.Row(
                f"bulk lookup `POST /api/v1/links/lookup` ({batch} ids): cost in single lookups",
                f"n/a (route missing: {results.bulk_status})",
                f"lookup {r.rate(app.rate)}",
                "n/a",
                "< 20",
                "n/a",
            )
        )
    else:
        cost = r.ratio(app.rate, results.bulk.rate)
        rows.append(
            r.Row(
                f"bulk lookup `POST /api/v1/links/lookup` ({batch} ids): cost in single lookups",
                f"{results.bulk.rate:,.1f}/s (p99 {r.ms(results.bulk.p99)})",
                f"lookup {r.rate(app.rate)}",
                f"{r.number(cost, 1, 20)} lookups",
                "< 20",
                r.met(cost < 20),
            )
        )
    if results.signin is not None:
        s = results.signin
        rows.append(
            r.Row(
                f"Sign in with Discord, new users, {results.options.signin_workers} at a time",
                f"{s.rate:,.1f}/s (p50 {r.ms(s.p50)}, p99 {r.ms(s.p99)})",
                f"lookup {r.rate(app.rate)}",
                r.times(r.ratio(s.rate, app.rate), 0.2),
                f"≥ 0.2{X}",
                r.met(r.ratio(s.rate, app.rate) >= 0.2),
            )
        )
    if results.link_pg is not None:
        k = results.link_pg
        workers = results.options.link_workers
        rows.append(
            r.Row(
                f"/link over HTTP interactions, {workers} concurrent, Postgres: throughput",
                f"{k.rate:,.1f}/s (reply p50 {r.ms(k.extra.get('reply_p50', math.nan))}, "
                f"p99 {r.ms(k.extra.get('reply_p99', math.nan))})",
                f"lookup {r.rate(app.rate)}",
                r.times(r.ratio(k.rate, app.rate), 0.5),
                f"≥ 0.5{X}",
                r.met(r.ratio(k.rate, app.rate) >= 0.5),
            )
        )
        late = int(k.extra.get("late", 0))
        slowest = k.extra.get("reply_max", math.nan)
        rows.append(
            r.Row(
                f"/link, {workers} concurrent: slowest reply",
                f"{r.ms(slowest)}" + (f", {late} late" if late else ""),
                f"round trip through the emulator: max {r.ms(k.max)}",
                "",
                "≤ 1 s, none late",
                r.met(slowest <= 1000 and not late),
            )
        )
    if results.link_sqlite is not None and results.link_pg_small is not None:
        q, p = results.link_sqlite, results.link_pg_small
        workers = results.options.link_workers_sqlite
        rows.append(
            r.Row(
                f"/link, {workers} concurrent: SQLite p99 vs Postgres p99",
                f"SQLite {r.ms(q.p99)} ({q.rate:,.1f}/s"
                + (f", {int(q.extra['late'])} late" if q.extra.get("late") else "")
                + ")",
                f"Postgres {r.ms(p.p99)} ({p.rate:,.1f}/s"
                + (f", {int(p.extra['late'])} late" if p.extra.get("late") else "")
                + ")",
                r.times(r.ratio(q.p99, p.p99), 3),
                f"≤ 3{X}",
                r.met(r.ratio(q.p99, p.p99) <= 3),
            )
        )
    rss = results.rss
    mixed = results.options.mixed_requests
    rows.append(
        r.Row(
            "memory: idle RSS (after start-up and a few requests)",
            r.mb(rss["app idle"]),
            f"reference {r.mb(rss['reference idle'])}",
            "",
            "≤ 120 MB",
            r.met(rss["app idle"] <= 120),
        )
    )
    rows.append(
        r.Row(
            f"memory: RSS after {mixed:,} mixed requests",
            r.mb(rss["app after mixed"]),
            f"idle {r.mb(rss['app idle'])}",
            "",
            "≤ 150 MB",
            r.met(rss["app after mixed"] <= 150 if mixed >= 10_000 else None),
        )
    )
    if "app at the end" in rss:
        rows.append(
            r.Row("memory: RSS after every row above", r.mb(rss["app at the end"]), "", "", "", "")
        )
    return rows


def render(results: Results, started: dt.datetime, seconds_taken: float) -> str:
    o = results.options
    database = (
        f"Postgres {results.postgres_version}"
        + (" (given with --database-url)" if o.database_url else " (throwaway cluster, fsync off)")
        + f", {o.links:,} links; SQLite {o.sqlite_links:,} links"
    )
    lines = [
        "## taskflow-link benchmark",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC · {os.cpu_count()} CPUs · Python "
        f"{platform.python_version()} · {platform.machine()} · {database} · "
        f"{o.seconds:g} s per measurement, {o.rounds} round(s) · whole run "
        f"{seconds_taken:.0f} s · {results.install}",
        "",
        report.markdown(table(results)),
        "",
        "Notes:",
        f"- Lookups: `wrk -t{o.threads} -c{o.connections} --latency`, random seeded ids, "
        f"same settings for all three servers (uvicorn, parser {HTTP_PARSER}); app and "
        "reference alternate over "
        f"{o.rounds} round(s), each first in every other one (rates: total requests over "
        "total time; percentiles: the "
        "mean of the rounds), the guide runs once. The reference (`benchmarks/reference.py`) "
        "is Litestar + an asyncpg pool of 10 (the app's pool size) with the key digests "
        "loaded at start-up; the guide (`benchmarks/guide.py`) opens a connection per "
        "request.",
        "- Sign in with Discord and /link are driven from this process (aiohttp, closed "
        "loop): their times include the Discord emulator (another process: OAuth, signing "
        "interactions, taking the callback) and the driver. The emulator's consent page is "
        "fetched once per browser (it lists every test user); the other logins post its "
        "form directly. /link's reply time is the emulator's: from sending the interaction "
        "to receiving the reply at its callback endpoint."
        + (
            ""
            if o.emulator_as_shipped
            else " The emulator sends interactions through one aiohttp session (as shipped it "
            "builds an httpx client per interaction, ~40 ms of CPU each; "
            "`--emulator-as-shipped`)."
        ),
        "- Ratios compare numbers of this run only; the machine is shared and noisy, and "
        "every process (servers, Postgres, load) shares its CPUs.",
    ]
    if o.generous_deadlines:
        lines.append(
            "- Smoke settings: generous bot deadlines (20 s), so only breakage fails the run; "
            "the targets are not meaningful at this size."
        )
    lines += [f"- {note}" for note in results.notes]
    lines += [
        "",
        report.cpu_table(
            [m for m in results.measured if m.cpu_ms and m.label != "warm-up"], CPU_COLUMNS
        ),
    ]
    if results.problems:
        lines += ["", "**Problems (the run fails):**", *(f"- {p}" for p in results.problems)]
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    if shutil.which("wrk") is None:
        log("wrk is not installed (apt-get install wrk)")
        return 2
    if not options.app_python.exists():
        log(f"no Python in the app's venv: {options.app_python} (make install-runtime)")
        return 2
    install = describe_install(options.app_python)
    log(install)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="taskflow-link-bench-"))
    try:
        results = asyncio.run(run(options, workdir, install))
    finally:
        if options.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = render(results, started, time.monotonic() - t0)
    print(text, flush=True)
    if options.output is not None:
        options.output.write_text(text + "\n")
    return 1 if results.problems else 0


if __name__ == "__main__":
    sys.exit(main())
