"""A password change beside a sign-out, on Postgres, both ending the same two sessions of one
account: the sign-out's browser holds a copy of the changing browser's session cookie and of
the binding cookie of the other session's Discord sign-in. The change locked the account's
other sessions (``remove_for_account``, the digests' order) and then renewed its own; the
sign-out ends its cookie's session and the Discord sign-in's in the digests' order. With the
changing browser's own digest first, each held a row the other waited for: a deadlock, which
Postgres broke by rolling one back (the sign-out's a 503). The change now locks its own
session with the others, in their order: the sign-out waits for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.sql import SqlDatabase
from adapters.sql.repositories import SqlSessions
from domain.use_cases import BrowserCookies
from tests.harness import PASSWORD, Harness
from tests.integration.lock_order import (
    contention_noted,
    crossed,
    first_call_held,
    signed_in_with_discord,
    waiting_harness,
)
from tests.integration.postgres import PostgresServer


@pytest.fixture
async def h(postgres: PostgresServer, pg_db: SqlDatabase) -> AsyncIterator[Harness]:
    async with waiting_harness(postgres) as harness:
        yield harness


async def test_a_password_change_beside_a_sign_out_ending_the_same_sessions(
    h: Harness, monkeypatch: pytest.MonkeyPatch, pg_db: SqlDatabase
) -> None:
    h.discord_user(7921, username="dora", email="dora@example.com")
    tokens = h.container.tokens()
    while True:  # two sessions of one account, the changing browser's digest first
        own, _ = await signed_in_with_discord(h, 7921)
        other, other_binding = await signed_in_with_discord(h, 7921)
        if tokens.digest(own) < tokens.digest(other):
            break
    # A copy of the changing browser's session cookie, and of the other's binding cookie.
    copied = BrowserCookies(session_token=own, bindings=(other_binding,))

    contended = contention_noted(monkeypatch)
    # The change, the other session ended: it waits there.
    held = first_call_held(monkeypatch, SqlSessions, "remove_for_account")
    change = h.container.set_password().execute(
        session_token=own, new_password=PASSWORD, current_password=None
    )
    # A deadlock: the sign-out's a 503.
    await crossed(pg_db, held, change, lambda: h.container.sign_out().execute(copied))
    assert contended == []  # nor was either rolled back
