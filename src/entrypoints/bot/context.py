"""Between lightbulb's command context and the core: who ran the command, how a reply is sent,
and the reply deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import hikari
import lightbulb

from domain.model import DiscordUser
from entrypoints.bot.replies import Reply

T = TypeVar("T")


class CommandTimedOut(Exception):
    """A command did not finish before its reply deadline."""


class Deadline:
    """Discord drops an answer that comes later than 3 seconds after the interaction, so a
    command gives up in time to say that something went wrong."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def run(self, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.seconds):
                return await work
        except TimeoutError:
            raise CommandTimedOut(f"no result after {self.seconds} s") from None


def invoker(ctx: lightbulb.Context) -> DiscordUser:
    """Who ran the command. hikari fills ``user`` from ``member.user`` in servers."""
    user = ctx.interaction.user
    return DiscordUser.from_discord(int(user.id), user.username, user.global_name, user.avatar_hash)


async def respond(ctx: lightbulb.Context, reply: Reply) -> None:
    """Send ``reply`` privately; names in it never ping anyone."""
    components: list[hikari.api.ComponentBuilder] = []
    if reply.button is not None:
        row = hikari.impl.MessageActionRowBuilder()
        row.add_link_button(reply.button.url, label=reply.button.label)
        components.append(row)
    await ctx.respond(
        reply.content,
        flags=hikari.MessageFlag.EPHEMERAL,
        components=components,
        mentions_everyone=False,
        user_mentions=False,
        role_mentions=False,
    )
