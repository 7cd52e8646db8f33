"""Browser-like helpers for driving the web app in tests."""

from __future__ import annotations

import re
from typing import Any, TypeAlias
from urllib.parse import parse_qs, urlsplit

from litestar import Litestar
from litestar.testing import AsyncTestClient

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
