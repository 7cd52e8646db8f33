"""Every route of the app (as its route table lists them: the pages, the JSON API, the
probes, Linked Roles' and the outbox's), signed out and signed in, against hostile input:
NUL bytes, lone surrogates and bytes that are no UTF-8 in forms, queries and paths;
overlong fields; repeated and missing fields; Discord ids past 64 bits, negative, with
leading zeros or in other scripts' digits; spoiled CSRF tokens and cookies. Each answer is
a 2xx, 3xx or 4xx in its route's own shape (a page for the browser's routes, the API's JSON
error for /api/), never a 500 nor a logged traceback."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from entrypoints.web import create_app
from tests.fakes.role_connections import role_harness
from tests.harness import PASSWORD

# What a hostile client types: control characters, lone surrogates, other scripts' digits,
# direction marks, very long values.
HOSTILE = [
    "\x00",
    "a\x00b",
    "\ud800",
    "a\udfffb",
    "\u0661\u0662\u0663",  # Arabic-Indic digits: 123
    "\uff11\uff12\uff13",  # fullwidth digits
    "-1",
    "00000000000000000123",
    str(2**63),
    str(2**64),
    "9" * 30,
    "\u202eadmin",
    "x" * 10_000,
    "",
]
FIELDS = ["login", "password", "username", "email", "new_password", "current_password", "next"]
_text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))
_CSRF_COOKIE = "tfl_csrf"
_PATH_PARAMETER = re.compile(r"\{[^}]+\}")


def _encoded(value: str) -> str:
    """``value`` percent-encoded as UTF-8, a lone surrogate as the bytes it would be
    (``%ED%A0%80``), which no UTF-8 decoder takes."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def _form(fields: list[tuple[str, str]]) -> bytes:
    return "&".join(f"{_encoded(k)}={_encoded(v)}" for k, v in fields).encode()


@contextmanager
def _client(*, signed_in: bool) -> Iterator[tuple[TestClient[Litestar], list[str]]]:
    """A browser on an app with every optional route on, and the tracebacks it logs."""
    h = role_harness(email_outbox_page=True, auth_rate_limit_per_minute=10_000)
    tracebacks: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                tracebacks.append(record.getMessage())

    catch = Catch()
    logging.getLogger("taskflow_link").addHandler(catch)
    try:
        with TestClient(app=create_app(h.container)) as client:
            if signed_in:
                page = client.get("/signup")
                form = {
                    "username": "alice",
                    "email": "alice@example.com",
                    "password": PASSWORD,
                    "_csrf_token": client.cookies[_CSRF_COOKIE],
                }
                assert client.post("/signup", data=form).status_code == 200, page.text
            yield client, tracebacks
    finally:
        logging.getLogger("taskflow_link").removeHandler(catch)


def _csrf(client: TestClient[Litestar]) -> str:
    """The browser's CSRF token (a new one when a sign-in or sign-out expired it)."""
    if _CSRF_COOKIE not in client.cookies:
        client.get("/signin")
    token: str = client.cookies[_CSRF_COOKIE]
    return token


def _routes(client: TestClient[Litestar]) -> list[tuple[str, frozenset[str]]]:
    return [(route.path, frozenset(getattr(route, "methods", ()))) for route in client.app.routes]


def _check(path: str, answer: Any) -> None:
    assert answer.status_code < 500, (path, answer.status_code, answer.text[:300])
    if answer.status_code < 400 or answer.request.method == "HEAD":
        return
    content_type = answer.headers.get("content-type", "")
    if path.startswith("/api/"):
        assert content_type.startswith("application/json"), (path, content_type)
        assert answer.json()["error"]["message"], path
    elif path != "/interactions":  # Discord's endpoint answers Discord, in its own shape
        assert content_type.startswith("text/html"), (path, answer.status_code, content_type)


