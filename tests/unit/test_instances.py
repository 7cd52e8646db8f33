"""One instance among several: readiness with deadlines, the interaction replay guard, client
addresses from trusted proxies only, per-key API limits, and `serve --workers` refusing what
cannot be shared (the Redis side is in tests/integration/test_shared_state_redis.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from litestar.testing import AsyncTestClient

from adapters.shared_state import (
    MemoryReplayGuard,
    MemoryWindowCounter,
    SharedState,
    SweptMemoryStore,
)
from adapters.sql.instances import Instance
from domain.model import AuditKind
from entrypoints.bot.runtime import _replay_key
from entrypoints.cli import cli
from entrypoints.container import build_container
from entrypoints.health import Readiness
from entrypoints.instances import gateway_kind, sharing_problems
from entrypoints.settings import SettingsError, ShardPlan, load_settings
from entrypoints.web import create_app
from entrypoints.web.rate_limit import client_budget, site_budget
from tests.harness import TEST_SECRET_KEY, Harness, make_settings
from tests.servers import serve_here
from tests.web_support import check_site_budget, csrf_token


async def test_readyz_lists_its_checks(h: Harness) -> None:
    async with AsyncTestClient(app=create_app(h.container)) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "checks": {"database": "ok"}}


async def test_an_unreachable_redis_leaves_the_instance_ready_and_says_it_is_degraded() -> None:
    """Every instance shares the one Redis, and serves on without it (limits count in each
    instance's memory): a 503 for it took every instance out of the orchestrator's service
    at once, the whole service down for what costs no request."""
    with socket.socket() as taken:  # a port nothing answers on once closed
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0")
    app = create_app(build_container(settings))
    async with AsyncTestClient(app=app) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] not in ("ok", ""), body


async def test_a_redis_the_readiness_probe_cannot_use_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by helper-187's review: `serve` started with a wrong Redis password (or host)
    logged nothing about it, though `/readyz` said "unreachable": the warning the README
    promises ("each process logs one warning") came only with the first request that used
    Redis, so an operator reading the log at start saw nothing wrong. The probe that finds
    it unreachable now says so, once per outage (never its URL: it holds the password)."""
    with socket.socket() as taken:  # a port nothing answers on once closed
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
    settings = make_settings(redis_url=f"redis://:hunter2-secret@127.0.0.1:{port}/0")
    caplog.set_level(logging.WARNING, logger="taskflow_link.redis")
    app = create_app(build_container(settings))
    async with AsyncTestClient(app=app) as client:
        for _ in range(2):
            answer = await client.get("/readyz")
            assert answer.json()["checks"]["redis"] == "unreachable"
    said = [r.getMessage() for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    assert len(said) == 1, said
    assert "hunter2" not in caplog.text


async def test_readyz_says_the_database_is_unreachable_not_that_its_schema_failed(
    tmp_path: Path,
) -> None:
    """A database that cannot be reached has no schema to read: ``"schema": "failed"`` sent
    operators to look at the migrations of a database that was down."""
    nowhere = tmp_path / "no such directory" / "taskflow.db"
    settings = make_settings(storage="sql", database_url=f"sqlite+aiosqlite:///{nowhere}")
    app = create_app(build_container(settings))
    async with AsyncTestClient(app=app) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {
        "status": "not ready",
        "checks": {"database": "unreachable", "schema": "unknown: the database is not ready"},
    }


async def test_a_check_that_hangs_makes_the_instance_not_ready_without_holding_the_probe() -> None:
    started = 0
    never = asyncio.Event()

    async def hung() -> str | None:
        nonlocal started
        started += 1
        await never.wait()
        return None

    async def fine() -> str | None:
        return None

    async def broken() -> str | None:
        raise RuntimeError("boom")

    readiness = Readiness({"database": hung, "redis": fine, "schema": broken}, timeout=0.05)
    for _ in range(3):
        ready, checks = await readiness.report()
        assert not ready
        assert checks == {
            "database": "no answer within 0.05 s",
            "redis": "ok",
            "schema": "failed: RuntimeError",
        }
    assert started == 1  # a hung check is awaited again, never piled up
    await readiness.close()


async def test_a_check_that_raises_says_what_kind_of_failure_never_its_words() -> None:
    """A check that raised said a bare "failed": the operator could not tell a permission
    refused from a bug. It names the failure's kind (the driver's own exception, below the
    wrappers, and its SQLSTATE), never its message: a driver's words may carry the database
    URL or a user's name."""

    class InsufficientPrivilegeError(Exception):  # the driver's (asyncpg's)
        sqlstate = "42501"

    class ProgrammingError(Exception):  # the DB-API adapter's, the driver's its cause
        pass

    class DBAPIError(Exception):  # SQLAlchemy's, the adapter's as ``orig`` and cause
        def __init__(self, message: str, orig: BaseException) -> None:
            super().__init__(message)
            self.orig = orig

    async def refused() -> str | None:
        adapted = ProgrammingError("permission denied for table alembic_version")
        adapted.__cause__ = InsufficientPrivilegeError("permission denied")
        raise DBAPIError("postgresql://app:hunter2@db/app said no", adapted) from adapted

    async def bug() -> str | None:
        raise ValueError("sqlite:////secret/place.db")

    readiness = Readiness({"schema": refused, "other": bug}, timeout=5)
    ready, checks = await readiness.report()
    assert not ready
    assert checks == {
        "schema": "failed: InsufficientPrivilegeError (SQLSTATE 42501)",
        "other": "failed: ValueError",
    }
    await readiness.close()


async def test_readyz_answers_503_with_the_check_that_failed(h: Harness) -> None:
    async def unreachable() -> bool:
        return False

    h.container.memory_db().ping = unreachable  # type: ignore[method-assign]
    async with AsyncTestClient(app=create_app(h.container)) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"status": "not ready", "checks": {"database": "unreachable"}}


async def test_the_replay_guard_forgets_after_its_ttl() -> None:
    now = [1000.0]
    guard = MemoryReplayGuard(clock=lambda: now[0])
    assert await guard.first_time("interaction:1", 600)
    assert not await guard.first_time("interaction:1", 600)
    now[0] += 599
    assert not await guard.first_time("interaction:1", 600)
    now[0] += 2
    assert await guard.first_time("interaction:1", 600)


async def test_the_replay_guard_at_its_cap_refuses_what_it_may_have_forgotten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At its cap the guard forgets its oldest ids while their timestamps may still be fresh:
    such an id replayed then was taken as new. It now refuses any interaction not sent after
    the newest timestamp it forgot (and says so), so the cap never reopens a replay."""
    now = [1000.0]
    guard = MemoryReplayGuard(clock=lambda: now[0], max_entries=2)
    assert await guard.first_time("interaction:1", 600, sent_at=100)
    assert await guard.first_time("interaction:2", 600, sent_at=101)
    with caplog.at_level(logging.WARNING, logger="taskflow_link"):
        assert await guard.first_time("interaction:3", 600, sent_at=102)  # forgets 1
        assert not await guard.first_time("interaction:1", 600, sent_at=100)  # its replay
        # One sent as late as the one forgotten may be one it no longer knows: refused too.
        assert not await guard.first_time("interaction:9", 600, sent_at=100)
    assert "sent at or before 100" in caplog.text
    assert await guard.first_time("interaction:4", 600, sent_at=103)  # newer: as before
    assert not await guard.first_time("interaction:3", 600, sent_at=102)  # still held
    # Without a timestamp (a gateway claim), only what it holds counts.
    assert await guard.first_time("gateway:1", 600)


def test_an_interaction_is_known_by_its_id_whatever_its_signature() -> None:
    body = json.dumps({"id": "1300000000000000001", "type": 2}).encode()
    assert _replay_key(body, "aa" * 64) == _replay_key(body, "bb" * 64)
    assert _replay_key(body, "aa" * 64) == "interaction:1300000000000000001"
    # Without a usable id (never from Discord): the signature.
    for odd in (b"not json", b"[1]", json.dumps({"id": "x" * 40}).encode()):
        assert _replay_key(odd, "AA" * 64) == "signature:" + "aa" * 64


def test_without_redis_state_stays_in_the_process() -> None:
    shared = SharedState(None)
    assert not shared.shared
    assert shared.store("a") is shared.store("a")
    assert shared.store("a") is not shared.store("b")
    assert isinstance(shared.replay_guard, MemoryReplayGuard)


# -- client addresses behind a proxy ---------------------------------------------------------


async def _failed_sign_ins(
    h: Harness, forwarded_for: list[str], sock: socket.socket | None = None
) -> list[int]:
    """Wrong passwords for alice, each request said to come from ``forwarded_for[i]``."""
    h.alice = (await h.sign_up("alice", "alice@example.com")).account  # type: ignore[attr-defined]
    statuses = []
    app = create_app(h.container, rate_limit_per_minute=2)
    async with serve_here(app, sock) as url, httpx.AsyncClient(base_url=url) as client:
        token = csrf_token((await client.get("/signin")).text)
        for address in forwarded_for:
            answer = await client.post(
                "/signin",
                data={"login": "alice", "password": "wrong", "_csrf_token": token},
                headers={"x-forwarded-for": address},
            )
            statuses.append(answer.status_code)
    return statuses


async def _audited_clients(h: Harness) -> list[str]:
    async with h.uow() as uow:
        events = await uow.audit.for_account(h.alice.id)  # type: ignore[attr-defined]
    return [e.detail["client"] for e in events if e.kind is AuditKind.SIGN_IN_FAILED]


@pytest.fixture
def behind_proxy() -> Harness:
    return Harness.build(build_container(make_settings(forwarded_allow_ips="127.0.0.1")))


async def test_a_trusted_proxy_names_the_client(behind_proxy: Harness) -> None:
    h = behind_proxy
    statuses = await _failed_sign_ins(
        h, ["203.0.113.1", "203.0.113.1", "203.0.113.1", "203.0.113.2"]
    )
    # Each client has its own budget (2 a minute here): the third try of the first is refused,
    # the second client is not.
    assert statuses == [401, 401, 429, 401]
    assert set(await _audited_clients(h)) == {"203.0.113.1", "203.0.113.2"}


async def test_an_ipv6_client_spends_its_64_networks_budget(behind_proxy: Harness) -> None:
    """An attacker's review: each IPv6 address had a budget of its own, and whoever holds a
    /64 (the least anyone is given) holds 2^64 addresses. An IPv4-mapped address is the IPv4
    client it maps. The audit trail still names each address."""
    h = behind_proxy
    statuses = await _failed_sign_ins(
        h,
        [
            "2001:db8:1:2::1",
            "2001:db8:1:2:ffff:ffff:ffff:fffe",
            "2001:db8:1:2::3",  # the same /64: its third try
            "2001:db8:1:3::1",  # the next /64: a budget of its own
            "203.0.113.9",
            "::ffff:203.0.113.9",
            "::ffff:203.0.113.9",  # 203.0.113.9's third try
        ],
    )
    assert statuses == [401, 401, 429, 401, 401, 401, 429]
    assert set(await _audited_clients(h)) == {
        "2001:db8:1:2::1",
        "2001:db8:1:2:ffff:ffff:ffff:fffe",
        "2001:db8:1:3::1",
        "203.0.113.9",
        "::ffff:203.0.113.9",
    }


async def test_a_proxy_named_by_its_network_with_host_bits_is_trusted() -> None:
    """An attacker's review: the setting took ``127.0.0.5/8`` (as ``127.0.0.0/8``), uvicorn's
    middleware did not (it reads networks strictly) and trusted no proxy, silently: every
    client spent the proxy's one budget, so one person's wrong passwords locked everyone
    out of signing in."""
    h = Harness.build(build_container(make_settings(forwarded_allow_ips="127.0.0.5/8")))
    statuses = await _failed_sign_ins(h, ["203.0.113.1", "203.0.113.1", "203.0.113.2"])
    assert statuses == [401, 401, 401]  # the second client's budget is its own
    assert set(await _audited_clients(h)) == {"203.0.113.1", "203.0.113.2"}


def _dual_stack_loopback() -> socket.socket:
    """A socket as a server listening on ``[::]`` has (IPv4 peers at ``::ffff:a.b.c.d``),
    bound to loopback only."""
    sock = socket.socket(socket.AF_INET6)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::ffff:127.0.0.1", 0))
    return sock


@pytest.mark.parametrize("allow", ["127.0.0.1", "::ffff:127.0.0.1"])
async def test_a_proxy_is_trusted_at_its_ipv4_mapped_address(allow: str) -> None:
    """An attacker's review: behind a server listening on ``[::]`` (gunicorn's
    ``-b [::]:8000``, granian's ``--host ::``), the proxy named ``127.0.0.1`` connects from
    ``::ffff:127.0.0.1``, which uvicorn's middleware did not match: every client spent the
    proxy's budget (one person's wrong passwords locked everyone out). So for a hop a proxy
    writes that way, and for a proxy named in that form reaching an IPv4 socket."""
    h = Harness.build(build_container(make_settings(forwarded_allow_ips=allow)))
    statuses = await _failed_sign_ins(
        h,
        ["203.0.113.1", "203.0.113.1", "203.0.113.2", "203.0.113.3, ::ffff:127.0.0.1"],
        _dual_stack_loopback(),
    )
    assert statuses == [401, 401, 401, 401]  # each client's own budget
    assert set(await _audited_clients(h)) == {"203.0.113.1", "203.0.113.2", "203.0.113.3"}
    other = Harness.build(build_container(make_settings(forwarded_allow_ips=allow)))
    ipv4 = await _failed_sign_ins(other, ["203.0.113.1", "203.0.113.1", "203.0.113.2"])
    assert ipv4 == [401, 401, 401]


async def test_behind_any_proxy_the_client_is_the_address_the_proxy_wrote(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An attacker's review: with ``*``, uvicorn's middleware took the first address of
    X-Forwarded-For, which a proxy that appends the peer to what the client sent (nginx's
    ``$proxy_add_x_forwarded_for``, HAProxy, cloud load balancers) leaves as the client
    wrote it: a made-up address each try was a fresh budget each try, and a stranger's
    address spent theirs. The client is now the last address, the one the proxy wrote."""
    h = Harness.build(build_container(make_settings(forwarded_allow_ips="*")))
    alice = (await h.sign_up("alice", "alice@example.com")).account
    app = create_app(h.container, rate_limit_per_minute=2)
    caplog.set_level(logging.INFO, logger="taskflow_link.access")
    statuses = []
    async with serve_here(app) as url, httpx.AsyncClient(base_url=url) as client:
        token = csrf_token((await client.get("/signin")).text)
        for written in [
            [("x-forwarded-for", "198.51.100.1, 203.0.113.1")],
            [("x-forwarded-for", "198.51.100.2,203.0.113.1")],
            # The client's own header line, and the proxy's after it.
            [("x-forwarded-for", "198.51.100.3"), ("x-forwarded-for", "203.0.113.1")],
            [("x-forwarded-for", "203.0.113.1, 203.0.113.2")],  # another client
        ]:
            answer = await client.post(
                "/signin",
                data={"login": "alice", "password": "wrong", "_csrf_token": token},
                headers=written,
            )
            statuses.append(answer.status_code)
    assert statuses == [401, 401, 429, 401]
    async with h.uow() as uow:
        events = await uow.audit.for_account(alice.id)
    audited = {e.detail["client"] for e in events if e.kind is AuditKind.SIGN_IN_FAILED}
    assert audited == {"203.0.113.1", "203.0.113.2"}
    logged = {
        getattr(r, "client", None) for r in caplog.records if r.name == "taskflow_link.access"
    }
    assert logged == {"127.0.0.1", "203.0.113.1", "203.0.113.2"}  # the first GET: no header


