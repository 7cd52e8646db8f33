"""The live service (uvicorn, SQLite, HTTP interactions on, the Discord emulator) against
hostile input: a bounded schemathesis run over the JSON API (with every check: the schema
must describe each answer) and a hand-written list of malformed requests on the pages and
/interactions. Nothing may answer 5xx.

Bounded: a few dozen examples per API operation, so the run stays well under a minute; the
point is the kinds of input (every generated shape, every hand-picked trap), not volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.sql import SqlDatabase, migrate
from entrypoints.container import build_container
from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.web import create_app
from tests.bot_support import signed_request
from tests.harness import cheap_argon2, make_settings
from tests.integration.conformance import Options, link_the_examples, run_schemathesis_at_once
from tests.servers import bound_socket, port_of, serve

APP_ID = "1200000000000000077"


@dataclass
class Live:
    url: str
    key: str
    emulator: EmulatorState


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('hostile') / 'app.db'}"
    sock = bound_socket()  # its port known now: the app's URL is in its settings
    app_url = f"http://127.0.0.1:{port_of(sock)}"
    emulator = EmulatorState(
        APP_ID, "secret-hostile", {f"{app_url}/auth/discord/callback"}, response_deadline=60.0
    )
    emulator.interactions_url = f"{app_url}/interactions"
    with sock, serve(create_emulator_app(emulator)) as emulator_url:
        settings_ = make_settings(
            storage="sql",
            database_url=database_url,
            public_url=app_url,
            discord_client_id=APP_ID,
            discord_client_secret="secret-hostile",
            discord_api_url=f"{emulator_url}/api/v10",
            discord_authorize_url=f"{emulator_url}/oauth2/authorize",
            discord_bot_token=emulator.bot_token,
            discord_public_key=emulator.public_key,
            discord_reply_deadline_seconds=20.0,
            discord_answer_deadline_seconds=25.0,
            auth_rate_limit_per_minute=10_000,  # the fuzzer is one client
        )
        container = build_container(settings_)
        container.password_hasher.override(cheap_argon2())

        async def prepare() -> str:
            database: SqlDatabase = container.sql_db()
            await migrate.upgrade(database)
            await link_the_examples(container.uow())
            both = ["links:read", "links:write"]
            key: str = (await container.create_api_key().execute("fuzz", both)).token
            await database.dispose()  # the server opens its own connections, on its own loop
            return key

        key = asyncio.run(prepare())
        with serve(create_app(container), sock):
            yield Live(app_url, key, emulator)


def test_the_schema_agrees_with_every_answer_on_sqlite(live: Live, tmp_path: Path) -> None:
    """Schemathesis with every check (no 5xx among them), with a key that may read and write
    and without one; ``test_openapi_conformance`` makes the longer run, on Postgres."""
    runs = run_schemathesis_at_once(
        live.url,
        tmp_path,
        {"a key": Options(40, (f"Authorization: Bearer {live.key}",)), "no key": Options(40)},
    )
    for name, run in runs.items():
        assert run.returncode == 0, f"with {name}:\n{run.explain()}"
        assert run.generated >= 40, f"with {name}:\n{run.explain()}"


def _signed(live: Live, payload: Any, *, timestamp: str | None = None) -> dict[str, Any]:
    body, headers = signed_request(live.emulator, payload)
    if timestamp is not None:
        headers["x-signature-timestamp"] = timestamp
        headers["x-signature-ed25519"] = live.emulator.sign(body, timestamp)
    return {"content": body, "headers": headers}


def _signed_bytes(live: Live, body: bytes) -> dict[str, Any]:
    stamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "x-signature-ed25519": live.emulator.sign(body, stamp),
        "x-signature-timestamp": stamp,
    }
    return {"content": body, "headers": headers}


def _malformed(live: Live) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(name, method, path, request arguments): traps a person or a scanner might send."""
    huge = "x" * 2_000_000
    return [
        ("bad host port", "GET", "/healthz", {"headers": {"host": "x:abc"}}),
        ("bad host on a page", "GET", "/signin", {"headers": {"host": "[::1"}}),
        ("huge host", "GET", "/", {"headers": {"host": "a" * 5000}}),
        ("nul in the query", "GET", "/signin?next=%00", {}),
        ("escape in the query", "GET", "/auth/discord/login?next=/%1b[31m", {}),
        ("nul in a path token", "GET", "/link/%00", {}),
        ("long path token", "GET", "/link/" + "A" * 5000, {}),
        ("unicode path", "GET", "/verify-email/\u202egnp.exe", {}),
        ("traversal", "GET", "/static/../../etc/passwd", {}),
        ("nul in a static name", "GET", "/static/style.css%00", {}),
        ("static name too long", "GET", "/static/" + "x" * 300, {}),
        ("static file as a folder", "GET", "/static/style.css/x", {}),
        ("callback junk", "GET", "/auth/discord/callback?state=%00&code=" + "c" * 5000, {}),
        ("callback no state", "GET", "/auth/discord/callback", {}),
        ("callback error", "GET", "/auth/discord/callback?error=%ff%fe", {}),
        ("confirming junk", "GET", "/auth/discord/confirming?state=%00" + "s" * 5000, {}),
        ("confirming no state", "GET", "/auth/discord/confirming", {}),
        ("form without csrf", "POST", "/signin", {"data": {"login": "a", "password": "b"}}),
        ("two-megabyte form", "POST", "/signin", {"data": {"password": huge}}),
        ("json to a form", "POST", "/signup", {"json": {"username": ["x"]}}),
        (
            "broken multipart",
            "POST",
            "/signin",
            {
                "content": b"--x\r\nbroken",
                "headers": {"content-type": "multipart/form-data; boundary=x"},
            },
        ),
        ("wrong method", "DELETE", "/account", {}),
        ("put to the api", "PUT", "/api/v1/links/1", {}),
        ("api id overflow", "GET", "/api/v1/links/" + "9" * 400, {}),
        ("api negative id", "GET", "/api/v1/links/-1", {}),
        ("bulk junk", "POST", "/api/v1/links/lookup", {"content": b"{not json"}),
        ("interaction unsigned", "POST", "/interactions", {"content": b"{}"}),
        (
            "interaction absurd timestamp",
            "POST",
            "/interactions",
            _signed(live, {"type": 1}, timestamp="9" * 400),
        ),
        (
            "interaction negative timestamp",
            "POST",
            "/interactions",
            _signed(live, {"type": 1}, timestamp="-5"),
        ),
        (
            "interaction signature too long",
            "POST",
            "/interactions",
            {
                "content": b'{"type": 1}',
                "headers": {"x-signature-ed25519": "ab" * 5000, "x-signature-timestamp": "1"},
            },
        ),
        ("interaction not json", "POST", "/interactions", _signed(live, "not json")),
        ("interaction list", "POST", "/interactions", _signed(live, [1, 2, 3])),
        ("interaction no type", "POST", "/interactions", _signed(live, {"id": "1"})),
        (
            "interaction nested too deep",
            "POST",
            "/interactions",
            _signed_bytes(live, b'{"type": 2, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        ),
        (
            "interaction junk command",
            "POST",
            "/interactions",
            _signed(live, {"type": 2, "id": "x", "token": "t" * 80, "data": {"name": 5}}),
        ),
        (
            "interaction too big",
            "POST",
            "/interactions",
            {
                "content": b"{" + b" " * 2_000_000 + b"}",
                "headers": {"x-signature-ed25519": "00" * 64, "x-signature-timestamp": "1"},
            },
        ),
    ]


def test_a_static_name_no_file_can_have_is_not_found(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    """A NUL byte or a part over 255 bytes made the file lookup fail: 500, and a traceback in
    the log for the NUL (helper-55's review)."""
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for name in ("style.css%00", "a%00.css", "x" * 256, "style.css/x"):
            answer = client.get(f"/static/{name}")
            assert answer.status_code == 404, (name, answer.text[:200])
        assert client.get("/static/style.css").status_code == 200
    assert "unexpected error" not in caplog.text


def test_a_bad_host_is_refused_in_each_routes_own_shape(live: Live) -> None:
    """The JSON API's refusals have one documented shape, the bad Host's too (helper-55's
    review: it was a sentence in plain text)."""
    with httpx.Client(base_url=live.url, timeout=30) as client:
        api = client.get("/api/v1/links/1", headers={"host": "a_b"})
        interactions = client.post("/interactions", content=b"{}", headers={"host": "x:0"})
        page = client.get("/signin", headers={"host": "a_b"})
    assert api.status_code == 400
    assert api.json() == {
        "error": {
            "code": "http_400",
            "message": "Bad Request: the Host header is not a valid host name.",
        }
    }
    assert interactions.status_code == 400
    assert interactions.json() == {"detail": "the Host header is not a valid host name."}
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/plain")
    assert "Host header" in page.text


def test_malformed_requests_never_get_a_5xx(live: Live) -> None:
    failures = []
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for name, method, path, arguments in _malformed(live):
            try:
                answer = client.request(method, path, **arguments)
            except httpx.RemoteProtocolError:
                continue  # the server closed a request it would not even parse: fine
            if answer.status_code >= 500:
                failures.append(f"{name}: {answer.status_code} {answer.text[:200]}")
    assert failures == []


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /signin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\na=b",
        b"GET /healthz HTTP/1.1\r\nHost: x:abc\r\n\r\n",
        b"GET /signin?next=%00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST /interactions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked"
        b"\r\n\r\nzz\r\n",
        # What h11 and httptools (uvicorn's parser since issue 14) answer differently: h11
        # reads CL+TE as chunked, folds obs-fold, takes bare LF and control bytes in values,
        # and the same Content-Length twice; httptools refuses each with a 400. Either way
        # no 5xx, and never a body read two ways (see the smuggling test below).
        b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n"
        b"Content-Length: 1\r\n\r\nx",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: b\r\n c\r\n\r\n",
        b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x01b\x7f\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX(y): z\r\n\r\n",
        b"GET http://evil.example/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        b"GET /api/v1/links/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"get /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /healthz\r\n\r\n",
    ],
    ids=[
        "content length",
        "host",
        "nul",
        "chunking",
        "cl and te",
        "two content lengths",
        "obs-fold",
        "bare lf",
        "control bytes in a value",
        "bad header name",
        "absolute form",
        "http 1.0 keep-alive",
        "pipelined",
        "lowercase method",
        "http 0.9",
    ],
)
def test_requests_no_client_library_would_send_get_no_5xx(live: Live, raw: bytes) -> None:
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(raw)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b"(closed)"
    # (505: the protocol's refusal of HTTP/0.9, not a server error)
    assert not status.startswith(b"5") or status == b"505", answer[:300]


def _exchange(live: Live, raw: bytes) -> list[bytes]:
    """The status codes the server answered ``raw`` with, in order, once it closed."""
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        with contextlib.suppress(OSError):  # refused mid-send: the answer is still read
            conn.sendall(raw)
            conn.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                answer += chunk
    return re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
        b"GET /api/v1/links/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: x:abc\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n evil.example\r\n\r\n",
    ],
    ids=["two hosts", "the same host twice", "a bad second host", "no host", "folded host"],
)
def test_a_request_without_exactly_one_host_is_refused(live: Live, raw: bytes) -> None:
    """RFC 9112: 400 to two Host fields, or to none in HTTP/1.1. h11 refused them itself;
    httptools passes them to the app, whose Host check read only the first of two (a proxy in
    front may have routed by the other): the check refuses them now, whichever parser."""
    assert _exchange(live, raw) == [b"400"]


