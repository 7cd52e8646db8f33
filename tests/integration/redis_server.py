"""Where the integration tests get Redis from, like Postgres (see ``postgres.py``):

1. a container through testcontainers (the public ``redis:7-alpine`` image by default;
   ``TASKFLOW_LINK_TEST_REDIS_IMAGE`` picks another; ``TASKFLOW_LINK_TEST_DOCKER_HOST_NETWORK=1``
   runs it with host networking);
2. a throwaway local ``redis-server`` when no Docker daemon answers;
3. otherwise the Redis tests skip, saying how to enable them.

``TASKFLOW_LINK_TEST_REQUIRE_CONTAINER=1`` (set by ``.ci/run``) turns 2 and 3 into failures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tests.integration.postgres import (
    HOST_NETWORK,
    REQUIRE_CONTAINER,
    OwnServerReady,
    Unavailable,
    _docker_available,
    _wait_for_port,
    restart_on_its_port,
    start_on_a_free_port,
)
from tests.servers import free_port

if TYPE_CHECKING:
    from testcontainers.community.redis import RedisContainer

IMAGE = os.environ.get("TASKFLOW_LINK_TEST_REDIS_IMAGE", "redis:7-alpine")
HOW_TO_ENABLE = (
    "No Redis for the integration tests: start a Docker daemon (testcontainers pulls "
    f"{IMAGE}), or install redis-server, or run scripts/provision-test-images.sh as root and "
    "export TASKFLOW_LINK_TEST_REDIS_IMAGE=local/redis:7 TASKFLOW_LINK_TEST_DOCKER_HOST_NETWORK=1."
)
# No snapshots, no append-only file: a throwaway server.
_ARGS = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
# What our server in a host-network container writes once it takes connections.
READY = "Ready to accept connections"


class RedisServer(Protocol):
    kind: str
    port: int

    @property
    def url(self) -> str: ...

    def stop_server(self) -> None:
        """Make Redis unreachable (its data is lost: it keeps none)."""

    def start_server(self) -> None: ...

    def close(self) -> None: ...


class ContainerRedis:
    kind = "container"

    def __init__(self) -> None:
        from testcontainers.community.redis import RedisContainer

        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        container: RedisContainer
        if HOST_NETWORK:
            container, _ = start_on_a_free_port(_host_network_container)
        else:
            container = RedisContainer(IMAGE)
            container.with_command(["redis-server", *_ARGS[2:]])
            container.start()
        self._container = container
        self.host = container.get_container_host_ip()
        self.port = int(container.get_exposed_port(container.port))

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def stop_server(self) -> None:
        self._container.get_wrapped_container().stop(timeout=5)

    def start_server(self) -> None:
        if HOST_NETWORK:
            restart_on_its_port(self._container, READY)
            return
        self._container.get_wrapped_container().start()
        _wait_for_port(self.host, self.port)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._container.stop()


def _host_network_container(port: int) -> RedisContainer:
    from testcontainers.community.redis import RedisContainer

    class HostNetworkRedis(RedisContainer):
        def get_container_host_ip(self) -> str:
            return "127.0.0.1"

        def get_exposed_port(self, _port: int) -> int:
            return port

    container = HostNetworkRedis(IMAGE, port=port)
    container.ports = {}
    container.with_kwargs(network_mode="host")
    container.with_command(["redis-server", "--port", str(port), *_ARGS])
    # Not testcontainers' ping: another process's Redis that took the port would answer it.
    container.waiting_for(OwnServerReady(READY))
    return container


class LocalRedis:
    """A throwaway ``redis-server`` process (no Docker needed)."""

    kind = "local"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="taskflow-link-redis-"))
        self._process: subprocess.Popen[bytes] | None = None
        self.start_server()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop_server(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def start_server(self) -> None:
        self._process = subprocess.Popen(  # noqa: S603
            ["redis-server", "--port", str(self.port), "--dir", str(self.dir), *_ARGS],  # noqa: S607
            stdout=subprocess.DEVNULL,
        )
        _wait_for_port("127.0.0.1", self.port)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_redis() -> RedisServer | Unavailable:
    if _docker_available():
        try:
            return ContainerRedis()
        except Exception as exc:
            if REQUIRE_CONTAINER:
                raise
            warnings.warn(
                f"Redis container did not start ({exc}); trying redis-server", stacklevel=1
            )
    if REQUIRE_CONTAINER:
        raise RuntimeError(
            "TASKFLOW_LINK_TEST_REQUIRE_CONTAINER=1 but no Docker daemon answers. " + HOW_TO_ENABLE
        )
    if shutil.which("redis-server"):
        return LocalRedis()
    return Unavailable(HOW_TO_ENABLE)
