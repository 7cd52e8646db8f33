"""Where the integration tests get Postgres from, in order of preference:

1. a container through testcontainers (the public ``postgres:16-alpine`` image by default;
   ``TASKFLOW_LINK_TEST_POSTGRES_IMAGE`` picks another, ``TASKFLOW_LINK_TEST_DOCKER_HOST_NETWORK=1``
   runs it with host networking, as on machines without a Docker bridge);
2. a throwaway cluster from local ``initdb``/``pg_ctl`` when no Docker daemon answers;
3. otherwise the Postgres tests skip, saying how to enable them.

``TASKFLOW_LINK_TEST_REQUIRE_CONTAINER=1`` (set by ``.ci/run``) turns 2 and 3 into failures.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import text
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

from tests.servers import PORT_TRIES, free_port, port_was_taken

if TYPE_CHECKING:
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.core.container import DockerContainer

    from adapters.sql import SqlDatabase

IMAGE = os.environ.get("TASKFLOW_LINK_TEST_POSTGRES_IMAGE", "postgres:16-alpine")
HOST_NETWORK = os.environ.get("TASKFLOW_LINK_TEST_DOCKER_HOST_NETWORK") == "1"
REQUIRE_CONTAINER = os.environ.get("TASKFLOW_LINK_TEST_REQUIRE_CONTAINER") == "1"
USER, PASSWORD, DBNAME = "taskflow", "taskflow-test-password", "taskflow"
HOW_TO_ENABLE = (
    "No Postgres for the integration tests: start a Docker daemon (testcontainers pulls "
    f"{IMAGE}), or install PostgreSQL's initdb/pg_ctl, or run scripts/provision-test-images.sh "
    "as root and export TASKFLOW_LINK_TEST_POSTGRES_IMAGE=local/postgres:15 "
    "TASKFLOW_LINK_TEST_DOCKER_HOST_NETWORK=1."
)
# Where our image (scripts/provision-test-images.sh) keeps the server's data.
DATA_DIR = "/var/lib/postgresql/data"
# What our server in a host-network container writes once it takes connections.
READY = "database system is ready to accept connections"


class PostgresServer(Protocol):
    kind: str

    @property
    def url(self) -> str:
        """SQLAlchemy URL (asyncpg) of the default database."""

    def url_for(self, database: str) -> str: ...

    def stop_server(self) -> None:
        """Make the server unreachable (keeping its data)."""

    def start_server(self) -> None: ...

    def pause_server(self) -> bool:
        """Freeze the server (it keeps its connections but answers nothing), as a hung host
        would. ``False`` where that cannot be done."""

    def resume_server(self) -> None: ...

    def close(self) -> None: ...


def _docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except Exception:
        return False
    return True


class ContainerPostgres:
    kind = "container"

    def __init__(self) -> None:
        from testcontainers.community.postgres import PostgresContainer

        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        container: PostgresContainer
        if HOST_NETWORK:
            container, self.port = start_on_a_free_port(_host_network_container)
        else:
            container = PostgresContainer(
                IMAGE, username=USER, password=PASSWORD, dbname=DBNAME, driver="asyncpg"
            )
            container.start()
        self._container = container
        self.host = container.get_container_host_ip()
        self.port = int(container.get_exposed_port(5432 if not HOST_NETWORK else self.port))

    @property
    def url(self) -> str:
        return self.url_for(DBNAME)

    def url_for(self, database: str) -> str:
        return f"postgresql+asyncpg://{USER}:{PASSWORD}@{self.host}:{self.port}/{database}"

    def stop_server(self) -> None:
        # Postgres' fast shutdown (SIGINT to the postmaster): it ends its clients' sessions
        # and stops cleanly at once. ``docker stop`` sends SIGTERM, a smart shutdown that
        # waits for the app's pooled connections to close: the container's init killed it
        # seconds later, and the next start recovered from a crash.
        container = self._container.get_wrapped_container()
        with contextlib.suppress(Exception):
            fast = f"kill -INT $(head -1 {DATA_DIR}/postmaster.pid)"
            told = container.exec_run(["sh", "-c", fast])
            if told.exit_code == 0:
                container.wait(timeout=30)
        container.stop(timeout=5)  # (stopped already, unless the fast shutdown failed)

    def start_server(self) -> None:
        if HOST_NETWORK:
            restart_on_its_port(self._container, READY)
            return
        self._container.get_wrapped_container().start()
        _wait_for_port(self.host, self.port)

    def pause_server(self) -> bool:
        self._container.get_wrapped_container().pause()
        return True

    def resume_server(self) -> None:
        container = self._container.get_wrapped_container()
        container.reload()
        if container.status == "paused":
            container.unpause()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.resume_server()
        with contextlib.suppress(Exception):
            self._container.stop()


def _host_network_container(port: int) -> PostgresContainer:
    from testcontainers.community.postgres import PostgresContainer

    class HostNetworkPostgres(PostgresContainer):
        """No port mapping exists with host networking: Postgres listens on ``port`` itself."""

        def get_container_host_ip(self) -> str:
            return "127.0.0.1"

        def get_exposed_port(self, _port: int) -> int:
            return port

    container = HostNetworkPostgres(
        IMAGE, port=port, username=USER, password=PASSWORD, dbname=DBNAME, driver="asyncpg"
    )
    container.ports = {}
    container.with_kwargs(network_mode="host")
    container.with_env("PGPORT", str(port))  # honoured by our image and by psql's wait check
    container.waiting_for(OwnServerReady(READY))  # then psql's check, on our server
    return container


class PortTaken(RuntimeError):
    """A server in a host-network container ended at its start: its port was in use."""


def wait_for_own_server(container: Any, ready: str, since: float | None = None) -> None:
    """Until the server in ``container`` (docker's) says ``ready`` in its log (the lines
    from ``since``, a Unix time, on a restart); :class:`PortTaken` if it ended saying that
    its port was in use. With host networking, whatever answers on the port may be another
    process's server that took the port first: only the container's own log tells."""
    deadline = time.monotonic() + 120  # a wait for start-up (a busy machine), not a measure
    while True:
        said = container.logs(since=since).decode(errors="replace")
        if ready in said:
            return
        container.reload()
        if container.status not in {"created", "running"}:
            if port_was_taken(said):
                raise PortTaken(f"the server's port was in use:\n{said}")
            raise RuntimeError(f"the container ended ({container.status}):\n{said}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the container's server did not say {ready!r}:\n{said}")
        time.sleep(0.1)


class OwnServerReady(WaitStrategy):
    """testcontainers' wait, on ``wait_for_own_server``."""

    def __init__(self, ready: str) -> None:
        super().__init__()
        self._ready = ready

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        wait_for_own_server(container.get_wrapped_container(), self._ready)