@pytest.mark.parametrize("signed_in", [False, True], ids=["signed-out", "signed-in"])
def test_every_route_takes_hostile_paths_and_methods(signed_in: bool) -> None:
    with _client(signed_in=signed_in) as (client, tracebacks):
        routes = _routes(client)
        assert len(routes) >= 40  # the pages, the API, Linked Roles', the outbox, the probes
        for template, methods in routes:
            values = [_encoded(v) for v in HOSTILE[:-1]] if "{" in template else [""]
            for value in values:
                path = _PATH_PARAMETER.sub(lambda _: value, template)  # noqa: B023
                for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"):
                    _check(path, client.request(method, path))
                if "POST" in methods:
                    form = [("_csrf_token", _csrf(client)), ("password", PASSWORD)]
                    answer = client.post(
                        path,
                        content=_form(form),
                        headers={"content-type": "application/x-www-form-urlencoded"},
                    )
                    _check(path, answer)
    assert tracebacks == []


@pytest.mark.parametrize("signed_in", [False, True], ids=["signed-out", "signed-in"])
def test_every_form_takes_hostile_fields(signed_in: bool) -> None:
    with _client(signed_in=signed_in) as (client, tracebacks):
        forms = [
            _PATH_PARAMETER.sub("abc", path)
            for path, methods in _routes(client)
            if "POST" in methods and not path.startswith(("/api/", "/interactions"))
        ]
        session = client.cookies.get("tfl_session")

        @settings(suppress_health_check=[HealthCheck.too_slow], max_examples=60)
        @given(
            path=st.sampled_from(forms),
            fields=st.lists(st.tuples(st.sampled_from(FIELDS), _text), max_size=6),
            token=st.sampled_from(["good", "spoiled", "none", "repeated"]),
            query=st.one_of(st.just(""), _text.map(lambda v: "?next=" + _encoded(v))),
        )
        def posts(path: str, fields: list[tuple[str, str]], token: str, query: str) -> None:
            if session is not None:  # a form signs out, or signs in again
                client.cookies.set("tfl_session", session)
            good = _csrf(client)
            if token == "good":
                fields = [("_csrf_token", good), *fields]
            elif token == "spoiled":
                fields = [("_csrf_token", good + "\u00e9\x00"), *fields]
            elif token == "repeated":
                fields = [("_csrf_token", "x"), ("_csrf_token", good), *fields]
            answer = client.post(
                path + query,
                content=_form(fields),
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            _check(path, answer)

        posts()
    assert tracebacks == []


def test_every_page_takes_hostile_queries_cookies_and_headers() -> None:
    with _client(signed_in=False) as (client, tracebacks):
        pages = [
            _PATH_PARAMETER.sub("abc", path)
            for path, methods in _routes(client)
            if "GET" in methods
        ]

        @settings(suppress_health_check=[HealthCheck.too_slow], max_examples=80)
        @given(
            path=st.sampled_from(pages),
            name=st.sampled_from(["next", "state", "code", "error", "token"]),
            value=_text,
            cookie=st.sampled_from(
                ["tfl_session", "tfl_oauth", "tfl_link_proposal", "tfl_device", "tfl_csrf"]
            ),
            cookie_value=st.binary(max_size=80),
        )
        def gets(path: str, name: str, value: str, cookie: str, cookie_value: bytes) -> None:
            # A cookie twice (a planted one beside the browser's), bytes that are no UTF-8.
            raw_cookie = cookie.encode() + b"=" + cookie_value.replace(b";", b"")
            one_line = cookie_value.replace(b"\r", b"").replace(b"\n", b"")
            answer = client.get(
                f"{path}?{name}={_encoded(value)}&{name}=again",
                headers={
                    b"cookie": raw_cookie + b"; " + raw_cookie,
                    b"origin": b"http://\xd9\xa1",  # a host in Arabic-Indic digits
                    b"authorization": b"Bearer " + one_line,
                },
            )
            _check(path, answer)

        gets()
    assert tracebacks == []
