"""The slash commands: read the invoker, call the use case, reply. The same classes serve the
gateway bot and HTTP interactions.

Failures are not handled here: they reach the client's error handler (``bridge.py``), which
answers through ``Replies.error``.
"""

from __future__ import annotations

import hikari
import lightbulb

# Resolved by lightbulb's dependency injection at run time, so imported at run time.
from domain.use_cases import IssueLinkTicket, UnlinkDiscord, WhoAmI
from entrypoints.bot.context import Deadline, invoker, respond
from entrypoints.bot.replies import Replies

loader = lightbulb.Loader()

# Servers and direct messages with the bot; installed to servers.
CONTEXTS = (hikari.ApplicationContextType.GUILD, hikari.ApplicationContextType.BOT_DM)
INSTALLS = (hikari.ApplicationIntegrationType.GUILD_INSTALL,)


@loader.command
class LinkCommand(
    lightbulb.SlashCommand,
    name="link",
    description="Link your Discord account to your TaskFlow account",
    contexts=CONTEXTS,
    integration_types=INSTALLS,
):
    @lightbulb.invoke
    async def invoke(
        self,
        ctx: lightbulb.Context,
        use_case: IssueLinkTicket,
        replies: Replies,
        deadline: Deadline,
    ) -> None:
        outcome = await deadline.run(use_case.execute(invoker(ctx)))
        await respond(ctx, replies.link(outcome))


@loader.command
class UnlinkCommand(
    lightbulb.SlashCommand,
    name="unlink",
    description="Unlink your Discord account from TaskFlow",
    contexts=CONTEXTS,
    integration_types=INSTALLS,
):
    @lightbulb.invoke
    async def invoke(
        self, ctx: lightbulb.Context, use_case: UnlinkDiscord, replies: Replies, deadline: Deadline
    ) -> None:
        removed = await deadline.run(use_case.execute(invoker(ctx).id))
        await respond(ctx, replies.unlinked(removed))


@loader.command
class WhoAmICommand(
    lightbulb.SlashCommand,
    name="whoami",
    description="Show which TaskFlow account your Discord account is linked to",
    contexts=CONTEXTS,
    integration_types=INSTALLS,
):
    @lightbulb.invoke
    async def invoke(
        self, ctx: lightbulb.Context, use_case: WhoAmI, replies: Replies, deadline: Deadline
    ) -> None:
        linked = await deadline.run(use_case.execute(invoker(ctx).id))
        await respond(ctx, replies.who_am_i(linked))


def prime_injection() -> None:
    """linkd (lightbulb's dependency injection) writes each ``invoke`` method's resolver on its
    first call, but lightbulb makes a new command instance per interaction and linkd keeps the
    resolver on that instance's bound copy only: every command paid the code generation again
    (``exec``, ``inspect.signature``, ``eval`` of the annotations: most of a /link's CPU). Made
    once here, on the class, every bound copy inherits it. Harmless if linkd changes: then it
    does nothing."""
    for command in (LinkCommand, UnlinkCommand, WhoAmICommand):
        method = command.__dict__.get("invoke")
        make = getattr(method, "_codegen_dependency_func", None)
        if make is not None and getattr(method, "_dependency_func", None) is None:
            method._dependency_func = make()  # type: ignore[union-attr]
