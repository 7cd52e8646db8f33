"""The JSON API for other services (bots, the TaskFlow backend). API keys as Bearer tokens."""

from __future__ import annotations

from typing import Any

from litestar import Controller, delete, get
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from msgspec import Struct

from domain.model import AccountId, DiscordId, Link
from entrypoints.web.deps import Services


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


async def require_api_key(
    connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler
) -> None:
    container: Services = connection.app.state.container
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthorizedException("Send an API key as 'Authorization: Bearer <key>'.")
    if await container.authenticate_api_key().execute(token.strip()) is None:
        raise NotAuthorizedException("This API key is not valid (unknown or revoked).")


class LinksApi(Controller):
    path = "/api/v1"
    guards = [require_api_key]
    tags = ["links"]
    security = [{"apiKey": []}]

    @get("/links/{discord_id:str}", summary="Which TaskFlow account is this Discord id?")
    async def by_discord_id(self, discord_id: str, container: Services) -> LinkOut:
        return link_out(await container.look_up_link().execute(discord_id))

    @get("/accounts/{account_id:str}/link", summary="The Discord link of a TaskFlow account")
    async def by_account(self, account_id: str, container: Services) -> LinkOut:
        from domain import errors  # noqa: PLC0415

        link = await container.link_of_account().execute(AccountId.parse(account_id))
        if link is None:
            raise errors.NotFound(f"TaskFlow account {account_id} has no Discord link.")
        return link_out(link)

    @delete("/links/{discord_id:str}", summary="Unlink (admin)", status_code=200)
    async def unlink(self, discord_id: str, container: Services) -> LinkOut:
        removed = await container.unlink_discord().execute(DiscordId.parse(discord_id))
        return link_out(removed.link)