@pytest.mark.parametrize("allow", ["127.0.0.1", "*"])
async def test_requests_no_route_answers_name_the_client_a_proxy_forwards(
    allow: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An attacker's review: the address a trusted proxy forwards was read by one of the
    app's middleware, which Litestar runs only for a request it routed: a path nothing
    answers (404) or a method a path does not take (405), what a scanner sends, was logged
    with the proxy's address, and a tool that reads the access log to stop a scanner (as
    fail2ban does) would stop the proxy, everyone's way in."""
    h = Harness.build(build_container(make_settings(forwarded_allow_ips=allow)))
    app = create_app(h.container)
    caplog.set_level(logging.INFO, logger="taskflow_link.access")
    statuses = []
    async with serve_here(app) as url, httpx.AsyncClient(base_url=url) as client:
        for method, path in [("GET", "/wp-login.php"), ("DELETE", "/signin"), ("GET", "/signin")]:
            answer = await client.request(
                method, path, headers={"x-forwarded-for": "198.51.100.1, 203.0.113.7"}
            )
            statuses.append(answer.status_code)
    assert statuses == [404, 405, 200]
    logged = [
        getattr(r, "client", None) for r in caplog.records if r.name == "taskflow_link.access"
    ]
    assert logged == ["203.0.113.7"] * 3


