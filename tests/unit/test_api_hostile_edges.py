"""The JSON API against what an attacker's review tried and found sound, kept so: no CORS
(a browser on another site gets nothing it may read), answers that hold personal data never
cached, a body streamed past the limit refused as one sent whole, and every malformed
``Authorization`` header refused in the API's one error shape."""

from __future__ import annotations

import json
from typing import Any

from litestar.testing import AsyncTestClient

from entrypoints.web import create_app
from tests.harness import Harness


async def test_no_cors_for_another_site_and_no_caching_of_a_link(h: Harness) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    await h.discord_link(alice.id, h.discord_user(5150))
    token = (await h.container.create_api_key().execute("reader")).token
    origin = {"Origin": "https://elsewhere.example"}
    async with AsyncTestClient(app=create_app(h.container)) as client:
        found = await client.get(
            "/api/v1/links/5150", headers={**origin, "Authorization": f"Bearer {token}"}
        )
        preflight = await client.options(
            "/api/v1/links/5150",
            headers={
                **origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
    assert found.status_code == 200
    assert found.headers["cache-control"] == "no-store"
    for answer in (found, preflight):
        assert not [name for name in answer.headers if name.lower().startswith("access-control")]


async def test_a_body_streamed_past_the_limit_is_a_413_not_a_500(h: Harness) -> None:
    """Chunked, without Content-Length: the limit is counted as the body arrives."""
    token = (await h.container.create_api_key().execute("reader")).token
    chunks = [b'{"discord_ids": ["1"], "x": "', *[b"a" * 1000] * 100, b'"}']
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/links/lookup",
        "raw_path": b"/api/v1/links/lookup",
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
        ],
        "state": {},
    }
    await create_app(h.container)(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 413
    assert json.loads(sent[-1]["body"]) == {
        "error": {"code": "http_413", "message": "The request is too large."}
    }


async def test_malformed_authorization_headers_are_refused_alike(h: Harness) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    await h.discord_link(alice.id, h.discord_user(5150))
    token = (await h.container.create_api_key().execute("reader")).token
    async with AsyncTestClient(app=create_app(h.container)) as client:
        # The scheme is case-insensitive (RFC 9110), spaces around the key are ignored.
        for accepted in (f"bearer {token}", f"BEARER {token}", f"Bearer  {token} "):
            answer = await client.get("/api/v1/links/5150", headers={"Authorization": accepted})
            assert answer.status_code == 200, accepted
        for refused in (
            f"Basic {token}",
            f"Bearer\t{token}",
            "Bearer",
            "Bearer ",
            f"Bearer {token} extra",
            f"Bearer {token[:-1]}",
            f"Token {token}",
        ):
            answer = await client.get("/api/v1/links/5150", headers={"Authorization": refused})
            assert answer.status_code == 401, refused
            assert answer.headers["www-authenticate"] == "Bearer"
            assert set(answer.json()) == {"error"}
            assert set(answer.json()["error"]) == {"code", "message"}
            assert answer.json()["error"]["code"] == "http_401"
