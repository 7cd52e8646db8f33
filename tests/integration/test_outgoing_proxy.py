"""Calls out (webhooks, Discord's API) go through the proxy the environment names, over real
HTTP: a stand-in proxy on loopback sees each request (in the absolute form a proxy gets),
with no ~/.netrc credentials added, and answers it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.discord_oauth import DiscordHttp, HttpDiscordOAuth
from adapters.proxies import proxy_for
from adapters.webhooks import HttpWebhookSender, WebhookTarget, endpoint_for
from domain import errors
from domain.ports import DiscordTokens, WebhookMessage

PROFILE = b'{"id": "80351110224678912", "username": "nelly", "verified": true}'


@dataclass
class Proxy:
    url: str
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    """An HTTP proxy stand-in: records each request line and its headers, answers itself."""
    seen = Proxy("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
            headers = {name.lower(): value for name, value in headers.items()}
            await reader.readexactly(int(headers.get("content-length", "0")))
            seen.requests.append((head[0], headers))
            body = PROFILE if "/users/@me" in head[0] else b""
            status = b"200 OK" if body else b"204 No Content"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    seen.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield seen
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()


async def deliver(url: str) -> int:
    """One webhook (id ``msg_1``) to ``url``, by a sender made for it."""
    sender = HttpWebhookSender([WebhookTarget(url, (b"k" * 32,))], timeout=30, user_agent="test")
    message = WebhookMessage("msg_1", datetime(2030, 1, 1, tzinfo=UTC), '{"type":"x"}')
    try:
        return await sender.send(endpoint_for(url), message)
    finally:
        await sender.aclose()


@pytest.fixture
def netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials for every host in ~/.netrc: aiohttp's trust_env would send them along."""
    path = tmp_path / "netrc"
    path.write_text("default login alice password s3cret\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))


async def test_an_https_webhook_is_tunnelled_through_the_proxy(
    proxy: Proxy, netrc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in does not tunnel (so the attempt fails): what counts is that it went to
    the proxy, never straight to the endpoint."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with pytest.raises(errors.WebhookNotDelivered):
        await deliver("https://hooks.example.invalid/in?token=t")
    [(line, headers)] = proxy.requests
    assert line == "CONNECT hooks.example.invalid:443 HTTP/1.1"
    assert "authorization" not in headers  # nothing from ~/.netrc
    assert "proxy-authorization" not in headers


async def test_a_webhook_goes_through_all_proxy(
    proxy: Proxy, netrc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With credentials for the proxy itself: sent to the proxy, as Proxy-Authorization.
    monkeypatch.setenv("ALL_PROXY", proxy.url.replace("http://", "http://user:pw@"))
    assert await deliver("http://hooks.example.invalid/in?token=t") == 204
    [(line, headers)] = proxy.requests
    assert line == "POST http://hooks.example.invalid/in?token=t HTTP/1.1"
    assert headers["webhook-id"] == "msg_1"
    assert headers["proxy-authorization"] == "Basic dXNlcjpwdw=="  # user:pw
    assert "authorization" not in headers  # nothing from ~/.netrc


async def test_a_webhook_to_a_no_proxy_host_goes_direct(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert await deliver(f"{proxy.url}/hook") == 204  # the stand-in, as the endpoint itself
    [(line, _)] = proxy.requests
    assert line == "POST /hook HTTP/1.1"


async def test_a_webhook_to_this_machine_goes_direct_without_no_proxy(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy's localhost is its own machine: sent through it, a plain-http signed POST
    would be read by the proxy and delivered to whatever listens there."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    port = proxy.url.rsplit(":", 1)[1]
    assert await deliver(f"http://localhost:{port}/hook") == 204  # the stand-in, directly
    [(line, _)] = proxy.requests
    assert line == "POST /hook HTTP/1.1"


async def test_discords_api_goes_through_the_proxy_without_netrc_credentials(
    proxy: Proxy, netrc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    api = "http://discord.example.invalid/api/v10"
    http = DiscordHttp(user_agent="test", timeout=30, proxy=proxy_for(api))
    oauth = HttpDiscordOAuth(
        client_id="1",
        client_secret="s",
        redirect_uri="http://127.0.0.1:9/cb",
        api_url=api,
        authorize_url="http://discord.example.invalid/oauth2/authorize",
        http=http,
    )
    try:
        profile = await oauth.fetch_profile(DiscordTokens("bearer-token", frozenset()))
    finally:
        await http.aclose()
    assert profile.username == "nelly"
    [(line, headers)] = proxy.requests
    assert line == "GET http://discord.example.invalid/api/v10/users/@me HTTP/1.1"
    assert headers["authorization"] == "Bearer bearer-token"  # ours, not netrc's
