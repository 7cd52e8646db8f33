"""A database that hangs (frozen, as a stuck host or a stalled network looks) is cut off: a
request gets a 503 while the database is still frozen, `/readyz` says "not ready", and SIGTERM
ends the process. Nothing here measures how long anything took: each answer must simply come
while Postgres is still frozen (with generous client timeouts), and the deadlines that make
that happen are the settings below."""

from __future__ import annotations

import asyncio
import secrets
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.sql import SqlDatabase
from tests.integration.instances import Instance, environment, serving
from tests.integration.postgres import PostgresServer

CLIENT_TIMEOUT = 120  # far above every deadline set below


async def _ready(client: httpx.AsyncClient, seconds: float = 60) -> None:
    """Until ``/readyz`` says ready: its checks have a deadline of 1 s here (for the frozen
    database below), which a busy machine can miss now and then while all is well."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (answer := await client.get("/readyz")).status_code != 200:
        assert loop.time() < deadline, answer.text
        await asyncio.sleep(0.2)


def _some_key() -> dict[str, str]:
    """A well-formed API key (unknown: finding that out takes the database)."""
    return {"Authorization": f"Bearer tfl_{secrets.token_urlsafe(32)}"}


@pytest.fixture
def frozen_postgres(postgres: PostgresServer, pg_db: SqlDatabase) -> Iterator[PostgresServer]:
    """Postgres, thawed after the test before anything else touches it (``pg_db``'s clean-up
    included, which this fixture therefore outlives)."""
    try:
        yield postgres
    finally:
        postgres.resume_server()


@pytest.fixture
def instance(frozen_postgres: PostgresServer, tmp_path: Path) -> Iterator[Instance]:
    env = environment(
        storage="sql",
        database_url=frozen_postgres.url,
        db_statement_timeout_seconds=1,
        db_connect_timeout_seconds=1,
        db_pool_timeout=1,
        readiness_timeout_seconds=1,
        shutdown_timeout_seconds=2,
        api_key_cache_seconds=0,  # every lookup reads the database
        discord_client_id="1200000000000000042",
        discord_client_secret="unused-here",
    )
    with serving(tmp_path, env) as served:
        yield served


async def test_a_frozen_database_gets_503s_and_does_not_hold_shutdown(
    frozen_postgres: PostgresServer, instance: Instance, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=instance.url, timeout=CLIENT_TIMEOUT) as client:
        await _ready(client)
        assert (await client.get("/api/v1/links/123")).status_code == 401  # no key: no database
        if not frozen_postgres.pause_server():
            pytest.skip("this Postgres cannot be frozen (not in a container)")

        lookup = await client.get("/api/v1/links/123", headers=_some_key())
        assert lookup.status_code == 503, lookup.text
        assert "database" in lookup.json()["error"]["message"].lower()

        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] != "ok"

        # A request in flight when SIGTERM comes: the process still exits, database frozen.
        stuck: list[int | str] = []

        def in_flight() -> None:
            try:
                answer = httpx.get(
                    f"{instance.url}/api/v1/links/123",
                    headers=_some_key(),
                    timeout=CLIENT_TIMEOUT,
                )
                stuck.append(answer.status_code)
            except httpx.HTTPError as exc:
                stuck.append(type(exc).__name__)

        thread = threading.Thread(target=in_flight)
        thread.start()
        await asyncio.sleep(0.5)  # usually in flight by then; what is asserted holds either way
        code = instance.stop(signal.SIGTERM, wait=CLIENT_TIMEOUT)
        thread.join(CLIENT_TIMEOUT)
    # SIGTERM is serve's usual end: 0, after a complete shutdown (uvicorn's re-raised
    # signal once killed the process, -15).
    assert code == 0, instance.output()
    assert "Application shutdown complete" in instance.output()
    assert len(stuck) == 1  # answered or cut, never left hanging
    assert stuck[0] in (503, "RemoteProtocolError", "ConnectError", "ReadError")
    assert "Traceback" not in instance.output()


async def test_a_close_cut_off_at_shutdown_logs_no_traceback(
    frozen_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by a CI run of the test above: a connection back in the pool when the database
    froze was closed politely at shutdown, which waited for the frozen server until the
    shutdown's timeout cancelled it, and SQLAlchemy logged that cancellation as an error with
    its traceback ("Exception closing connection"). The cut is the shutdown's own (said once,
    by ``close_resources``): the pool says nothing of it."""
    database = SqlDatabase(frozen_postgres.url, pool_size=2)
    try:
        assert await database.ping()  # its connection is back in the pool
        if not frozen_postgres.pause_server():
            pytest.skip("this Postgres cannot be frozen (not in a container)")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):  # the shutdown's timeout
                await database.dispose()
    finally:
        frozen_postgres.resume_server()
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
