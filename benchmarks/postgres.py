"""A throwaway Postgres for the benchmark (the machine's initdb/pg_ctl, as
tests/integration/postgres.py does without Docker), and fast seeding of links."""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy import create_engine, insert
from sqlalchemy.engine import make_url

from adapters.sql.tables import accounts, user_links
from benchmarks.procs import PORT_TRIES, PortTakenError, free_port, port_was_taken, tree_cpu_seconds

USER, DBNAME = "bench", "bench"
# Seeded Discord ids are FIRST_DISCORD_ID + 1 .. FIRST_DISCORD_ID + links (lookup.lua agrees).
FIRST_DISCORD_ID = 10**17
# Settings for a benchmark, not for keeping data: no fsync (as the tests), enough
# connections for the app's pool, the reference's and the guide's connection per request.
SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=300 -c shared_buffers=256MB -c max_wal_size=4GB"
)


class LocalPostgres:
    def __init__(self, directory: Path) -> None:
        if not (shutil.which("initdb") and shutil.which("pg_ctl")):
            raise RuntimeError(
                "No Postgres: install PostgreSQL's initdb/pg_ctl, or pass --database-url "
                "with an empty database."
            )
        self.dir = directory / "postgres"
        self.dir.mkdir()
        self.data = self.dir / "data"
        self.port = 0
        self.started = False
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self._as_postgres:
            account = pwd.getpwnam("postgres")
            for path in (directory, self.dir):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._run(f"initdb -D {self.data} -U {USER} -A trust -E UTF8")
        self._start()
        self._run(f"createdb -h 127.0.0.1 -p {self.port} -U {USER} {DBNAME}")

    def _start(self) -> None:
        """``pg_ctl start`` on a free port; again on another, up to ``PORT_TRIES`` in all, when
        another process took the port before the server bound it (as ``procs.start_ready``
        does for the servers)."""
        log = self.dir / "log"
        for attempt in range(1, PORT_TRIES + 1):
            self.port = free_port()
            options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} {SERVER_OPTIONS}"
            logged = log.stat().st_size if log.exists() else 0
            try:
                self._run(f"pg_ctl -D {self.data} -o {shlex.quote(options)} -l {log} -w start")
            except RuntimeError as exc:
                if not log.exists():
                    raise
                with log.open(errors="replace") as found:
                    found.seek(logged)
                    taken = port_was_taken(found.read())
                if not taken:
                    raise
                if attempt == PORT_TRIES:
                    raise PortTakenError(
                        f"Postgres found its port taken {PORT_TRIES} times"
                    ) from exc
                continue
            self.started = True
            return

    def _run(self, command: str) -> None:
        argv = ["su", "postgres", "-c", command] if self._as_postgres else ["sh", "-c", command]
        done = subprocess.run(argv, check=False, capture_output=True, text=True)  # noqa: S603
        if done.returncode != 0:
            raise RuntimeError(f"{command!r} failed:\n{done.stdout}{done.stderr}")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{DBNAME}"

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.postmaster_pid())

    def stop(self) -> None:
        if self.started:
            self.started = False
            self._run(f"pg_ctl -D {self.data} -m fast -w stop")


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    """``postgresql+asyncpg://…`` as asyncpg wants it."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def seed_postgres(dsn: str, links: int) -> None:
    """``links`` accounts (unique username and email) each linked to one Discord id, in two
    INSERT … SELECT statements; then ANALYZE, and a CHECKPOINT so that none starts during a
    measurement."""
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute(
                """
                INSERT INTO accounts (id, username, email, email_normalized, email_verified,
                                      password_hash, created_at, email_shared)
                SELECT md5('bench-account-' || i)::uuid, 'bench' || i,
                       'bench' || i || '@example.com', 'bench' || i || '@example.com', true,
                       NULL, timezone('utc', now()) - make_interval(secs => i), false
                FROM generate_series(1, $1::int) AS i
                """,
                links,
            )
            await connection.execute(
                """
                INSERT INTO user_links (discord_id, taskflow_user_id, linked_at,
                                        discord_username, discord_global_name, discord_avatar)
                SELECT $2::bigint + i, md5('bench-account-' || i)::uuid,
                       timezone('utc', now()) - make_interval(secs => i),
                       'discord' || i, 'Discord user ' || i, NULL
                FROM generate_series(1, $1::int) AS i
                """,
                links,
                FIRST_DISCORD_ID,
            )
        await connection.execute("VACUUM ANALYZE accounts")
        await connection.execute("VACUUM ANALYZE user_links")
        # On a server we do not own this may be refused: fine, only a little noisier.
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


def seed_sqlite(path: Path, links: int) -> None:
    """The same rows in SQLite, through the app's own table definitions (and column types)."""
    engine = create_engine(f"sqlite:///{path}")
    now = datetime.now(UTC)
    batch = 10_000
    try:
        with engine.begin() as conn:
            for start in range(1, links + 1, batch):
                numbers = range(start, min(start + batch, links + 1))
                ids = {i: uuid.uuid5(uuid.NAMESPACE_OID, f"bench-account-{i}") for i in numbers}
                conn.execute(
                    insert(accounts),
                    [
                        {
                            "id": ids[i],
                            "username": f"bench{i}",
                            "email": f"bench{i}@example.com",
                            "email_normalized": f"bench{i}@example.com",
                            "email_verified": True,
                            "created_at": now,
                            "email_shared": False,
                        }
                        for i in numbers
                    ],
                )
                conn.execute(
                    insert(user_links),
                    [
                        {
                            "discord_id": FIRST_DISCORD_ID + i,
                            "taskflow_user_id": ids[i],
                            "linked_at": now,
                            "discord_username": f"discord{i}",
                            "discord_global_name": f"Discord user {i}",
                        }
                        for i in numbers
                    ],
                )
    finally:
        engine.dispose()
