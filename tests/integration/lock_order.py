"""What the lock-order tests on Postgres share: a harness whose transactions may wait long, a
browser signed in with Discord, a call held while another transaction comes, and the
transactions Postgres rolled back for another one (a deadlock it broke), noted as they are
translated, since ``retry_on_conflict`` tries them again and a test's outcome alone would
not show them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from adapters.sql import SqlDatabase, repositories
from adapters.sql import errors as sql_errors
from domain import errors
from domain.model import DiscordId
from domain.use_cases import BrowserCookies
from tests.harness import Harness, sql_harness
from tests.integration.postgres import PostgresServer
from tests.integration.waiting import until_it_waits_for_a_lock


def waiting_harness(
    postgres: PostgresServer, **settings: Any
) -> AbstractAsyncContextManager[Harness]:
    """A harness on ``postgres`` whose pool and statements wait as long as a held transaction
    may keep another one waiting on a busy machine (``settings``: the test's own)."""
    return sql_harness(
        postgres.url,
        db_pool_size=10,
        db_pool_timeout=120,
        db_statement_timeout_seconds=120,
        **settings,
    )


def first_call_held(
    monkeypatch: pytest.MonkeyPatch,
    target: Any,
    name: str,
    *,
    before: bool = False,
    when: Callable[..., bool] | None = None,
) -> tuple[asyncio.Event, asyncio.Event]:
    """From now on, the first call of ``target.name`` (a class's method or an object's) that
    ``when`` picks (all, without it) waits until the second event is set, after it returned
    (holding the rows it locked in its transaction), or before it begins with ``before``; the
    first event is set when it waits. Later calls go straight through."""
    call = getattr(target, name)
    waits, go = asyncio.Event(), asyncio.Event()

    async def wait_if_first() -> None:
        if not waits.is_set():
            waits.set()
            await go.wait()

    async def held(*args: Any, **kwargs: Any) -> Any:
        picked = when is None or when(*args, **kwargs)
        if picked and before:
            await wait_if_first()
        done = await call(*args, **kwargs)
        if picked and not before:
            await wait_if_first()
        return done

    monkeypatch.setattr(target, name, held)
    return waits, go


async def crossed(
    database: SqlDatabase,
    held: tuple[asyncio.Event, asyncio.Event],
    first: Awaitable[Any],
    second: Callable[[], Awaitable[Any]],
) -> list[Any]:
    """``first`` runs until its held call waits (``held``: ``first_call_held``'s events),
    holding its rows; then ``second()`` starts, and once its transaction waits for a lock
    the first holds, the first goes on: both their results, in that order (a deadlock
    Postgres broke raises in one of them)."""
    waits, go = held
    one = asyncio.ensure_future(first)
    await waits.wait()
    other = asyncio.ensure_future(second())
    await until_it_waits_for_a_lock(database, other)
    go.set()
    return list(await asyncio.gather(one, other))


async def signed_in_with_discord(h: Harness, discord_id: int) -> tuple[str, str]:
    """A browser signed in with Discord just now (as the emulated user ``discord_id``, made
    beforehand): its session token and binding value."""
    started = await h.container.start_discord_login().execute(next_path=None, browser_tokens=[])
    approval = h.discord.approve(started.authorize_url, DiscordId(discord_id))
    browser = BrowserCookies(bindings=started.browser_tokens)
    done = await h.container.complete_discord_auth().execute(
        state=approval.state, code=approval.code, error=None, browser=browser
    )
    assert done.session_token is not None
    return done.session_token, started.browser_tokens[0]


def contention_noted(monkeypatch: pytest.MonkeyPatch) -> list[errors.DomainError]:
    """The ``StorageContention`` errors the SQL repositories raise from now on (in the test),
    in a list that fills as they come."""
    contended: list[errors.DomainError] = []
    translate = sql_errors.translate

    def noted(exc: Exception) -> errors.DomainError:
        translated = translate(exc)
        if isinstance(translated, errors.StorageContention):
            contended.append(translated)
        return translated

    monkeypatch.setattr(repositories, "translate", noted)
    return contended
