"""A peer that answers a byte at a time never times out a phase of httpx (each read gets its
byte in time), so only a deadline on the whole call ends it. Against such a server on
loopback: a webhook attempt and a call to Discord each end as a timeout, and nothing hangs.
(What is asserted is the outcome, never how long it took: the deadlines are settings. The
two-minute guard only turns a regression into a failure instead of a hang.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from adapters.discord_oauth import DiscordHttp
from adapters.discord_roles import HttpDiscordGuildRoles
from adapters.webhooks import HttpWebhookSender, WebhookTarget, endpoint_for
from domain import errors
from domain.model import DiscordId, LinkedRole
from domain.ports import RoleCallOutcome, WebhookMessage

GUARD = 120


@pytest.fixture
async def trickling() -> AsyncIterator[str]:
    """An HTTP server that reads the request, then sends its status line forever, one byte
    every 20 ms (never a whole header)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await reader.readuntil(b"\r\n\r\n")
            while True:
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: ":
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.02)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()


async def test_a_webhook_endpoint_that_trickles_its_answer_is_a_timeout(trickling: str) -> None:
    url = f"{trickling}/hook"
    sender = HttpWebhookSender([WebhookTarget(url, (b"k" * 32,))], timeout=0.5, user_agent="test")
    message = WebhookMessage("msg_1", datetime(2030, 1, 1, tzinfo=UTC), '{"type":"x"}')
    try:
        with pytest.raises(errors.WebhookNotDelivered) as refused:
            async with asyncio.timeout(GUARD):
                await sender.send(endpoint_for(url), message)
    finally:
        await sender.aclose()
    assert str(refused.value) == "timeout"


async def test_a_discord_that_trickles_its_answer_is_unavailable(trickling: str) -> None:
    """A role change's call ends within the configured timeout, well inside its claim."""
    http = DiscordHttp(user_agent="test", timeout=0.5)
    roles = HttpDiscordGuildRoles(bot_token="t", api_url=f"{trickling}/api/v10", http=http)
    role = LinkedRole(DiscordId(1), DiscordId(2))
    try:
        async with asyncio.timeout(GUARD):
            result = await roles.add_role(role, DiscordId(3), reason="linked")
    finally:
        await http.aclose()
    assert result.outcome is RoleCallOutcome.UNAVAILABLE