def test_an_absolute_target_naming_another_host_is_refused(live: Live) -> None:
    """RFC 9112 (3.2.2): of an absolute-form target and Host, the target's authority is the
    request's. httptools handed the app its path alone, so ``GET http://evil.example/x``
    with a Host the app serves was served as ``/x`` of that Host, where a proxy in front may
    have routed (or cached) it by evil.example. Such a target is taken only when it names
    the Host (case, default port aside); one naming another, or a user, is refused."""
    authority = live.url.removeprefix("http://")
    host, port = authority.split(":")

    def get(target: str, host_field: str = authority) -> list[bytes]:
        raw = f"GET {target} HTTP/1.1\r\nHost: {host_field}\r\nConnection: close\r\n\r\n"
        return _exchange(live, raw.encode())

    assert get("http://evil.example/healthz") == [b"400"]
    assert get(f"http://evil.example:{port}/healthz") == [b"400"]
    assert get(f"http://{host}:{int(port) + 1}/healthz") == [b"400"]
    assert get(f"http://{host}/healthz") == [b"400"]  # port 80, the Host's is another
    assert get(f"http://user@{authority}/healthz") == [b"400"]
    assert get(f"ftp://{authority}/healthz") == [b"400"]
    # Target and Host agreeing on another host: the request is the origin form's.
    assert get("http://evil.example/healthz", "evil.example") == get("/healthz", "evil.example")
    # Naming the Host, it is the same request as its origin form.
    assert get(f"http://{authority}/healthz") == [b"200"]
    assert get(f"HTTP://{authority.upper()}/healthz") == [b"200"]
    assert get(f"http://{host}:80/healthz", host) == get("/healthz", host)
    # An empty path is "/" (RFC 9110 4.2.3), its query kept; for OPTIONS without one, "*".
    assert get(f"http://{authority}") == get("/")
    assert get(f"http://{authority}?next=/x") == get("/?next=/x")


