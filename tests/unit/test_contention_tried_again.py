"""A transaction the database rolled back for another one (Postgres breaking a deadlock, a
serialization failure: ``StorageContention``) is tried again in place, as one that lost a
uniqueness race (``Conflict``): nothing of it was written. A Discord sign-in's load has spent
its state and Discord's code by then, so its 503 "try again" could not be tried again: its
callback loaded again said that signing in did not go through, and the person started over."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters.memory.store import MemoryPendingLogins
from domain import errors
from domain.model import DiscordId
from domain.use_cases import AuthCompleted, BrowserCookies
from tests.harness import Harness


def _rolled_back_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first load's first hold of its round trip is rolled back by the database."""
    lock, calls = MemoryPendingLogins.lock, [0]

    async def lock_once(repo: MemoryPendingLogins, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise errors.StorageContention()
        return await lock(repo, *args, **kwargs)

    monkeypatch.setattr(MemoryPendingLogins, "lock", lock_once)
    return calls


async def _approved_load(
    h: Harness, discord_id: int, email: str
) -> Callable[[], Awaitable[AuthCompleted]]:
    """A "Sign in with Discord" of a new person, approved at Discord: its callback's load."""
    h.discord_user(discord_id, email=email)
    started = await h.container.start_discord_login().execute(next_path=None, browser_tokens=[])
    approval = h.discord.approve(started.authorize_url, DiscordId(discord_id))
    return lambda: h.container.complete_discord_auth().execute(
        state=approval.state,
        code=approval.code,
        error=None,
        browser=BrowserCookies(bindings=started.browser_tokens),
    )


async def test_a_discord_sign_in_rolled_back_for_another_transaction_signs_in(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = await _approved_load(h, 7301, "ola@example.com")
    calls = _rolled_back_once(monkeypatch)
    done = await load()
    assert done.session_token is not None
    assert calls[0] == 2  # tried again once


async def test_contention_is_tried_again_a_bounded_number_of_times(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = await _approved_load(h, 7302, "pia@example.com")

    async def always(repo: MemoryPendingLogins, *args: Any, **kwargs: Any) -> Any:
        raise errors.StorageContention()

    monkeypatch.setattr(MemoryPendingLogins, "lock", always)
    with pytest.raises(errors.StorageContention):
        await load()
