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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server(app: Any, port: int) -> uvicorn.Server:
    # log_config=None: leave logging (and pytest's capture of it) alone.
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            log_config=None,
            lifespan="on",
            # As `taskflow-link serve`: the app alone decides whom X-Forwarded-For is believed.
            proxy_headers=False,
        )
    )


@contextlib.contextmanager
def serve(app: Any, port: int | None = None) -> Iterator[str]:
    port = port or free_port()
    server = _server(app, port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=DEADLINE)


@contextlib.asynccontextmanager
async def serve_here(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Like ``serve`` but on the running event loop, so the test shares in-memory adapters
    (and their asyncio locks) with the app."""
    port = port or free_port()
    server = _server(app, port)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + DEADLINE
    while not server.started:
        if time.monotonic() > deadline or task.done():
            server.should_exit = True
            await task
            raise RuntimeError("server did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=DEADLINE)
