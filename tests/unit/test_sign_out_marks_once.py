"""Whatever ends or replaces the browser's session marks the Discord round trips of its
binding cookie's values (``stop_sign_ins_under_way``) once, first in its transaction. Before,
every caller that marked first (a password sign-in or sign-up, a reset, sign out
everywhere, ending this session) marked again in ``sign_out_browser``: a second UPDATE
per request on a browser with a binding cookie, which found nothing left to mark. Through
the web app (Litestar's test client, in-memory adapters, the fake Discord)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import pytest

from adapters.memory import MemoryDatabase
from adapters.memory.store import MemoryPendingLogins
from domain.model import AuthPurpose
from tests.harness import Harness
from tests.unit.test_web import _SIGN_OUTS, _sign_in_or_out
from tests.web_support import Client


@pytest.mark.parametrize("how", ["sign in", "sign up", "password reset", *_SIGN_OUTS])
async def test_the_round_trips_are_marked_once(
    client: Client, h: Harness, db: MemoryDatabase, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how != "sign up":
        await h.sign_up("alice", "alice@example.com", verified=True)
    if how in _SIGN_OUTS:
        await _sign_in_or_out(client, h, "sign in")
    # A Discord sign-in of this browser's under way: its binding value in the cookie.
    started = await client.get("/auth/discord/login", follow_redirects=False)
    assert started.status_code == 302, started.text
    calls: list[int] = []
    mark = MemoryPendingLogins.mark_signed_out

    async def counted(
        self: MemoryPendingLogins, browser_digests: Collection[str], now: datetime
    ) -> int:
        marked = await mark(self, browser_digests, now)
        calls.append(marked)
        return marked

    monkeypatch.setattr(MemoryPendingLogins, "mark_signed_out", counted)
    answer = await _sign_in_or_out(client, h, how)
    assert answer.status_code == 200, answer.text
    assert calls == [1]
    [pending] = [p for p in db.tables.pending_logins.values() if p.purpose is AuthPurpose.LOGIN]
    assert pending.signed_out_at is not None
