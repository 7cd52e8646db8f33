"""Hostile requests stay 4xx: bad Host headers, control characters, oversized bodies; the CSRF
exemptions are anchored; the access log names the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.middleware.rate_limit import RateLimitMiddleware
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from entrypoints.web import create_app
from entrypoints.web.guards import valid_host
from tests.harness import PASSWORD, Harness
from tests.web_support import Client, csrf_token


@pytest.fixture
async def client(h: Harness) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(h.container)) as test_client:
        yield test_client


async def test_a_bad_host_header_is_a_400_never_a_500(client: Client) -> None:
    """The issue: ``Host: x:abc`` gave 500 on every route, /healthz included."""
    for host in ("x:abc", "x:99999999", "x:0", "[::1", "a_b", "x" * 300):
        for path in ("/healthz", "/signin", "/api/v1/links/1", "/no-such-page"):
            answer = await client.get(path, headers={"host": host})
            assert 400 <= answer.status_code < 500, (host, path, answer.text)


@pytest.mark.parametrize(
    ("host", "valid"),
    [
        ("link.example.com", True),
        ("link.example.com:8443", True),
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("localhost", True),
        ("x:abc", False),
        ("x:65536", False),
        ("-bad.example", False),
        ("a b", False),
    ],
)
def test_host_validation(host: str, valid: bool) -> None:
    assert valid_host(host) is valid


@pytest.mark.parametrize(
    "login", ["a\x00b", "alice\x1b[31m", "alice\x7f"], ids=["nul", "escape", "delete"]
)
async def test_control_characters_in_a_form_are_refused(
    client: Client, db: MemoryDatabase, login: str
) -> None:
    page = await client.get("/signin")
    answer = await client.post(
        "/signin",
        data={"login": login, "password": PASSWORD, "_csrf_token": csrf_token(page.text)},
    )
    assert answer.status_code == 400
    assert "not allowed" in answer.text
    assert db.tables.audit == []  # refused at the door: nothing looked up, nothing written


async def test_control_characters_in_the_query_are_refused(client: Client) -> None:
    assert (await client.get("/signin?next=/account%00x")).status_code == 400
    assert (await client.get("/signin?next=/account")).status_code == 200


async def test_a_two_megabyte_form_is_refused_before_it_is_read(
    client: Client, db: MemoryDatabase
) -> None:
    page = await client.get("/signin")
    answer = await client.post(
        "/signin",
        data={"login": "alice", "password": "x" * 2_000_000, "_csrf_token": csrf_token(page.text)},
    )
    assert answer.status_code == 413
    assert "too large" in answer.text
    assert db.tables.audit == []


def _middleware_of(handler: Any, kind: type) -> list[Any]:
    """The configs of ``kind`` (a Litestar middleware class) that a route handler runs."""
    return [
        m.kwargs["config"]
        for m in handler.resolve_middleware()
        if isinstance(m, DefineMiddleware) and m.middleware is kind
    ]


async def test_csrf_and_the_sign_in_limit_guard_every_route_but_the_apis(h: Harness) -> None:
    """Both are the browser's: every route of ours carries them (one CSRF config, with
    anchored exemptions), except the JSON API's, which takes no cookie and no form and has its
    own per-key limit; there they would only cost time on every lookup."""
    import re

    app = create_app(h.container)
    csrf_configs, api_routes, rate_limited = [], 0, set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            csrf = _middleware_of(handler, CSRFMiddleware)
            limits = [c.store for c in _middleware_of(handler, RateLimitMiddleware)]
            if route.path.startswith("/schema"):  # Litestar's OpenAPI documents: read only
                assert handler.http_methods <= {"GET", "HEAD", "OPTIONS"}, route.path
            elif route.path.startswith("/api/"):
                api_routes += 1
                assert csrf == [], route.path
                assert "auth_rate_limit" not in limits, route.path
            else:
                assert len(csrf) == 1, route.path
                assert limits == ["auth_rate_limit"], route.path
                csrf_configs += csrf
                rate_limited |= {(m, route.path) for m in handler.http_methods}
    assert api_routes >= 3  # the lookup, the bulk lookup, the unlink
    assert len({id(c) for c in csrf_configs}) == 1
    assert {("POST", "/signin"), ("POST", "/password/reset/{token:str}")} <= rate_limited
    exempt = re.compile("|".join(csrf_configs[0].exclude or []))
    assert exempt.findall("/api/v1/links/1")
    assert exempt.findall("/interactions")
    for path in ("/account/api/x", "/interactions/x", "/x/interactions", "/signin?/api/"):
        assert not exempt.findall(path), path


async def test_a_form_without_its_csrf_token_is_refused(client: Client) -> None:
    await client.get("/signin")  # the CSRF cookie
    answer = await client.post("/signin", data={"login": "alice", "password": "x"})
    assert answer.status_code == 403


async def test_the_access_log_names_the_client(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="taskflow_link.access"):
        await client.get("/healthz")
    lines = [r.getMessage() for r in caplog.records if r.name == "taskflow_link.access"]
    assert lines == ["testclient GET /healthz 200"]
