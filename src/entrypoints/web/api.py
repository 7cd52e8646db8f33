"""The JSON API for other services (bots, the TaskFlow backend). API keys as Bearer tokens."""

from __future__ import annotations

from typing import Any

from litestar import Controller, delete, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, JSONBody
from msgspec import Struct

from domain import errors
from domain import use_cases as uc
from domain.model import AccountId, DiscordId, Link
from entrypoints.web.deps import Use


class LinkOut(Struct):
    """A link; ids are strings (Discord ids exceed JavaScript's safe integers)."""

    discord_id: str
    taskflow_user_id: str
    linked_at: str
    discord_username: str
    discord_global_name: str | None


def link_out(link: Link) -> LinkOut:
    return LinkOut(
        discord_id=str(link.discord_id),
        taskflow_user_id=str(link.account_id),
        linked_at=link.linked_at.isoformat().replace("+00:00", "Z"),
        discord_username=link.discord_username,
        discord_global_name=link.discord_global_name,
    )


class LookupIn(Struct):
    """Up to 1000 Discord ids (strings; numbers are accepted too)."""

    discord_ids: list[str | int]


class LookupOut(Struct):
    links: list[LinkOut]  # in the order asked, duplicates once
    missing: list[str]  # asked for, not linked


async def require_api_key(
    connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler
) -> None:
    authenticate: uc.AuthenticateApiKey = connection.app.state.authenticate_api_key
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthorizedException("Send an API key as 'Authorization: Bearer <key>'.")
    if await authenticate.execute(token.strip()) is None:
        raise NotAuthorizedException("This API key is not valid (unknown or revoked).")


class LinksApi(Controller):
    path = "/api/v1"
    guards = [require_api_key]
    tags = ["links"]
    security = [{"apiKey": []}]

    @get("/links/{discord_id:str}", summary="Which TaskFlow account is this Discord id?")
    async def by_discord_id(
        self, discord_id: FromPath[str], look_up_link: Use[uc.LookUpLink]
    ) -> LinkOut:
        return link_out(await look_up_link.execute(discord_id))

    @post(
        "/links/lookup",
        summary="Which TaskFlow accounts are these Discord ids? (up to 1000, one query)",
        status_code=200,
    )
    async def bulk(self, data: JSONBody[LookupIn], look_up_links: Use[uc.LookUpLinks]) -> LookupOut:
        found = await look_up_links.execute(data.discord_ids)
        return LookupOut([link_out(link) for link in found.links], [str(d) for d in found.missing])

    @get("/accounts/{account_id:str}/link", summary="The Discord link of a TaskFlow account")
    async def by_account(
        self, account_id: FromPath[str], link_of_account: Use[uc.LinkOfAccount]
    ) -> LinkOut:
        link = await link_of_account.execute(AccountId.parse(account_id))
        if link is None:
            raise errors.NotFound(f"TaskFlow account {account_id} has no Discord link.")
        return link_out(link)

    @delete("/links/{discord_id:str}", summary="Unlink (admin)", status_code=200)
    async def unlink(
        self, discord_id: FromPath[str], unlink_discord: Use[uc.UnlinkDiscord]
    ) -> LinkOut:
        removed = await unlink_discord.execute(DiscordId.parse(discord_id), via="api")
        return link_out(removed.link)