def test_an_absolute_target_with_an_empty_path_is_the_root() -> None:
    """``GET http://host HTTP/1.1`` (an absolute form, its path empty) was refused with a
    400: its path is "/" (RFC 9110 4.2.3), its query kept, and an OPTIONS one without a query
    is the asterisk form (RFC 9112 3.2.4)."""
    seen: list[tuple[str, str, bytes, bytes]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append((scope["method"], scope["path"], scope["raw_path"], scope["query_string"]))
            await _reads_all_then_204(scope, receive, send)

    with serve(app) as url:
        authority = url.removeprefix("http://")
        for method, target in (
            ("GET", f"http://{authority}"),
            ("GET", f"HTTP://{authority}?a=1"),
            ("OPTIONS", f"http://{authority}"),
            ("OPTIONS", f"http://{authority}?a=1"),
            ("GET", f"http://{authority}/x"),
        ):
            raw = f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
            assert _statuses(url, raw.encode()) == [b"204"], target
    assert seen == [
        ("GET", "/", b"/", b""),
        ("GET", "/", b"/", b"a=1"),
        ("OPTIONS", "*", b"*", b""),
        ("OPTIONS", "/", b"/", b"a=1"),
        ("GET", "/x", b"/x", b""),
    ]


def test_a_request_head_past_its_bound_is_refused_and_its_connection_closed(live: Live) -> None:
    """uvicorn's httptools code kept a request's head whatever its size (h11 stopped at
    16 KiB): the protocol we serve with refuses one past ``MAX_HEAD_BYTES``, and closes."""
    from entrypoints.http11 import MAX_HEAD_BYTES

    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    big = b"X-Big: " + b"a" * (MAX_HEAD_BYTES * 4) + b"\r\n"
    assert _exchange(live, head + big + b"\r\n") == [b"400"]
    many = b"X-Many: aaaaaaaaaaaaaaaaaaaaaaaa\r\n" * (MAX_HEAD_BYTES // 8)
    assert _exchange(live, head + many + b"\r\n") == [b"400"]
    # A large head within the bound (cookies, say) is served; so is the next on its connection.
    fair = b"Cookie: " + b"c" * 12_000 + b"\r\n"
    again = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    assert _exchange(live, head + fair + b"\r\n" + again) == [b"200", b"200"]


def test_a_body_is_never_read_two_ways(live: Live) -> None:
    """Request smuggling needs a server that reads a body's length otherwise than a proxy in
    front: with Content-Length and chunked both, h11 takes the chunks (as RFC 9112 says) and
    httptools refuses; with two different Content-Lengths both refuse. Never is the
    request hidden in the body answered as one of its own."""
    hidden = b"GET /api/v1/links/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = b"0\r\n\r\n" + hidden
    cl_te = (
        b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    answers = _exchange(live, cl_te)
    # Refused (httptools), or the chunked body ended at "0" and what follows is a request
    # of the client's own on that connection (h11): the API's 401 for it, after the POST's.
    assert answers in ([b"400"], [b"405", b"401"]), answers
    two_lengths = (
        b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
        b"Content-Length: " + str(len(hidden)).encode() + b"\r\n\r\n" + hidden
    )
    assert _exchange(live, two_lengths) == [b"400"]


def test_trailer_fields_never_join_the_headers() -> None:
    """uvicorn's httptools code appended a chunked body's trailer fields to the scope's
    headers, after the app (and the Host check) had read them; h11 drops them, and so does
    the protocol we serve with."""
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        seen.append(list(scope["headers"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with serve(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(
                b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\nHost: evil.example\r\n"
                b"X-Trailer: 1\r\n\r\n"
            )
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 204 ")
    assert [name for name, _ in seen[0]] == [b"host", b"transfer-encoding", b"connection"]


async def _reads_all_then_204(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _recording_paths() -> tuple[list[str], Any]:
    """An app that notes each request's path, reads its body and answers 204; the paths."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
            await _reads_all_then_204(scope, receive, send)

    return seen, app


def _statuses(url: str, *raws: bytes) -> list[bytes]:
    """Each of ``raws`` sent on one connection once the answers to the one before have come
    (all of them but the last answered in full), then the statuses of every answer."""
    host, port = url.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        for n, raw in enumerate(raws, start=1):
            with contextlib.suppress(OSError):  # refused mid-send: the answer is still read
                conn.sendall(raw)
            if n < len(raws):
                while len(re.findall(rb"HTTP/1\.[01] \d{3} ", answer)) < n:
                    answer += conn.recv(65536)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                answer += chunk
    return re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)


def test_a_trailer_section_past_the_heads_bound_is_refused() -> None:
    """httptools keeps a trailer field's bytes until it ends (joined piece by piece, each
    read copying all the ones before): a trailer sent for ever held all it sent, and the CPU
    too. Fields after a chunked body are bounded as a head is (h11 bounded them too)."""
    from entrypoints.http11 import MAX_HEAD_BYTES

    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    trailer = b"X-Big: " + b"a" * (MAX_HEAD_BYTES * 4) + b"\r\n"
    with serve(_reads_all_then_204) as url:
        assert _statuses(url, head + b"3\r\nabc\r\n0\r\n" + trailer + b"\r\n") == [b"400"]
        many = b"X-Many: aaaaaaaaaaaaaaaaaaaaaaaa\r\n" * (MAX_HEAD_BYTES // 8)
        assert _statuses(url, head + b"3\r\nabc\r\n0\r\n" + many + b"\r\n") == [b"400"]
        # A chunked body of any size, its trailer small, is served.
        body = b"%x\r\n" % (MAX_HEAD_BYTES * 2) + b"b" * (MAX_HEAD_BYTES * 2) + b"\r\n"
        assert _statuses(url, head + body + b"0\r\nX-T: 1\r\n\r\n") == [b"204"]


class _Transport(asyncio.Transport):
    """What a protocol fed by hand writes to: its reads are exactly what a test feeds."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_a_read_of_many_tiny_chunks_is_no_oversize_head() -> None:
    """The trailer section's bound counted every byte of a read that was not body once a
    chunk's size line had ended in it: a read of 20,000 one-byte chunks (100 KB of size
    lines and line ends) that ended after a size line (the next chunk's data, or the trailer
    section, in the read after) was refused as a head past ``MAX_HEAD_BYTES``. Fed to the
    protocol in exactly those reads, then over a socket as a client would send it."""
    import uvicorn
    from uvicorn.server import ServerState

    from entrypoints.http11 import BoundedHttpToolsProtocol

    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    tiny = b"1\r\na\r\n" * 20_000
    splits = [(tiny + b"0\r\n", b"\r\n"), (tiny + b"1\r\n", b"a\r\n0\r\n\r\n")]

    async def fed(first: bytes, rest: bytes) -> bytes:
        config = uvicorn.Config(_reads_all_then_204, log_config=None)
        config.load()
        state = ServerState()
        protocol = BoundedHttpToolsProtocol(config, state, {}, _loop=asyncio.get_running_loop())
        transport = _Transport()
        protocol.connection_made(transport)
        protocol.data_received(head + first)
        protocol.data_received(rest)
        await asyncio.wait_for(asyncio.gather(*state.tasks), CLOSED_WITHIN)
        protocol.connection_lost(None)
        return transport.written

    for first, rest in splits:
        answer = asyncio.run(fed(first, rest))
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"204"], answer
    with serve(_reads_all_then_204) as url:
        for first, rest in splits:
            with _connect(url) as conn:
                conn.sendall(head + first)
                time.sleep(0.2)  # (most likely a read of its own: the bug needed one)
                conn.sendall(
                    rest + b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                answers = _read_until_closed(conn)
            assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"204", b"204"], answers


def test_a_head_begun_in_the_read_that_ended_another_request_is_counted() -> None:
    """The head's bound counted a read only when the connection was in a head before it, and
    checked it only while the head went on: a request, then in the same read a second head
    of any size the read could hold (up to 256 KiB), went uncounted on a connection past its
    first request, and a head that ended within the read crossing the bound was served."""
    from entrypoints.http11 import MAX_HEAD_BYTES

    small = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    huge = (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
        + b"a" * (MAX_HEAD_BYTES * 2)
        + b"\r\nConnection: close\r\n\r\n"
    )
    with serve(_reads_all_then_204) as url:
        answers = _statuses(url, small, small + huge)
    assert answers[0] == b"204", answers
    assert answers[-1] == b"400", answers


# The head timeout of the servers below: short, so that the tests wait little for it.
SHORT_HEAD_TIMEOUT = 0.5
# How long a test waits for such a server to close a connection, far past SHORT_HEAD_TIMEOUT
# (both cores busy): one left open (uvicorn's httptools code kept them for ever) fails then.
CLOSED_WITHIN = 60.0


def _read_until_closed(conn: socket.socket) -> bytes:
    conn.settimeout(CLOSED_WITHIN)
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def _read_answers(conn: socket.socket, count: int) -> bytes:
    """What the server sent until ``count`` whole answers (no body) have come."""
    conn.settimeout(CLOSED_WITHIN)
    answer = b""
    while answer.count(b"\r\n\r\n") < count:
        chunk = conn.recv(65536)
        assert chunk, answer
        answer += chunk
    return answer


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=CLOSED_WITHIN)


def test_a_connection_that_sends_nothing_is_closed_after_the_head_timeout() -> None:
    """uvicorn's keep-alive timeout starts only once a response has gone: a connection that
    sent nothing was held for ever (a few thousand of them, and the process had no file
    descriptor left). Closed once the head timeout passes, without an answer: nothing asked."""
    with (
        serve(_reads_all_then_204, head_timeout_seconds=SHORT_HEAD_TIMEOUT) as url,
        _connect(url) as conn,
    ):
        assert _read_until_closed(conn) == b""


def test_a_head_left_unfinished_is_answered_408_and_closed() -> None:
    """Any byte cancelled uvicorn's keep-alive timeout: a head begun and never finished held
    its connection for ever. The client that began one is told (408), as Apache and Node
    do, and the connection closed."""
    partial = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    with (
        serve(_reads_all_then_204, head_timeout_seconds=SHORT_HEAD_TIMEOUT) as url,
        _connect(url) as conn,
    ):
        conn.sendall(partial)
        answer = _read_until_closed(conn)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close\r\n" in answer.lower()


def test_the_head_timeout_runs_again_after_each_response() -> None:
    """A kept-alive connection gets the head timeout again once its answer has gone: a head
    begun after it and left unfinished is closed too (uvicorn's keep-alive timeout ended at
    its first byte), as is one idle after a response."""
    whole = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with (
        serve(_reads_all_then_204, head_timeout_seconds=SHORT_HEAD_TIMEOUT) as url,
        _connect(url) as conn,
    ):
        conn.sendall(whole)
        assert _read_answers(conn, 1).startswith(b"HTTP/1.1 204 ")
        conn.sendall(b"GET / HTTP/1.1\r\nHo")
        assert _read_until_closed(conn).startswith(b"HTTP/1.1 408 ")
        with _connect(url) as idle:
            idle.sendall(whole)
            answers = _read_until_closed(idle)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"204"], answers


async def _sleeps_then_204(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await asyncio.sleep(SHORT_HEAD_TIMEOUT * 4)
    await _reads_all_then_204(scope, receive, send)


async def _answers_at_once(scope: Any, receive: Any, send: Any) -> None:
    """Answers 204 without reading the request's body."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _until_told(told: list[str], count: int) -> None:
    """Until the app was told ``count`` things (its task runs in the server's thread, maybe
    after the answer): a deadline only."""
    deadline = time.monotonic() + CLOSED_WITHIN
    while len(told) < count:
        assert time.monotonic() < deadline, told
        time.sleep(0.05)


def test_the_head_timeout_never_cuts_off_a_request_being_answered() -> None:
    """The timeout is the head's: an app slower than it answers, each of pipelined requests
    answers (their heads came whole), and a body still coming after its answer (an app that
    did not read it) is read to its end, and the next request answered."""
    whole = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with (
        serve(_sleeps_then_204, head_timeout_seconds=SHORT_HEAD_TIMEOUT) as url,
        _connect(url) as conn,
    ):
        conn.sendall(whole + whole)
        answers = _read_answers(conn, 2) + _read_until_closed(conn)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"204", b"204"], answers

    post = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nab"
    with (
        serve(_answers_at_once, head_timeout_seconds=SHORT_HEAD_TIMEOUT) as url,
        _connect(url) as conn,
    ):
        conn.sendall(post)
        assert _read_answers(conn, 1).startswith(b"HTTP/1.1 204 ")
        time.sleep(SHORT_HEAD_TIMEOUT * 4)
        conn.sendall(b"cde" + whole)
        answers = _read_until_closed(conn)  # (closed by the head timeout after its answer)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"204"], answers


def test_a_slow_head_within_the_timeout_is_served() -> None:
    """A head sent in pieces, pauses between them, is served once whole within the timeout
    (here the default's), and so is the next on its connection."""
    pieces = [b"GET / HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"X-Slow: 1\r\n", b"\r\n"]
    with serve(_reads_all_then_204) as url, _connect(url) as conn:
        for _ in range(2):
            for piece in pieces:
                conn.sendall(piece)
                time.sleep(0.2)
        answers = _read_answers(conn, 2)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"204", b"204"], answers


def test_a_body_that_stops_coming_is_answered_408_and_closed() -> None:
    """uvicorn waited for a body for ever: a head with ``Content-Length: 100000`` and then
    nothing (or a few bytes) held its connection and its app's task, waiting on
    ``receive()``. Past the body timeout between two reads (nginx's ``client_body_timeout``)
    the app is told ``http.disconnect`` and the client, answered nothing yet, a 408."""
    told: list[str] = []

    async def reads(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            while (message := await receive()).get("more_body"):
                pass
            told.append(message["type"])
            if message["type"] == "http.request":
                await _reads_all_then_204(scope, receive, send)

    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
    with serve(reads, body_timeout_seconds=SHORT_HEAD_TIMEOUT) as url:
        for sent in (head, head + b"abc"):
            with _connect(url) as conn:
                conn.sendall(sent)
                answer = _read_until_closed(conn)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"connection: close\r\n" in answer.lower()
            assert answer.count(b"HTTP/1.1") == 1, answer
        _until_told(told, 2)
    assert told == ["http.disconnect", "http.disconnect"]


def test_a_body_that_stops_coming_after_its_answer_is_closed() -> None:
    """An app that answered without reading the body: the body is still read (to reach the
    next request), and one that stops coming closes the connection, without another answer."""

    post = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\nab"
    with (
        serve(_answers_at_once, body_timeout_seconds=SHORT_HEAD_TIMEOUT) as url,
        _connect(url) as conn,
    ):
        conn.sendall(post)
        answers = _read_until_closed(conn)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"204"], answers


def test_the_body_timeout_counts_only_the_clients_time() -> None:
    """The body's time runs between two of its reads, not for the whole body, and never while
    the server holds the body back: an app slower than it to read (uvicorn stops reading past
    64 KiB unread), or to ask for it (the client waits for ``100 Continue``)."""
    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
    with serve(_sleeps_then_204, body_timeout_seconds=SHORT_HEAD_TIMEOUT) as url:
        with _connect(url) as conn:  # all of it sent, the app reading it late
            body = b"b" * (1024 * 1024)
            conn.sendall(head % len(body) + b"Connection: close\r\n\r\n" + body)
            answers = _read_until_closed(conn)
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"204"], answers
        with _connect(url) as conn:  # the client waiting to be asked for it
            conn.sendall(head % 5 + b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
            assert _read_answers(conn, 1).startswith(b"HTTP/1.1 100 ")
            conn.sendall(b"abcde")
            answers = _read_until_closed(conn)
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"204"], answers
    # Longer in all than the timeout, each piece far within it (a client stalled up to
    # 3.75 s on a busy machine still sends the next in time).
    with (
        serve(_reads_all_then_204, body_timeout_seconds=SHORT_HEAD_TIMEOUT * 8) as url,
        _connect(url) as conn,
    ):
        conn.sendall(head % 20 + b"Connection: close\r\n\r\n")
        for _ in range(20):
            time.sleep(SHORT_HEAD_TIMEOUT / 2)
            conn.sendall(b"x")
        answers = _read_until_closed(conn)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"204"], answers


_EXPECTING = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
)


def _answer_then_next(url: str, head: bytes, after: bytes) -> tuple[bytes, list[bytes]]:
    """The first answer to ``head`` (a request whose client waits for ``100 Continue``, its
    body never sent), then the statuses of all the server sent once ``after`` (the client's
    next request, the body skipped) was sent, until it closed."""
    with _connect(url) as conn:
        conn.sendall(head)
        first = _read_answers(conn, 1)
        with contextlib.suppress(OSError):  # closed after its answer: the point
            conn.sendall(after)
        answers = first + _read_until_closed(conn)
    return first, re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)


def test_an_answer_before_a_body_its_client_waits_to_send_closes_the_connection() -> None:
    """A client told to wait (``Expect: 100-continue``) and answered before its body was asked
    for may never send it (RFC 9110 10.1.1: the server says whether it closes or reads on):
    the connection was kept, and the client's next request read as that body (or waited on
    until the body timeout). The answer says ``Connection: close`` and the connection is
    closed after it. A body begun (sent without waiting) or asked for (``100 Continue``) is
    read on, the connection kept."""
    whole = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with serve(_answers_at_once) as url:
        first, statuses = _answer_then_next(url, _EXPECTING, whole)
    assert first.startswith(b"HTTP/1.1 204 "), first
    assert b"\r\nconnection: close\r\n" in first.lower(), first
    assert statuses == [b"204"], first

    with serve(_answers_at_once) as url, _connect(url) as conn:  # sent without waiting
        conn.sendall(_EXPECTING + b"ab")  # (one read: the body began before the answer)
        first = _read_answers(conn, 1)
        assert b"connection: close" not in first.lower(), first
        conn.sendall(b"cde" + whole)
        answers = first + _read_answers(conn, 1)
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"204", b"204"], answers

    with serve(_reads_all_then_204) as url, _connect(url) as conn:
        conn.sendall(_EXPECTING)
        assert _read_answers(conn, 1).startswith(b"HTTP/1.1 100 ")
        conn.sendall(b"abcde" + whole)
        answers = _read_answers(conn, 2)
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"204", b"204"], answers
        assert b"connection: close" not in answers.lower(), answers


