"""Browser-like helpers for driving the web app in tests."""

from __future__ import annotations

import re
from typing import Any, TypeAlias
from urllib.parse import parse_qs, urlsplit

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.harness import PASSWORD
from tests.servers import serve_here

Client: TypeAlias = AsyncTestClient[Litestar]

_CSRF = re.compile(r'name="_csrf_token" value="([^"]+)"')


def csrf_token(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def post_form(client: Client, page: str, action: str, data: dict[str, str]) -> Any:
    """Load ``page`` (for its CSRF token), then submit ``data`` to ``action``."""
    shown = await client.get(page)
    return await client.post(action, data={**data, "_csrf_token": csrf_token(shown.text)})


async def sign_up(client: Client, username: str = "alice", next_path: str = "") -> None:
    """Sign up through the form, as ``username`` at ``username@example.com`` (and ``next_path``
    asked for, when given); it lands signed in."""
    page = f"/signup?next={next_path}" if next_path else "/signup"
    data = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    if next_path:
        data["next"] = next_path
    answer = await post_form(client, page, "/signup", data)
    assert answer.status_code == 200, answer.text  # followed the redirect


async def double_click(client: Client, action: str, form: dict[str, str]) -> tuple[Any, Any]:
    """A form sent twice at once (a double click): the browser leaves the first request for
    the second, so the first answer's cookies never reach it and the second goes with the
    cookies both left with. Both answers (not followed)."""
    before = dict(client.cookies)
    first = await client.post(action, data=form, follow_redirects=False)
    client.cookies.clear()  # the browser never received the first answer
    for name, value in before.items():
        client.cookies.set(name, value)
    second = await client.post(action, data=form, follow_redirects=False)
    return first, second


# The /48 the site-budget tests spread over, and one /64 in another /48.
SITE = "2001:db8:5"
ELSEWHERE = "2001:db8:6:1::1"


async def sign_in_starts(app: Litestar, forwarded_for: list[str]) -> list[int]:
    """``GET /auth/discord/login`` (a Discord sign-in's start, which the sign-in budget
    counts) once from each of ``forwarded_for``, the app behind a proxy at 127.0.0.1: the
    statuses."""
    statuses = []
    async with serve_here(app) as url, httpx.AsyncClient(base_url=url) as client:
        for address in forwarded_for:
            client.cookies.clear()
            answer = await client.get("/auth/discord/login", headers={"x-forwarded-for": address})
            statuses.append(answer.status_code)
    return statuses


async def check_site_budget(app: Litestar) -> None:
    """With a budget of 1 a minute per client, the /48 ``SITE``'s first 64 /64s each start a
    sign-in, its 65th does not (the /48's 64), a /64 past its own budget spends none of its
    /48's, and another /48 and an IPv4 client each keep their own."""
    site = [f"{SITE}:{n:x}::1" for n in range(64)]
    statuses = await sign_in_starts(
        app,
        [*site, f"{SITE}:ffff::1", f"{SITE}:0::2", ELSEWHERE, "203.0.113.5", "::ffff:203.0.113.6"],
    )
    assert statuses == [302] * 64 + [429, 429, 302, 302, 302]