@pytest.mark.parametrize("allow", ["0.0.0.0/0", "::/0", "::ffff:0:0/96", "0.0.0.0/0, 10.0.0.0/8"])
async def test_trusting_every_address_is_trusting_everyone(allow: str) -> None:
    """An attacker's review: ``0.0.0.0/0`` (or ``::/0``, or every IPv4 address as IPv6 writes
    it) names every IPv4 peer a proxy, as ``*`` does, but went through uvicorn's walk, which
    skips the addresses it trusts and, trusting them all, took the first: the client's own
    words behind a proxy that appends, so a made-up address each try was a fresh sign-in
    budget each try, as it was with ``*`` before. The client is the last address, as
    with ``*``."""
    h = Harness.build(build_container(make_settings(forwarded_allow_ips=allow)))
    statuses = await _failed_sign_ins(
        h,
        [
            "198.51.100.1, 203.0.113.1",
            "198.51.100.2, 203.0.113.1",
            "198.51.100.3, 203.0.113.1",
            "203.0.113.1, 203.0.113.2",  # another client
        ],
    )
    assert statuses == [401, 401, 429, 401]
    assert set(await _audited_clients(h)) == {"203.0.113.1", "203.0.113.2"}


@pytest.mark.parametrize(
    ("host", "budget"),
    [
        ("203.0.113.9", "client:203.0.113.9"),
        ("203.0.113.9:51234", "client:203.0.113.9"),  # a proxy that adds the port
        ("2001:db8:1:2::1", "client:2001:db8:1:2::/64"),
        ("[2001:db8:1:2::1]:443", "client:2001:db8:1:2::/64"),
        ("[2001:db8:1:2::1]", "client:2001:db8:1:2::/64"),
        # An IPv4 client carried in IPv6: its own, not the translator's /64's.
        ("::ffff:203.0.113.9", "client:203.0.113.9"),
        ("64:ff9b::cb00:7109", "client:203.0.113.9"),  # NAT64
        ("2002:cb00:7109:5::1", "client:203.0.113.9"),  # 6to4
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "client:192.0.2.45"),  # Teredo
        ("::1", "client:::1"),  # this machine
        ("fe80::1:2", "client:fe80::/64"),  # its link: any address there is free to take
        ("testclient", "client:testclient"),  # not an address
    ],
)
def test_a_clients_budget_is_named_by_what_its_address_says(host: str, budget: str) -> None:
    """An attacker's review: every IPv4 client behind a NAT64 translator shared its /64's
    budget, and a proxy that writes a port gave each port a budget."""
    request = SimpleNamespace(client=SimpleNamespace(host=host))
    assert client_budget(request) == budget  # type: ignore[arg-type]
    # Only a /64's budget has a /48's beside it.
    if budget.endswith("/64"):
        assert site_budget(budget) in ("client:2001:db8:1::/48", "client:fe80::/48")
    else:
        assert site_budget(budget) is None