# Signature headers of their form (the signature itself is checked once the body is read).
_SIGNATURE_OF_ITS_FORM = (
    b"X-Signature-Ed25519: " + b"0" * 128 + b"\r\nX-Signature-Timestamp: 1700000000\r\n"
)


@pytest.mark.parametrize(
    ("target", "fields", "status"),
    [
        ("/interactions", b"Content-Length: 5\r\n", b"401"),  # no signature headers
        ("/no-such-page", b"Content-Length: 5\r\n", b"404"),
        ("/interactions", b"Content-Length: 2000000\r\n" + _SIGNATURE_OF_ITS_FORM, b"413"),
    ],
    ids=["401", "404", "413"],
)
def test_the_apps_early_answers_to_a_waiting_client_close_the_connection(
    live: Live, target: str, fields: bytes, status: bytes
) -> None:
    """The service's answers given from a request's head alone, to a client waiting to send
    its body: the connection closed after each, the client's next request never read as it."""
    head = (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % target.encode()
        + b"Content-Type: application/json\r\n"
        + fields
        + b"Expect: 100-continue\r\n\r\n"
    )
    after = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    first, statuses = _answer_then_next(live.url, head, after)
    assert first.startswith(b"HTTP/1.1 " + status + b" "), first
    assert b"\r\nconnection: close\r\n" in first.lower(), first
    assert statuses == [status], first


