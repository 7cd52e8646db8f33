"""``serve`` over TLS (uvicorn's own ``ssl``): a client that ends its side of the TLS stream
(close_notify) while its request is answered. ``entrypoints.http11`` keeps a plain TCP
connection open then (``eof_received`` returns true), which asyncio's TLS transport cannot
do: it closed the connection all the same and logged "returning true from eof_received() has
no effect when using ssl", a warning any client could cause once per connection."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.certificates import self_signed
from tests.servers import DEADLINE, bound_socket, port_of

pytest.importorskip("httptools")


async def test_a_tls_client_ending_its_side_mid_answer_causes_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from entrypoints.http11 import with_timeouts

    started, release = asyncio.Event(), asyncio.Event()
    disconnected = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        if (await receive())["type"] == "http.disconnect":
            disconnected.set()

    cert_file, key_file = self_signed(tmp_path, "127.0.0.1", "cert")
    sock = bound_socket()
    with sock:
        server = uvicorn.Server(
            uvicorn.Config(
                slow,
                log_config=None,
                lifespan="off",
                http=with_timeouts(30.0),
                ssl_certfile=str(cert_file),
                ssl_keyfile=str(key_file),
            )
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(DEADLINE):
                while not server.started:
                    assert not serving.done()
                    await asyncio.sleep(0.02)
                client = ssl.create_default_context()
                client.check_hostname = False
                client.verify_mode = ssl.CERT_NONE
                with caplog.at_level(logging.WARNING, logger="asyncio"):
                    _, writer = await asyncio.open_connection(
                        "127.0.0.1", port_of(sock), ssl=client
                    )
                    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    await writer.drain()
                    await started.wait()
                    # close_notify: the end of what the client sends, its answer still due.
                    writer.close()
                    await writer.wait_closed()
                    release.set()
                    await disconnected.wait()  # closed, as before: TLS cannot stay half open
            assert not [r for r in caplog.records if "eof_received" in r.getMessage()]
        finally:
            release.set()
            server.should_exit = True
            await asyncio.wait_for(serving, DEADLINE)