async def test_x_forwarded_for_is_ignored_from_anyone_else(h: Harness) -> None:
    statuses = await _failed_sign_ins(h, ["203.0.113.1", "203.0.113.2", "203.0.113.3"])
    assert statuses == [401, 401, 429]  # one budget: the connection's peer
    assert set(await _audited_clients(h)) == {"127.0.0.1"}


@pytest.fixture
def shifted(monkeypatch: pytest.MonkeyPatch) -> list[timedelta]:
    """How far the memory stores' expiry clock is moved on (Litestar reads ``datetime.now``)."""
    from litestar.stores import base

    shift = [timedelta(0)]

    class Shifted(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + shift[0]

    monkeypatch.setattr(base, "datetime", Shifted)
    return shift


async def test_the_memory_stores_drop_expired_entries(shifted: list[timedelta]) -> None:
    """Litestar's memory store forgets an expired entry only when its key is read again: a
    count kept per login tried (or per client address) stayed for good. Each write now
    sweeps, at most once a minute."""
    now = [100.0]
    store = SweptMemoryStore(sweep_every=60, clock=lambda: now[0])
    for n in range(2500):
        await store.set(f"login-{n}", b"1", expires_in=30)
    await store.set("kept", b"1")
    shifted[0] = timedelta(seconds=31)  # all but one expired...
    await store.set("new", b"1", expires_in=30)
    assert len(store) == 2502  # ...and still held: the last sweep was under a minute ago
    now[0] += 60
    await store.set("newer", b"1", expires_in=30)
    assert len(store) == 3  # kept, new, newer
    assert await store.get("kept") == b"1"
    assert await store.get("new") == b"1"
    assert await store.get("login-0") is None
    assert isinstance(SharedState(None).store("password-attempts"), SweptMemoryStore)


async def test_an_expired_entry_does_not_exist(shifted: list[timedelta]) -> None:
    store = SweptMemoryStore()
    await store.set("short", b"1", expires_in=30)
    await store.set("kept", b"1")
    assert await store.exists("short")
    shifted[0] = timedelta(seconds=31)
    assert not await store.exists("short")  # Litestar's own said yes until it was read
    assert await store.exists("kept")


async def test_the_memory_counter_counts_hits_in_fixed_windows() -> None:
    now = [100.0]
    counter = MemoryWindowCounter(clock=lambda: now[0])
    assert [await counter.hit("a", 60) for _ in range(3)] == [(1, 60), (2, 60), (3, 60)]
    assert await counter.hit("b", 60) == (1, 60)  # each key its own window
    now[0] += 59.5
    assert await counter.hit("a", 60) == (4, 1)  # the window ends when it ends
    now[0] += 0.5
    assert await counter.hit("a", 60) == (1, 60)  # a new one
    assert len(counter) == 1  # b's ended window was swept (at most once a minute)
    now[0] += 30
    assert await counter.hit("c", 60) == (1, 60)
    now[0] += 31
    assert await counter.hit("c", 60) == (2, 29)
    assert len(counter) == 1  # a's swept, c's kept
    hits = await asyncio.gather(*(counter.hit("d", 60) for _ in range(20)))
    assert sorted(n for n, _ in hits) == list(range(1, 21))  # each counted once


async def test_while_redis_is_down_one_call_at_a_time_tries_it_again() -> None:
    """An attacker's review: against a Redis that takes connections but never answers (frozen,
    swapping, a stuck proxy), every call in the window after each retry waited out the
    timeout on a connection of its own (a hundred at once, every two seconds). Now one call
    tries it; the others answer from memory meanwhile."""
    connections = 0
    hold = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await hold.wait()  # never answers
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    shared = SharedState(f"redis://127.0.0.1:{port}/0", timeout=0.5, retry_after=0)
    counter = shared.counter("auth-rate-limit")
    try:
        assert await counter.hit("client", 60) == (1, 60)  # timed out: from memory
        assert shared.health is not None
        assert shared.health.down
        # Its own retrier (started at the failure) tries Redis too, as one of the "one at a
        # time": within the 0.5 s timeout below it could be the one trying when the test
        # looks, and the calls' turn would not be free. This test is about the calls.
        await shared.health.stop()
        tried = connections
        hits = await asyncio.gather(*(counter.hit("client", 60) for _ in range(50)))
        # Every call answered, from memory (each counted once); retries are always due here
        # (retry_after=0), and still one call at a time tried Redis.
        assert sorted(n for n, _ in hits) == list(range(2, 52))
        assert connections - tried <= 1
        probe = asyncio.create_task(counter.hit("client", 60))
        await asyncio.sleep(0)  # the probe is under way...
        assert not shared.health.worth_trying()  # ...so no other call tries
        probe.cancel()  # a request that gave up: the next call may try again
        with contextlib.suppress(asyncio.CancelledError):
            await probe
        assert shared.health.worth_trying()
    finally:
        hold.set()
        await shared.close()
        server.close()
        await server.wait_closed()


# -- per-key API limits -----------------------------------------------------------------------


@pytest.fixture
def frozen_rate_limit_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """The rate limits' windows (in memory) read ``window_clock``; one fixed second for the
    whole test, until the test moves it on."""
    from adapters import shared_state

    now = [1_000.0]
    monkeypatch.setattr(shared_state, "window_clock", lambda: now[0])
    return lambda seconds: now.__setitem__(0, now[0] + seconds)


async def test_each_api_key_has_its_own_budget(
    frozen_rate_limit_clock: Callable[[float], None],
) -> None:
    h = Harness.build(build_container(make_settings(api_rate_limit_per_second=2)))
    first = (await h.container.create_api_key().execute("first")).token
    second = (await h.container.create_api_key().execute("second")).token

    async def get(key: str) -> Any:
        return await client.get("/api/v1/links/123", headers={"Authorization": f"Bearer {key}"})

    async with AsyncTestClient(app=create_app(h.container)) as client:
        # Its own budget from the first request: the key's seal says this service issued it.
        assert [(await get(first)).status_code for _ in range(2)] == [404, 404]
        refused = await get(first)
        assert refused.status_code == 429
        assert "Too many requests with this API key" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["ratelimit-limit"] == "2"
        assert (await get(second)).status_code == 404  # its own budget
        assert (await client.get("/healthz")).status_code == 200  # not an API route
        frozen_rate_limit_clock(1.5)  # the next second
        assert (await get(first)).status_code == 404


async def test_requests_on_different_budgets_do_not_wait_for_each_other() -> None:
    """Litestar's rate limiter counted under one lock per route and process: with Redis behind
    it, every request waited for every other's round trips, whatever its key, so one client's
    flood held up every key (an attacker's review). Here each hit of the counter waits until
    another one is under way at the same time (or gives up after a minute): under one lock,
    none ever would be."""
    h = Harness.build(build_container(make_settings(api_rate_limit_per_second=100)))
    keys = [(await h.container.create_api_key().execute(f"svc{n}")).token for n in range(4)]
    counter = h.container.shared_state().counter("api-rate-limit")
    real_hit = counter.hit
    under_way = [0, 0]  # now, most at once
    together = asyncio.Event()

    async def hit(key: str, seconds: int) -> tuple[int, int]:
        under_way[0] += 1
        under_way[1] = max(under_way)
        if under_way[0] >= 2:
            together.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(together.wait(), timeout=60)
            return await real_hit(key, seconds)
        finally:
            under_way[0] -= 1

    counter.hit = hit  # type: ignore[method-assign]
    async with (
        serve_here(create_app(h.container)) as url,
        httpx.AsyncClient(base_url=url, timeout=120) as client,
    ):
        answers = await asyncio.gather(
            *(
                client.get("/api/v1/links/123", headers={"Authorization": f"Bearer {key}"})
                for key in keys
            )
        )
    assert [a.status_code for a in answers] == [404] * len(keys)
    assert under_way[1] >= 2


def _counted_key_reads(h: Harness, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The digests the API key check reads from the database, from now on."""
    directory = h.container.directory()
    read = directory.api_key_by_digest
    reads: list[str] = []

    async def counted(digest: str) -> Any:
        reads.append(digest)
        return await read(digest)

    monkeypatch.setattr(directory, "api_key_by_digest", counted)
    return reads


async def test_made_up_tokens_spend_the_clients_budget(
    frozen_rate_limit_clock: Callable[[float], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token with no valid seal (invented, or forged) has no budget of its own: each new
    made-up token would otherwise start a fresh count. It spends its client's, and the limit
    counts it before the database is asked: beyond the budget, no read. A sealed key is
    known without a read, so made-up tokens from the same address cannot keep it refused
    (they could while the limit had to read a key before it got its own budget: an attacker's
    review)."""
    h = Harness.build(build_container(make_settings(api_rate_limit_per_second=2)))
    key = await h.container.create_api_key().execute("bot")
    revoked = await h.container.create_api_key().execute("old")
    await h.container.revoke_api_key().execute("old")
    reads = _counted_key_reads(h, monkeypatch)

    async def get(token: str) -> int:
        answer = await client.get("/api/v1/links/123", headers={"Authorization": f"Bearer {token}"})
        return answer.status_code

    body = key.token.removeprefix("tfl_")
    forged = "tfl_" + body[:-22] + ("A" if body[-22] != "A" else "B") + body[-21:]
    async with AsyncTestClient(app=create_app(h.container)) as client:
        made_up = [f"tfl_{n:065d}" for n in range(50)] + [forged]
        statuses = [await get(token) for token in made_up]
        assert statuses == [401, 401] + [429] * 49  # the client's budget, then refused
        assert len(reads) == 2  # two made-up tokens were looked up, the refused ones were not
        # Never seen by this process, and its client's budget spent: its own budget all the
        # same, from the first request.
        assert [await get(key.token) for _ in range(3)] == [404, 404, 429]
        assert await get(revoked.token) == 401  # sealed: a budget of its own, then refused
        assert len(reads) == 4  # each key read once, by the key check
        # Now known to be revoked: no budget of its own (a leaked key, revoked, buys whoever
        # found it none; an attacker's review), so its client's, which is spent.
        assert await get(revoked.token) == 429
        assert len(reads) == 4
        preflight = await client.options(
            "/api/v1/links/123", headers={"Authorization": f"Bearer {key.token}"}
        )
        assert preflight.status_code == 429  # not checked as a key: the client's budget
        frozen_rate_limit_clock(1.5)
        assert await get(forged) == 401
        assert await get(key.token) == 404  # its own budget again


async def test_made_up_tokens_from_one_ipv6_network_share_its_budget(
    frozen_rate_limit_clock: Callable[[float], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker's review: spread over the addresses of one /64, 200 made-up tokens were
    each read from the database, none refused."""
    h = Harness.build(
        build_container(make_settings(api_rate_limit_per_second=2, forwarded_allow_ips="127.0.0.1"))
    )
    reads = _counted_key_reads(h, monkeypatch)
    async with (
        serve_here(create_app(h.container)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        statuses = []
        for n in range(20):
            answer = await client.get(
                "/api/v1/links/123",
                headers={
                    "Authorization": f"Bearer tfl_{n:065d}",
                    "X-Forwarded-For": f"2001:db8:7:7::{n + 1:x}",
                },
            )
            statuses.append(answer.status_code)
        other = await client.get(
            "/api/v1/links/123",
            headers={"Authorization": "Bearer tfl_x", "X-Forwarded-For": "2001:db8:7:8::1"},
        )
    assert statuses == [401, 401] + [429] * 18
    assert len(reads) == 2
    assert other.status_code == 401  # another /64: its own budget


async def test_a_key_made_before_seals_gets_its_own_budget_once_known(
    frozen_rate_limit_clock: Callable[[float], None],
) -> None:
    """A key issued before keys were sealed still works: its first request spends its
    client's budget, and once the process knows it (from the key check), its own."""
    h = Harness.build(build_container(make_settings(api_rate_limit_per_second=2)))
    created = await h.container.create_api_key().execute("legacy")
    old_token = created.token[:-22]  # as keys were made: the prefix and 43 random characters
    async with h.uow() as uow:
        await uow.api_keys.add(
            dataclasses.replace(
                created.key,
                id=uuid.uuid4(),
                name="older",
                digest=h.container.tokens().digest(old_token),
            )
        )
        await uow.commit()

    async def get(token: str) -> int:
        answer = await client.get("/api/v1/links/123", headers={"Authorization": f"Bearer {token}"})
        return answer.status_code

    async with AsyncTestClient(app=create_app(h.container)) as client:
        assert await get(old_token) == 404  # the client's budget: not known yet
        assert [await get(old_token) for _ in range(3)] == [404, 404, 429]  # its own
        assert await get(f"tfl_{0:043d}") == 401  # the client's: one left
        assert await get(f"tfl_{1:043d}") == 429


async def test_api_limits_are_off_by_default(h: Harness) -> None:
    key = (await h.container.create_api_key().execute("bot")).token
    async with AsyncTestClient(app=create_app(h.container)) as client:
        for _ in range(30):
            answer = await client.get(
                "/api/v1/links/123", headers={"Authorization": f"Bearer {key}"}
            )
            assert answer.status_code == 404


# -- settings and serve --workers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TASKFLOW_LINK_FORWARDED_ALLOW_IPS", "10.0.0.0/8, proxy.local"),
        # "*" beside addresses: uvicorn trusted the addresses only.
        ("TASKFLOW_LINK_FORWARDED_ALLOW_IPS", "10.0.0.2, *"),
        ("TASKFLOW_LINK_REDIS_URL", "http://redis:6379"),
        ("TASKFLOW_LINK_DB_STATEMENT_TIMEOUT_SECONDS", "0"),
        ("TASKFLOW_LINK_API_RATE_LIMIT_PER_SECOND", "-1"),
        ("TASKFLOW_LINK_REDIS_KEY_PREFIX", "prod:*"),
        ("TASKFLOW_LINK_REDIS_KEY_PREFIX", ""),
    ],
)
def test_bad_instance_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as failed:
        load_settings(_env_file=None)
    assert variable in str(failed.value)


@pytest.mark.parametrize("value", ["fe80::1%eth0", "10.0.0.2, fe80::%eth0/64", "fe80::1%1"])
def test_a_trusted_proxy_with_an_ipv6_zone_is_refused(value: str) -> None:
    """An address's zone (``%eth0``) is no part of what a network matches: ``fe80::1%eth0``
    trusted fe80::1 on every interface, not on eth0 only as it reads, without a word."""
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, secret_key=TEST_SECRET_KEY, forwarded_allow_ips=value)
    message = str(refused.value)
    assert "TASKFLOW_LINK_FORWARDED_ALLOW_IPS:" in message
    assert "has an IPv6 zone" in message
    assert "every interface" in message
    assert make_settings(forwarded_allow_ips="fe80::1, fe80::/64").trusted_proxies


def test_config_shows_where_redis_is_but_not_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_REDIS_URL", "redis://:r3d1s-pw@cache:6380/2")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0, result.output
    assert "r3d1s-pw" not in result.output
    assert "TASKFLOW_LINK_REDIS_URL = redis://:***@cache:6380/2" in result.output


@pytest.mark.parametrize(
    ("environment", "says"),
    [
        ({}, "needs TASKFLOW_LINK_REDIS_URL"),
        ({"TASKFLOW_LINK_STORAGE": "memory"}, "needs storage every worker sees"),
        ({"TASKFLOW_LINK_DATABASE_URL": "sqlite+aiosqlite://"}, "needs storage every worker"),
        ({"TASKFLOW_LINK_REDIS_URL": "redis://127.0.0.1:1/0"}, "EMAIL_BACKEND=smtp"),
        (
            {
                "TASKFLOW_LINK_REDIS_URL": "redis://127.0.0.1:1/0",
                "TASKFLOW_LINK_EMAIL_BACKEND": "smtp",
                "TASKFLOW_LINK_SMTP_HOST": "mail",
            },
            "TASKFLOW_LINK_DISCORD_CLIENT_ID",  # said once, before any worker starts
        ),
    ],
)
def test_serve_with_workers_refuses_what_one_process_keeps_in_memory(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], says: str
) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["serve", "--workers", "2"])
    assert result.exit_code != 0
    if isinstance(result.exception, SettingsError):  # the command's main() prints it, exit 2
        assert says in str(result.exception)
    else:
        assert result.exit_code == 2
        assert says in result.output
    assert "Traceback" not in result.output


