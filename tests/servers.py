"""Run an ASGI app under uvicorn on a free loopback port, in a thread, for real-HTTP tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

# Start-up (the app's lifespan) and shutdown: generous, the suite runs with both cores busy.
DEADLINE = 60


def free_port() -> int:
    """A port free now, for a server in another process (``bound_socket`` for one here:
    another server may take this port before the one meant to)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A loopback port held (bound, not listening, SO_REUSEADDR) while the block runs, for a
    command run here that checks the port and then binds nothing (uvicorn replaced): its
    check, with SO_REUSEADDR too, finds it free, and no other process takes it meanwhile."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        yield port_of(sock)


# How many ports a helper that starts a server in another process tries: a port ``free_port``
# found free may be taken by another process before that server binds it (both cores busy,
# other test runs on the machine), and the helper then picks another.
PORT_TRIES = 5


def port_was_taken(output: str) -> bool:
    """Whether a server process (``serve``, the demo) that ended before it was ready said that
    its port was in use: taken by another process after ``free_port`` found it free."""
    # The command's own check ("Port N on HOST is in use"), or uvicorn's bind after it.
    return " is in use" in output or "address already in use" in output.lower()


def bound_socket() -> socket.socket:
    """A socket bound to a free loopback port, for ``serve``/``serve_here``: its port is known
    before the server starts (for URLs in the app's settings), and stays this server's."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
    except BaseException:
        sock.close()
        raise
    return sock


def port_of(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


def _server(
    app: Any,
    sock: socket.socket,
    head_timeout_seconds: float | None = None,
    body_timeout_seconds: float | None = None,
) -> uvicorn.Server:
    # Here: only the tests that start a server need httptools.
    from entrypoints.http11 import BODY_TIMEOUT_SECONDS, HEAD_TIMEOUT_SECONDS, with_timeouts

    # log_config=None: leave logging (and pytest's capture of it) alone.
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port_of(sock),  # (the server listens on ``sock``: these only name it)
            log_level="warning",
            log_config=None,
            lifespan="on",
            # As `taskflow-link serve` parses HTTP.
            http=with_timeouts(
                head_timeout_seconds or HEAD_TIMEOUT_SECONDS,
                body_timeout_seconds or BODY_TIMEOUT_SECONDS,
            ),
            # As `taskflow-link serve`: the app alone decides whom X-Forwarded-For is believed.
            proxy_headers=False,
        )
    )


@contextlib.contextmanager
def serve(
    app: Any,
    sock: socket.socket | None = None,
    *,
    head_timeout_seconds: float | None = None,
    body_timeout_seconds: float | None = None,
) -> Iterator[str]:
    """``app`` under uvicorn in a thread, on ``sock`` (``bound_socket()``) or on a port of
    its own; the URL it answers at. ``head_timeout_seconds``, ``body_timeout_seconds``: the
    server's time for a request's head (``TASKFLOW_LINK_REQUEST_HEAD_TIMEOUT_SECONDS``) and
    between two reads of a body (``TASKFLOW_LINK_REQUEST_BODY_TIMEOUT_SECONDS``), their
    defaults unless given."""
    sock = sock or bound_socket()
    with sock:  # closed by the server when it stops, or here if it never started
        server = _server(app, sock, head_timeout_seconds, body_timeout_seconds)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + DEADLINE
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port_of(sock)}"
        finally:
            server.should_exit = True
            thread.join(timeout=DEADLINE)


@contextlib.asynccontextmanager
async def serve_here(app: Any, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Like ``serve`` but on the running event loop, so the test shares in-memory adapters
    (and their asyncio locks) with the app."""
    sock = sock or bound_socket()
    with sock:
        server = _server(app, sock)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        deadline = time.monotonic() + DEADLINE
        while not server.started:
            if time.monotonic() > deadline or task.done():
                server.should_exit = True
                await task
                raise RuntimeError("server did not start")
            await asyncio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port_of(sock)}"
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, timeout=DEADLINE)
