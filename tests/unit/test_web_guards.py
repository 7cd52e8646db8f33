"""Hostile requests stay 4xx: bad Host headers, control characters, oversized bodies; the CSRF
exemptions are anchored; the access log names the client."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Request
from litestar.middleware.base import DefineMiddleware
from litestar.routes import HTTPRoute

from adapters.memory import MemoryDatabase
from domain.model import AuditKind
from entrypoints.web import create_app
from entrypoints.web.guards import (
    MAX_FORM_FIELDS,
    AsciiCsrfMiddleware,
    few_form_fields,
    front_door,
    host_guard,
    refuse_control_characters,
    valid_host,
)
from entrypoints.web.rate_limit import CountedRateLimitMiddleware
from tests.harness import PASSWORD, Harness
from tests.web_support import Client, csrf_token


async def test_a_bad_host_header_is_a_400_never_a_500(client: Client) -> None:
    """The issue: ``Host: x:abc`` gave 500 on every route, /healthz included."""
    for host in ("x:abc", "x:99999999", "x:0", "[::1", "a_b", "x" * 300):
        for path in ("/healthz", "/signin", "/api/v1/links/1", "/no-such-page"):
            answer = await client.get(path, headers={"host": host})
            assert 400 <= answer.status_code < 500, (host, path, answer.text)


@pytest.mark.parametrize(
    ("version", "hosts", "passed"),
    [
        ("1.1", [b"link.example.com"], True),
        ("1.1", [b"link.example.com", b"evil.example"], False),
        ("1.1", [b"link.example.com", b"link.example.com"], False),
        ("1.1", [b"link.example.com", b"x:abc"], False),
        ("1.1", [], False),
        ("1.0", [], True),
        ("1.0", [b"a", b"b"], False),
    ],
    ids=["one", "two", "the same twice", "a bad second", "none", "none in 1.0", "two in 1.0"],
)
@pytest.mark.parametrize("door", ["host_guard", "front_door"])
async def test_a_request_needs_exactly_one_host_as_http_1_1_says(
    version: str, hosts: list[bytes], passed: bool, door: str
) -> None:
    """RFC 9112: 400 to a request with two Host fields, or none in HTTP/1.1. h11 refused them
    before the app; httptools (uvicorn's parser since issue 14) and granian pass them on, and
    the check read the first of two while a proxy in front may have routed by the other."""
    reached: list[object] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    guarded = host_guard(app) if door == "host_guard" else front_door(None)(app)
    headers = [(b"accept", b"*/*")] + [(b"host", host) for host in hosts]
    scope: Any = {"type": "http", "http_version": version, "path": "/healthz", "headers": headers}
    await guarded(scope, receive, send)
    assert bool(reached) is passed
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == (
        [] if passed else [400]
    )


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


# Routes that take no cookie and no form: Discord's endpoint and the probes.
SERVICE_ROUTES = {"/interactions", "/healthz", "/readyz", "/favicon.ico"}


async def test_the_browsers_guards_are_on_every_route_but_the_apis_and_discords(
    h: Harness,
) -> None:
    """CSRF, the sign-in limit, the form field limit and the control-character check are the
    browser's: every page carries them (one CSRF config, with anchored exemptions). The JSON
    API (no cookie, no form, its own per-key limit), Discord's endpoint, the probes and the
    icon do not: there they would only cost time, and the form checks would parse a body no
    one reads as a form (a megabyte of form fields posted to /interactions cost a minute of
    the event loop)."""
    import re

    app = create_app(h.container)
    csrf_configs, api_routes, service_routes, rate_limited = [], 0, set(), set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            csrf = _middleware_of(handler, AsciiCsrfMiddleware)
            limits = [c.store for c in _middleware_of(handler, CountedRateLimitMiddleware)]
            form_limit = few_form_fields in handler.resolve_middleware()
            checks_characters = handler.resolve_before_request() is refuse_control_characters
            if route.path.startswith("/schema"):  # Litestar's OpenAPI documents: read only
                assert handler.http_methods <= {"GET", "HEAD", "OPTIONS"}, route.path
            elif route.path.startswith("/api/") or route.path in SERVICE_ROUTES:
                api_routes += route.path.startswith("/api/")
                service_routes |= {route.path} & SERVICE_ROUTES
                assert csrf == [], route.path
                assert "auth_rate_limit" not in limits, route.path
                assert not form_limit, route.path
                assert not checks_characters, route.path
            else:
                assert len(csrf) == 1, route.path
                assert limits == ["auth_rate_limit"], route.path
                assert form_limit, route.path
                assert checks_characters, route.path
                csrf_configs += csrf
                rate_limited |= {(m, route.path) for m in handler.http_methods}
    assert api_routes >= 3  # the lookup, the bulk lookup, the unlink
    assert service_routes == SERVICE_ROUTES
    assert len({id(c) for c in csrf_configs}) == 1
    assert {("POST", "/signin"), ("POST", "/password/reset/{token:str}")} <= rate_limited
    exempt = re.compile("|".join(csrf_configs[0].exclude or []))
    assert exempt.findall("/api/v1/links/1")
    assert exempt.findall("/interactions")
    for path in ("/account/api/x", "/interactions/x", "/x/interactions", "/signin?/api/"):
        assert not exempt.findall(path), path


async def test_a_form_with_more_fields_than_any_of_ours_is_refused_before_it_is_parsed(
    client: Client, db: MemoryDatabase
) -> None:
    """64 KB of ``a=b&a=b&…`` (Litestar's form takes time growing with the square of them to
    close): a 400 that says why, before CSRF or the handler parse it; a real form passes."""
    page = await client.get("/signin")
    token = csrf_token(page.text)
    crowded = "&".join(["a=b"] * 16_000) + f"&_csrf_token={token}&login=alice&password=x"
    answer = await client.post(
        "/signin",
        content=crowded,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400
    assert f"too many fields (at most {MAX_FORM_FIELDS})" in answer.text
    fields = {f"f{i}": "x" for i in range(MAX_FORM_FIELDS - 4)}
    fine = await client.post(
        "/signin", data={**fields, "login": "alice", "password": "x", "_csrf_token": token}
    )
    assert fine.status_code == 401  # read as a form: an unknown login
    assert db.tables.audit[-1].kind is AuditKind.SIGN_IN_FAILED


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json", "multipart/form-data; boundary=x", None]
)
async def test_a_page_takes_its_body_as_a_url_encoded_form_only(
    client: Client, db: MemoryDatabase, content_type: str | None
) -> None:
    """The pages' handlers read their body as a form whatever its declared type, and CSRF
    takes its token from a header too: sent as ``text/plain`` (or with no type), a form went
    past the field limit and the control-character check (found by an attacker's review)."""
    token = csrf_token((await client.get("/signin")).text)
    audited = len(db.tables.audit)
    headers = {"x-csrftoken": token}
    if content_type is not None:
        headers["content-type"] = content_type
    answer = await client.post("/signin", content=b"login=al%00ice&password=x", headers=headers)
    assert answer.status_code == 415
    assert "Send this form as application/x-www-form-urlencoded" in answer.text
    crowded = "&".join(["a=b"] * 16_000) + "&login=alice&password=x"
    answer = await client.post("/signin", content=crowded.encode(), headers=headers)
    assert answer.status_code == 415
    assert len(db.tables.audit) == audited  # no sign-in was tried
    # An empty POST has no form to parse: it goes on (to the handler's own refusal).
    empty = await client.post("/signout", headers={"x-csrftoken": token})
    assert empty.status_code != 415


async def test_a_form_posted_to_discords_endpoint_is_not_parsed(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/interactions reads its body as Discord's signed JSON, never as a form (a megabyte of
    form fields posted there was parsed by the pages' checks: a minute of the event loop)."""
    parsed: list[str] = []
    real_form = Request.form

    async def form(self: Request[Any, Any, Any]) -> Any:
        parsed.append(self.url.path)
        return await real_form(self)

    monkeypatch.setattr(Request, "form", form)
    crowded = b"&".join([b"=b"] * 10_000)
    answer = await client.post(
        "/interactions",
        content=crowded,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code in (401, 404)  # 404: HTTP interactions are off here
    assert parsed == []
    page = await client.get("/signin")  # the check that would notice: pages parse forms
    await client.post("/signin", data={"login": "a", "_csrf_token": csrf_token(page.text)})
    assert parsed


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


@pytest.mark.parametrize("where", ["form", "header", "cookie"])
async def test_a_csrf_token_not_in_ascii_is_refused_never_a_500(
    client: Client, db: MemoryDatabase, where: str
) -> None:
    """Litestar's CSRF check compares the tokens with ``secrets.compare_digest``, which raises
    (TypeError) for a str with a character past ASCII: a form whose token, or a browser whose
    CSRF cookie, had one after its first 64 characters got a 500 on every page's form, and a
    traceback in the log (found by fuzzing every route)."""
    token = csrf_token((await client.get("/signin")).text)
    spoiled = token + "é"
    form = {"login": "alice", "password": PASSWORD, "_csrf_token": token}
    headers: dict[str, Any] = {}
    if where == "form":
        form["_csrf_token"] = spoiled
    elif where == "header":
        headers["x-csrftoken"] = spoiled.encode()
    else:
        client.cookies.clear()
        headers["cookie"] = f"tfl_csrf={spoiled}".encode()
    audited = len(db.tables.audit)
    answer = await client.post("/signin", data=form, headers=headers)
    assert answer.status_code == 403, answer.text
    assert "This form expired or came from another site" in answer.text
    assert len(db.tables.audit) == audited  # refused at the door: no sign-in was tried


@pytest.mark.parametrize(
    ("charset", "body", "status"),
    [
        # Declared in another charset: refused rather than read as UTF-8 (é became U+FFFD).
        ("latin-1", b"login=alic%E9&password=caf%E9", 415),
        ("iso-8859-1", b"login=alice&password=x", 415),
        ("no-such-charset", b"login=alice&password=x", 415),
        # Undeclared, but not UTF-8 once decoded: every such byte was U+FFFD, so that the
        # passwords caf%E9 and caf%E8 were one and the same.
        (None, b"login=alice&password=caf%E9", 400),
        # A byte past ASCII that is not percent-encoded (browsers encode every one): it was
        # read as Latin-1.
        (None, "login=alice&password=café".encode(), 400),
    ],
)
async def test_a_form_that_is_not_utf_8_is_refused(
    client: Client,
    db: MemoryDatabase,
    charset: str | None,
    body: bytes,
    status: int,
) -> None:
    """Our pages say ``<meta charset="utf-8">``, so browsers send their forms in UTF-8 and
    name no charset: a form in another one is refused, saying so, never read as UTF-8 with
    its other characters replaced (U+FFFD)."""
    token = csrf_token((await client.get("/signin")).text)
    audited = len(db.tables.audit)
    content_type = "application/x-www-form-urlencoded"
    if charset is not None:
        content_type += f"; charset={charset}"
    answer = await client.post(
        "/signin",
        content=body + f"&_csrf_token={token}".encode(),
        headers={"content-type": content_type},
    )
    assert answer.status_code == status, answer.text
    assert "UTF-8" in answer.text
    assert len(db.tables.audit) == audited  # no sign-in was tried
    for taken in ("", "; charset=utf-8", "; charset=UTF-8", '; charset="utf8"'):
        answer = await client.post(
            "/signin",
            content=f"login=alic%C3%A9&password=x&_csrf_token={token}".encode(),
            headers={"content-type": f"application/x-www-form-urlencoded{taken}"},
        )
        assert answer.status_code == 401, (taken, answer.text)  # an unknown login
