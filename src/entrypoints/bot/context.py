"""Between lightbulb's command context and the core: who ran the command, how a reply is sent,
and the reply deadline."""

from __future__ import annotations

import asyncio
import contextlib
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
    """Discord drops a first answer that comes later than 3 seconds after the interaction; a
    "thinking…" answer (deferred) gives the reply 15 minutes instead. A command that has not
    replied within ``defer_after`` seconds answers "thinking…" and from then on has until
    ``deferred`` seconds; one that may not defer first (``defer_after`` not below ``seconds``)
    gives up at ``seconds``, in time to say that something went wrong."""

    def __init__(
        self, seconds: float, *, defer_after: float | None = None, deferred: float | None = None
    ) -> None:
        self.seconds = seconds
        self.defer_after = defer_after
        self.deferred = max(seconds, deferred if deferred is not None else seconds)

    async def run(self, ctx: lightbulb.Context, work: Awaitable[T]) -> T:
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.ensure_future(work)
        limit = self.seconds
        try:
            if self.defer_after is not None and self.defer_after < self.seconds:
                await asyncio.wait((task,), timeout=self.defer_after)
                if not task.done():
                    # Cut off now, a command that is slow but working would be told it failed,
                    # or (an /unlink that committed) that it did not happen.
                    await ctx.defer(ephemeral=True)
                    limit = self.deferred
            async with asyncio.timeout_at(started + limit):
                return await task
        except TimeoutError:
            raise CommandTimedOut(f"no result after {limit} s") from None
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


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