def test_serve_help_names_everything_workers_need() -> None:
    """`serve --help` said Redis only; the command also refuses memory storage and the
    outbox (the README's row names all three)."""
    shown = " ".join(CliRunner().invoke(cli, ["serve", "--help"]).output.split())
    assert "More than one needs TASKFLOW_LINK_REDIS_URL, SQL storage and" in shown
    assert "TASKFLOW_LINK_EMAIL_BACKEND=smtp" in shown


def test_each_commands_injection_resolver_is_made_once_on_its_class() -> None:
    """lightbulb binds a new copy of ``invoke`` per interaction; the resolver linkd generates
    must live on the class so the copies share it instead of generating it each time."""
    from entrypoints.bot.commands import command_classes

    for command in command_classes(server_commands=False):
        method = command.__dict__["invoke"]
        resolver = method._dependency_func
        assert resolver is not None
        bound = method.__get__(object(), command)
        assert bound._dependency_func is resolver


@pytest.mark.parametrize(
    ("mine", "theirs", "how"),
    [
        ("memory", "memory", "neither it nor this one has TASKFLOW_LINK_REDIS_URL"),
        ("memory", "redis d1", "it has Redis, this one has no TASKFLOW_LINK_REDIS_URL"),
        ("memory", "redis", "it has Redis, this one has no TASKFLOW_LINK_REDIS_URL"),
        ("redis d1", "memory", "this one has Redis, it has no TASKFLOW_LINK_REDIS_URL"),
        ("redis", "memory", "this one has Redis, it has no TASKFLOW_LINK_REDIS_URL"),
        ("redis d1", "redis d2", "it uses another Redis, or another "),
        ("redis d1", "redis d1", None),
        # A Redis that did not answer this time: its id is unknown, nothing to compare.
        ("redis", "redis d2", None),
        ("redis d1", "redis", None),
    ],
)
def test_instances_that_keep_their_state_apart_are_told_how(
    mine: str, theirs: str, how: str | None
) -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    other = Instance("i-1", "web-2", 41, "web", theirs, now, now)
    found = sharing_problems("web", mine, [other])
    if how is None:
        assert found == {}
    else:
        assert found["i-1"].startswith(how)
    assert str(other) == "web-2 (pid 41, started 2026-11-23 12:00:00 UTC)"


