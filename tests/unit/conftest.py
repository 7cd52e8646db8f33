from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from litestar.testing import AsyncTestClient

from adapters.memory import MemoryDatabase
from entrypoints.container import Container, build_container
from entrypoints.web import create_app
from tests.fakes.role_connections import role_harness
from tests.harness import Harness, make_settings
from tests.litestar_signatures import keep_parses
from tests.web_support import Client

keep_parses()  # each handler's signature parsed once, not once an app (see there)

_DEFAULT_SETTINGS = make_settings()
_spare: list[Container] = []


@pytest.fixture
def h() -> Iterator[Harness]:
    """A harness on the default settings. Its container is reused from test to test, emptied
    in between: every override undone and every singleton dropped, so each test starts with
    a new in-memory database, clock, caches and fakes (``Harness.build`` overrides those
    anew). Building a container deep-copies its ~150 providers; a test that needs its own
    settings still builds its own."""
    container = _spare.pop() if _spare else build_container(_DEFAULT_SETTINGS)
    harness = Harness.build(container)
    yield harness
    container.unwire()
    container.reset_override()  # also the settings given at construction: given again
    container.override_providers(settings=_DEFAULT_SETTINGS)
    container.reset_singletons()
    _spare.append(container)


@pytest.fixture
def r() -> Iterator[Harness]:
    """A harness with Linked Roles on (``role_harness``: its keys, fakes and settings)."""
    h = role_harness()
    yield h
    h.container.unwire()


@pytest.fixture
def db(h: Harness) -> MemoryDatabase:
    database: MemoryDatabase = h.container.memory_db()
    return database


@pytest.fixture
async def client(h: Harness) -> AsyncIterator[Client]:
    """A browser on the web app of ``h`` (a module may give its own, on another harness)."""
    async with AsyncTestClient(app=create_app(h.container)) as test_client:
        yield test_client
