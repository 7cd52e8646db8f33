"""The original guide's pattern, ``get_taskflow_user(discord_id)``: every call opens a NEW
asyncpg connection, runs the query and closes it. Same key check, query and JSON as
``reference.py``; only the connection handling differs.

Run by ``benchmarks/run.py`` as ``python -m benchmarks.guide --port PORT`` with the database
in ``BENCH_DSN``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from litestar import Litestar, Request, get

from benchmarks.reference import (
    QUERY,
    KeyCheck,
    LinkOut,
    healthz,
    link_out,
    not_found,
    parse_discord_id,
    serve,
)


def create_guide_app(dsn: str) -> Litestar:
    keys = KeyCheck()

    async def get_taskflow_user(discord_id: int) -> asyncpg.Record | None:
        """The guide's helper: connect, query, close."""
        connection = await asyncpg.connect(dsn)
        try:
            return await connection.fetchrow(QUERY, discord_id)
        finally:
            await connection.close()

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        connection = await asyncpg.connect(dsn)
        try:
            await keys.load(connection)
        finally:
            await connection.close()
        yield

    @get("/api/v1/links/{discord_id:str}")
    async def lookup(discord_id: str, request: Request[Any, Any, Any]) -> LinkOut:
        keys.require(request)
        value = parse_discord_id(discord_id)
        row = await get_taskflow_user(value)
        if row is None:
            raise not_found(value)
        return link_out(row)

    return Litestar([lookup, healthz], lifespan=[lifespan], openapi_config=None)


if __name__ == "__main__":
    serve(create_guide_app, "The guide's connect-per-call handler.")