@pytest.mark.parametrize(
    ("mine", "theirs", "alike"),
    [
        ("web", "web", True),
        ("web", "gateway", False),
        ("gateway", "web", False),
        ("gateway", "gateway", True),
        ("gateway", "gateway 1/2", True),  # the unsharded copy runs every shard
        ("gateway 0,1/4", "gateway 1,2/4", True),
        ("gateway 0,1/4", "gateway 2,3/4", False),
        ("gateway 0/2", "gateway 0/4", True),  # resharding: the counts differ
        ("gateway 1/2", "gateway 3/4", True),  # a server of shard 3 of 4 is one of 1 of 2
        ("gateway 0/2", "gateway 1,3/4", False),  # ... never one of shard 0 of 2
        ("gateway 0-2,5/8", "gateway 4-6/8", True),
        ("gateway 0-2,6/8", "gateway 3-5,7/8", False),
    ],
)
def test_only_processes_that_receive_the_same_must_share(
    mine: str, theirs: str, *, alike: bool
) -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    other = Instance("i-1", "bot-2", 7, theirs, "memory", now, now)
    assert bool(sharing_problems(mine, "memory", [other])) is alike


def test_a_gateway_bots_kind_names_its_shards() -> None:
    assert gateway_kind(None) == "gateway"
    assert gateway_kind(ShardPlan((0, 3), 4)) == "gateway 0,3/4"
    # Runs as ranges: a copy may run thousands of shards.
    assert gateway_kind(ShardPlan(tuple(range(16)), 16)) == "gateway 0-15/16"
    assert gateway_kind(ShardPlan((9, 1, 2, 3, 7, 8), 10)) == "gateway 1-3,7-9/10"


async def test_an_ipv6_clients_48_shares_a_budget_64_times_a_64s() -> None:
    """An attacker's review: whoever holds a /48 (a tunnel broker gives one away) held 65,536
    /64s, each with a budget of its own. A /48 now has one too, 64 times a /64's."""
    h = Harness.build(build_container(make_settings(forwarded_allow_ips="127.0.0.1")))
    await check_site_budget(create_app(h.container, rate_limit_per_minute=1))