Started = TypeVar("Started", bound="DockerContainer")


def start_on_a_free_port(make: Callable[[int], Started]) -> tuple[Started, int]:
    """A host-network container from ``make`` (given its port) started on a free port: a
    port found free that another process took before the container's server bound it (both
    cores busy, other test runs and their containers) is picked again."""
    for attempt in range(1, PORT_TRIES + 1):
        port = free_port()
        container = make(port)
        try:
            container.start()
        except PortTaken:
            container.stop()
            if attempt == PORT_TRIES:
                raise
            continue
        except BaseException:
            with contextlib.suppress(Exception):
                container.stop()
            raise
        return container, port
    raise AssertionError("unreachable: the last try returns or raises")


def restart_on_its_port(container: DockerContainer, ready: str) -> None:
    """Start a stopped host-network container again, on the port its clients know: one that
    another process holds for now (a client's connection from it) is tried again shortly."""
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    if wrapped.status == "running":  # (a check that found it unreachable a moment ago)
        return
    for attempt in range(1, PORT_TRIES + 1):
        since = time.time()
        wrapped.start()
        try:
            wait_for_own_server(wrapped, ready, since=since)
        except PortTaken:
            if attempt == PORT_TRIES:
                raise
            time.sleep(1)
            continue
        return


class LocalClusterPostgres:
    """A throwaway cluster from the machine's initdb/pg_ctl (no Docker needed)."""

    kind = "local"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="taskflow-link-pg-"))
        self.data = self.dir / "data"
        self._as_postgres_user = os.geteuid() == 0  # initdb refuses to run as root
        if self._as_postgres_user:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(f"initdb -D {self.data} -U {USER} -A trust -E UTF8 >/dev/null")
        self.start_server()
        self._run(f"createdb -h 127.0.0.1 -p {self.port} -U {USER} {DBNAME}")

    def _run(self, command: str) -> None:
        argv = (
            ["su", "postgres", "-c", command] if self._as_postgres_user else ["sh", "-c", command]
        )
        subprocess.run(argv, check=True, capture_output=True)  # noqa: S603

    @property
    def url(self) -> str:
        return self.url_for(DBNAME)

    def url_for(self, database: str) -> str:
        return f"postgresql+asyncpg://{USER}@127.0.0.1:{self.port}/{database}"

    def stop_server(self) -> None:
        self._run(f"pg_ctl -D {self.data} -m fast -w stop")

    def start_server(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._run(f"pg_ctl -D {self.data} -o '{options}' -l {self.dir}/log -w start")

    def pause_server(self) -> bool:
        return False  # the cluster's processes are not ours to freeze one by one

    def resume_server(self) -> None:
        pass

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_for_port(host: str, port: int, seconds: float = 60) -> None:
    """Until the port takes connections; raises past ``seconds`` (a busy machine: generous)."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing took connections on {host}:{port} in {seconds} s")
        time.sleep(0.1)


@dataclass
class Unavailable:
    reason: str


def start_postgres() -> PostgresServer | Unavailable:
    if _docker_available():
        try:
            return ContainerPostgres()
        except Exception as exc:
            if REQUIRE_CONTAINER:
                raise
            # e.g. a daemon that cannot pull the image: fall back like a machine without one.
            warnings.warn(f"Postgres container did not start ({exc}); trying initdb", stacklevel=1)
    if REQUIRE_CONTAINER:
        raise RuntimeError(
            "TASKFLOW_LINK_TEST_REQUIRE_CONTAINER=1 but no Docker daemon answers. " + HOW_TO_ENABLE
        )
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return LocalClusterPostgres()
    return Unavailable(HOW_TO_ENABLE)


async def listener_pids(database: SqlDatabase, application_name: str) -> set[int]:
    """The server processes of the connections a queue's listeners hold (named for operators:
    ``adapters.sql.notifications``), in this database."""
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database()"
            ),
            {"name": application_name},
        )
        return {row.pid for row in rows}
