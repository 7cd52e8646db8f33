"""Between lightbulb's command context and the core: who ran the command, how a reply is sent,
and the reply deadline."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable
from typing import TypeVar

import hikari
import lightbulb

from domain.model import DiscordUser
from domain.ports import Clock
from entrypoints.bot.late import created_at
from entrypoints.bot.replies import Reply

T = TypeVar("T")
log = logging.getLogger("taskflow_link.bot")


class CommandTimedOut(Exception):
    """A command did not finish before its reply deadline."""


class NotRun(Exception):
    """A command not run: too late for Discord to take any answer to it."""


class Deadline:
    """Discord drops a first answer that comes later than 3 seconds after the interaction; a
    "thinking…" answer (deferred) gives the reply 15 minutes instead. A command that has not
    replied within ``defer_after`` seconds answers "thinking…" and from then on has until
    ``deferred`` seconds; one that may not defer first (``defer_after`` not below ``seconds``)
    gives up at ``seconds``, in time to say that something went wrong.

    Discord counts from the interaction's creation (the time in its id, read with ``clock``),
    not from when it reached the bot: the delays count from there too, or from the command's
    start when that comes first (this host's clock behind Discord's); the deferred deadline
    too, so that the reply comes within the 15 minutes the interaction's token lives from its
    creation (the settings keep the late-interaction limit and the deferred deadline within
    them). An interaction that
    reached the bot so late that the defer delay is over says "thinking…" at once, before its
    command starts: when Discord refuses it (its 3 s are over), the command is not run, since
    its effects (an /unlink) would come unannounced. One that may not defer and whose reply
    deadline is over is not run either."""

    def __init__(
        self,
        seconds: float,
        *,
        defer_after: float | None = None,
        deferred: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.seconds = seconds
        self.defer_after = defer_after
        self.deferred = max(seconds, deferred if deferred is not None else seconds)
        self._clock = clock

    def _age(self, ctx: lightbulb.Context) -> float:
        """How long ago Discord created the interaction (0 without a clock, or with one behind
        Discord's)."""
        if self._clock is None:
            return 0.0
        return max(self._clock.now().timestamp() - created_at(int(ctx.interaction.id)), 0.0)

    async def run(self, ctx: lightbulb.Context, work: Awaitable[T]) -> T:
        loop = asyncio.get_running_loop()
        started = loop.time()
        age = self._age(ctx)
        origin = started - age  # the interaction's creation, in the loop's time
        defers = self.defer_after is not None and self.defer_after < self.seconds
        deferred_first = defers and self.defer_after is not None and age >= self.defer_after
        try:
            if deferred_first:
                await self._defer_first(ctx, age)
            elif not defers and age >= self.seconds:
                raise CommandTimedOut(
                    f"{_named(ctx)} not run: it came {age:.1f} s after Discord created it, "
                    f"past the reply deadline ({self.seconds:g} s)"
                )
        except BaseException:
            if inspect.iscoroutine(work):
                work.close()  # never started: not left "never awaited"
            raise
        task = asyncio.ensure_future(work)
        limit, until = self.seconds, origin + self.seconds
        if deferred_first:
            limit, until = self.deferred, origin + self.deferred
        try:
            if defers and not deferred_first and self.defer_after is not None:
                await asyncio.wait((task,), timeout=origin + self.defer_after - loop.time())
                if not task.done():
                    # Cut off now, a command that is slow but working would be told it failed,
                    # or (an /unlink that committed) that it did not happen.
                    await ctx.defer(ephemeral=True)
                    limit, until = self.deferred, origin + self.deferred
            async with asyncio.timeout_at(until):
                return await task
        except TimeoutError:
            raise CommandTimedOut(f"no result after {limit:g} s") from None
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @staticmethod
    async def _defer_first(ctx: lightbulb.Context, age: float) -> None:
        """ "thinking…" before the command starts; not run when Discord refuses it."""
        log.info(
            '%s came %.1f s after Discord created it: "thinking…" at once, before it runs',
            _named(ctx),
            age,
        )
        try:
            await ctx.defer(ephemeral=True)
        except hikari.HTTPError as exc:
            status = getattr(exc, "status", "")
            code = getattr(exc, "code", "")
            raise NotRun(
                f"{_named(ctx)} not run: it came {age:.1f} s after Discord created it, and "
                f'Discord refused its "thinking…" ({type(exc).__name__}, HTTP {status}, '
                f"Discord code {code}): its 3 s were over, its effects would come unannounced"
            ) from None


def _named(ctx: lightbulb.Context) -> str:
    interaction = ctx.interaction
    return f"interaction {interaction.id} (/{interaction.command_name})"


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
