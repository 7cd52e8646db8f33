"""The hand-written reference for ``GET /api/v1/links/{discord_id}``: Litestar and an asyncpg
pool, nothing else. Same key check as the app (the SHA-256 hex digest of the presented token
against the active keys' ``api_keys.key_hash``, loaded once at start-up, which is what the
app's cache will do), same query, same JSON.

Run by ``benchmarks/run.py`` as ``python -m benchmarks.reference --port PORT`` with the
database in ``BENCH_DSN`` (``postgresql://…``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import uvicorn
from litestar import Litestar, Request, get
from litestar.exceptions import NotAuthorizedException, NotFoundException, ValidationException

QUERY = (
    "SELECT discord_id, taskflow_user_id, linked_at, discord_username, discord_global_name "
    "FROM user_links WHERE discord_id = $1"
)
ACTIVE_KEYS = "SELECT key_hash FROM api_keys WHERE revoked_at IS NULL"
MAX_SNOWFLAKE = 2**63 - 1


class LinkOut(msgspec.Struct):
    """The app's shape: ids as strings, ``linked_at`` in UTC with a ``Z``."""

    discord_id: str
    taskflow_user_id: str
    linked_at: str
    discord_username: str
    discord_global_name: str | None


def link_out(row: asyncpg.Record) -> LinkOut:
    linked_at: datetime = row["linked_at"]  # TIMESTAMP holding UTC
    return LinkOut(
        discord_id=str(row["discord_id"]),
        taskflow_user_id=str(row["taskflow_user_id"]),
        linked_at=linked_at.isoformat() + "Z",
        discord_username=row["discord_username"],
        discord_global_name=row["discord_global_name"],
    )


class KeyCheck:
    """``Authorization: Bearer <key>`` against the digests of the active keys."""

    def __init__(self) -> None:
        self.digests: frozenset[str] = frozenset()

    async def load(self, connection: asyncpg.Connection | asyncpg.Pool) -> None:
        self.digests = frozenset(r["key_hash"] for r in await connection.fetch(ACTIVE_KEYS))

    def require(self, request: Request[Any, Any, Any]) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise NotAuthorizedException("Send an API key as 'Authorization: Bearer <key>'.")
        if hashlib.sha256(token.strip().encode()).hexdigest() not in self.digests:
            raise NotAuthorizedException("This API key is not valid (unknown or revoked).")


def parse_discord_id(raw: str) -> int:
    text = raw.strip()
    if not (text.isascii() and text.isdecimal()) or len(text) > 19:
        raise ValidationException(f"{raw!r} is not a Discord id.")
    value = int(text)
    if not 0 < value <= MAX_SNOWFLAKE:
        raise ValidationException(f"{raw!r} is not a Discord id.")
    return value


def not_found(discord_id: int) -> NotFoundException:
    return NotFoundException(f"Discord id {discord_id} is not linked to a TaskFlow account.")


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_reference_app(dsn: str, pool_size: int = 10) -> Litestar:
    keys = KeyCheck()
    pools: list[asyncpg.Pool] = []

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
        pools.append(pool)
        await keys.load(pool)
        try:
            yield
        finally:
            await pool.close()

    @get("/api/v1/links/{discord_id:str}")
    async def lookup(discord_id: str, request: Request[Any, Any, Any]) -> LinkOut:
        keys.require(request)
        value = parse_discord_id(discord_id)
        row = await pools[0].fetchrow(QUERY, value)
        if row is None:
            raise not_found(value)
        return link_out(row)

    return Litestar([lookup, healthz], lifespan=[lifespan], openapi_config=None)


def serve(factory: Callable[[str], Litestar], description: str) -> None:
    """The command line of this module and ``guide``: the same uvicorn settings as
    ``taskflow-link serve`` (its HTTP parser, no access log, logging left alone)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    from entrypoints.http11 import BoundedHttpToolsProtocol  # noqa: PLC0415 - serving only

    app = factory(os.environ["BENCH_DSN"])
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        http=BoundedHttpToolsProtocol,  # the app's parser: the comparison is of what runs above it
        access_log=False,
        log_config=None,
    )


if __name__ == "__main__":
    serve(create_reference_app, "The hand-written Litestar + asyncpg reference handler.")