def test_requests_whole_before_a_half_close_are_answered() -> None:
    """A client that shuts down its side once its requests are sent (``shutdown(SHUT_WR)``,
    as ``_exchange`` and ``_statuses`` do) waits for its answers: uvicorn closed the
    connection at the end of what came, and an answer not yet written (an app slower than
    that) was never sent. Each is answered, as nginx does, then the connection closed; a
    request cut short by it (its body unfinished) tells its app ``http.disconnect``."""
    whole = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with serve(_sleeps_then_204) as url:
        for raws in ((whole,), (whole + whole,), (whole, whole)):  # pipelined, one by one
            assert _statuses(url, *raws) == [b"204"] * b"".join(raws).count(whole), raws
    told: list[str] = []

    async def reads(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            while (message := await receive()).get("more_body"):
                pass
            told.append(message["type"])

    cut = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nabc"
    with serve(reads) as url:
        assert _statuses(url, cut) == []
        _until_told(told, 1)
    assert told == ["http.disconnect"]


def test_an_interaction_hikari_cannot_read_leaves_no_token_in_the_log(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    """hikari hands a payload it cannot read, token and all, to the event loop's exception
    handler; the service withholds the payload before anything is logged."""
    token = "interaction-token-" + "s" * 60
    payload = {
        "type": 2,
        "id": live.emulator.snowflake(),  # its own: a replayed id is refused first
        "application_id": APP_ID,
        "token": token,
        "version": 1,
        "data": {"id": "not a snowflake", "name": "link", "type": 1},
    }
    with caplog.at_level("DEBUG"), httpx.Client(base_url=live.url, timeout=30) as client:
        answer = client.post("/interactions", **_signed(live, payload))
        # The loop's exception handler runs in the server's thread, maybe after the answer:
        # wait for its record (checking before it would check nothing).
        deadline = time.monotonic() + 60
        while "payload withheld" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
    assert answer.status_code < 500, answer.text
    assert token not in caplog.text
    assert json.dumps(token) not in caplog.text


def test_the_log_keeps_no_interaction_token_whatever_logs_it() -> None:
    import logging

    from entrypoints.logs import RedactTokens

    token = "A" * 70
    record = logging.LogRecord(
        "hikari.rest",
        logging.ERROR,
        __file__,
        1,
        "POST /api/v10/interactions/123/%s/callback failed; payload {'token': '%s'}",
        (token, token),
        None,
    )
    assert RedactTokens().filter(record)
    assert token not in record.getMessage()
    assert "/interactions/123/<token>/callback" in record.getMessage()


def test_a_database_path_is_never_in_a_page(live: Live) -> None:
    answer = httpx.get(f"{live.url}/link/" + "B" * 43, timeout=30)
    assert answer.status_code == 404
    assert str(Path.cwd()) not in answer.text


def test_a_request_with_an_upgrade_not_made_never_smuggles_its_body() -> None:
    """httptools takes a request with an upgrade (``Connection: Upgrade``) as bodyless, and
    parses the reads after it as requests: with an upgrade the server does not make (only a
    WebSocket's is), its body, sent in a read of its own, was a second request, which a proxy
    passing Upgrade on (as one set up for WebSockets does) took for a body, and the app got no
    body. Refused (400) when a body comes; one without is answered, its connection closed."""
    seen, app = _recording_paths()
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    upgrade = b"Connection: Upgrade\r\nUpgrade: h2c\r\n"
    post = b"POST /form HTTP/1.1\r\nHost: 127.0.0.1\r\n" + upgrade
    with serve(app, head_timeout_seconds=SHORT_HEAD_TIMEOUT) as url:
        for framing in (
            b"Content-Length: %d\r\n" % len(smuggled),
            b"Transfer-Encoding: chunked\r\n",
        ):
            with _connect(url) as conn:
                conn.sendall(post + framing + b"\r\n")
                answer = _read_answers(conn, 1)
                with contextlib.suppress(OSError):  # (closed after the 400)
                    conn.sendall(smuggled)
                answer += _read_until_closed(conn)
            assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"400"], answer
        assert seen == []
        get = b"GET /first HTTP/1.1\r\nHost: 127.0.0.1\r\n" + upgrade + b"\r\n"
        with _connect(url) as conn:
            conn.sendall(get + smuggled)
            answer = _read_answers(conn, 1)
        assert answer.startswith(b"HTTP/1.1 204 "), answer
        assert b"connection: close\r\n" in answer.lower(), answer
    assert seen == ["/first"]


def test_transfer_encoding_in_an_http10_request_is_refused() -> None:
    """RFC 9112 6.1: a Transfer-Encoding in an HTTP/1.0 message is faulty framing (a 1.0
    peer in front reads the message without it); httptools read the body as chunked. A 400,
    as from nginx."""
    chunked = b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    with serve(_reads_all_then_204) as url:
        for version in (b"HTTP/1.0", b"HTTP/1.1"):
            raw = b"POST / " + version + b"\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n"
            expected = [b"400"] if version == b"HTTP/1.0" else [b"204"]
            assert _statuses(url, raw + chunked) == expected, version


def test_a_transfer_coding_other_than_chunked_is_not_implemented() -> None:
    """RFC 9112 6.1: a server that receives a transfer coding it does not understand SHOULD
    answer 501 (as nginx does). httptools took ``gzip, chunked`` as chunked and handed the
    app the body still gzipped, as if it were the content; only chunked is ours."""
    seen, app = _recording_paths()
    body = b"3\r\nabc\r\n0\r\n\r\n"
    with serve(app) as url:
        for coding in (b"gzip, chunked", b"deflate,chunked", b"x-custom, chunked"):
            raw = b"POST /coded HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: %s\r\n\r\n"
            assert _statuses(url, raw % coding + body) == [b"501"], coding
        assert seen == []
        for coding in (b"chunked", b"Chunked"):
            raw = b"POST /plain HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: %s\r\n\r\n"
            assert _statuses(url, raw % coding + body) == [b"204"], coding
    assert seen == ["/plain", "/plain"]


def test_an_http_version_other_than_10_and_11_is_refused() -> None:
    """An HTTP/0.9 request line (no version) and an HTTP/2.0 one were served, with HTTP/1.1
    answers (httptools parses both): 505 (RFC 9110 15.6.6), as is any other major version
    (httptools refused HTTP/3.1 with a 400). An HTTP/1.x past 1.1 is served as HTTP/1.1 (RFC
    9112 2.3: the highest minor version of a major one the server implements), kept alive and
    its body chunked as 1.1's: httptools refused HTTP/1.2 with a 400."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["http_version"])
            await _reads_all_then_204(scope, receive, send)

    with serve(app) as url:
        assert _statuses(url, b"GET /\r\n\r\n") == [b"505"]
        for version in (b"HTTP/0.9", b"HTTP/0.1", b"HTTP/2.0", b"HTTP/2.2", b"HTTP/3.1"):
            raw = b"GET / " + version + b"\r\nHost: 127.0.0.1\r\n\r\n"
            assert _statuses(url, raw) == [b"505"], version
        assert seen == []
        for version in (b"HTTP/1.0", b"HTTP/1.1"):
            raw = b"GET / " + version + b"\r\nHost: 127.0.0.1\r\n\r\n"
            assert _statuses(url, raw) == [b"204"], version
        assert seen == ["1.0", "1.1"]
        for version in (b"HTTP/1.2", b"HTTP/1.9"):
            get = b"GET / " + version + b"\r\nHost: 127.0.0.1\r\n\r\n"
            post = b"POST / %s\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            chunked = post % version + b"3\r\nabc\r\n0\r\n\r\n"
            assert _statuses(url, get + chunked, get) == [b"204"] * 3, version
    assert seen == ["1.0", "1.1"] + ["1.1"] * 6


def test_a_field_values_surrounding_whitespace_is_not_its_value(live: Live) -> None:
    """RFC 9112 5: a field's value excludes the whitespace around it. httptools dropped the
    leading one only, so ``Host:  127.0.0.1 `` reached the app as ``127.0.0.1 `` (refused by
    the Host check, where h11 served it), and any field kept a trailing space or tab."""
    seen: list[list[tuple[bytes, bytes]]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(list(scope["headers"]))
            await _reads_all_then_204(scope, receive, send)

    raw = b"GET / HTTP/1.1\r\nHost:  127.0.0.1 \r\nX-Padded:\t a b \t\r\n\r\n"
    with serve(app) as url:
        assert _statuses(url, raw) == [b"204"]
    assert seen == [[(b"host", b"127.0.0.1"), (b"x-padded", b"a b")]]
    host = live.url.removeprefix("http://")
    padded = b"GET /healthz HTTP/1.1\r\nHost:  %s \t\r\n\r\n" % host.encode()
    assert _exchange(live, padded) == [b"200"]


async def _websocket_or_slow_204(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
    elif scope["type"] == "http":
        await _sleeps_then_204(scope, receive, send)


def test_a_websocket_upgrade_behind_an_unanswered_request_is_not_made() -> None:
    """uvicorn made a WebSocket upgrade pipelined behind a request still being answered at
    once: its 101 went before (or amid) the earlier answer, and once that answer was done,
    the old protocol's keep-alive timer and head timer closed the WebSocket's connection.
    Such an upgrade is not made: the request is answered as any with an upgrade not made,
    after the one before, and its connection closed (the client asks again on a new one)."""
    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    slow = b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with (
        serve(_websocket_or_slow_204, head_timeout_seconds=SHORT_HEAD_TIMEOUT) as url,
        _connect(url) as conn,
    ):
        conn.sendall(slow + upgrade)
        answers = _read_until_closed(conn)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answers) == [b"204", b"204"], answers
    assert answers.lower().endswith(b"connection: close\r\n\r\n"), answers
    # Alone on its connection, the upgrade is made (the emulator's gateway needs it).
    with serve(_websocket_or_slow_204) as url, _connect(url) as conn:
        conn.sendall(upgrade)
        assert _read_answers(conn, 1).startswith(b"HTTP/1.1 101 ")


def test_a_request_refused_behind_one_being_answered_waits_for_its_answer() -> None:
    """A malformed request pipelined behind one still being answered (in the same read, or
    in a read of its own) got its 400 at once, the connection closed: the answer before it
    was cut short (a client read the 400 as its answer) and those queued were dropped. They
    are all answered in full, then the 400 (or 505, 501), and the connection closed."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
            await asyncio.sleep(SHORT_HEAD_TIMEOUT)
            while (await receive()).get("more_body"):
                pass
            body = b"answer to " + scope["path"].encode()
            length = [(b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": length})
            await send({"type": "http.response.body", "body": body})

    slow = b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    queued = b"GET /queued HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    refused = {
        b"400": b"GET /bad HTTP/1.1\r\nHost: 127.0.0.1\r\nNo Colon\r\n\r\n",
        b"505": b"GET /old HTTP/0.9\r\nHost: 127.0.0.1\r\n\r\n",
        b"501": b"POST /gz HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        # Refused in its body (a chunk's size no number), its head whole: never served.
        b"400 ": b"POST /chunks HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        b"\r\nzz\r\nabc\r\n0\r\n\r\n",
    }
    after = b"GET /after HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with serve(app) as url:
        for status, bad in refused.items():
            for pieces in ((slow + bad + after,), (slow + queued + bad + after,), (slow, bad)):
                seen.clear()
                with _connect(url) as conn:
                    for n, piece in enumerate(pieces):
                        if n:  # in a read of its own, while the one before is answered
                            deadline = time.monotonic() + CLOSED_WITHIN
                            while not seen:
                                assert time.monotonic() < deadline
                                time.sleep(0.01)
                        conn.sendall(piece)
                    answers = _read_until_closed(conn)
                served = [path.encode() for path in seen]
                assert seen == ["/slow", "/queued"][: len(served)], (status, pieces)
                statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)
                assert statuses == [b"200"] * len(served) + [status.strip()], (pieces, answers)
                refusal = answers.rindex(b"HTTP/1.1 ")
                for path in served:  # each answer whole, before the refusal
                    assert answers.index(b"\r\n\r\nanswer to " + path) < refusal, answers


def test_a_request_refused_in_its_body_once_its_answer_began_gets_no_400() -> None:
    """A body found malformed (a chunk's size no number) after its app began its answer: the
    400 was written into that answer (a client reading it took the 400 for the rest of its
    body). The connection is closed without it, its app told ``http.disconnect``."""
    told: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            while (message := await receive()).get("more_body"):
                pass
            told.append(message["type"])

    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    with serve(app) as url, _connect(url) as conn:
        conn.sendall(head + b"3\r\nabc\r\n")
        answer = b""
        while b"partial" not in answer:
            chunk = conn.recv(65536)
            assert chunk, answer
            answer += chunk
        conn.sendall(b"zz\r\n")
        answer += _read_until_closed(conn)
        deadline = time.monotonic() + CLOSED_WITHIN
        while not told:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200"], answer
    assert told == ["http.disconnect"]
