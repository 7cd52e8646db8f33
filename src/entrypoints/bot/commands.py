"""The slash commands: read the invoker, call the use case, reply. The same classes serve the
gateway bot and HTTP interactions.

Failures are not handled here: they reach the client's error handler (``bridge.py``), which
answers through ``Replies.error``.
"""

from __future__ import annotations

from typing import Any

import hikari
import lightbulb

# Resolved by lightbulb's dependency injection at run time, so imported at run time.
from domain.use_cases import IssueLinkTicket, UnlinkDiscord, WhoAmI
from entrypoints.bot.context import Deadline, invoker, respond
from entrypoints.bot.replies import Replies

# Global commands: in servers and in DMs with the bot; installed to servers. A server's own
# commands take neither: Discord offers them in that server only ("Guild commands don't
# support the BOT_DM interaction context"), and refuses a server command that asks for DMs.
CONTEXTS = (hikari.ApplicationContextType.GUILD, hikari.ApplicationContextType.BOT_DM)
INSTALLS = (hikari.ApplicationIntegrationType.GUILD_INSTALL,)


def command_loader(*, server_commands: bool) -> lightbulb.Loader:
    """The three commands, for registering globally or (``server_commands``) in the servers
    of ``TASKFLOW_LINK_DISCORD_COMMAND_GUILDS``."""
    loader = lightbulb.Loader()
    for command in command_classes(server_commands=server_commands):
        loader.command(command)
    return loader


def command_classes(*, server_commands: bool) -> tuple[type[lightbulb.SlashCommand], ...]:
    """The three command classes, their injection resolvers made (see ``prime_injection``)."""
    where: dict[str, Any] = (
        {} if server_commands else {"contexts": CONTEXTS, "integration_types": INSTALLS}
    )

    class LinkCommand(
        lightbulb.SlashCommand,
        name="link",
        description="Link your Discord account to your TaskFlow account",
        **where,
    ):
        @lightbulb.invoke
        async def invoke(
            self,
            ctx: lightbulb.Context,
            use_case: IssueLinkTicket,
            replies: Replies,
            deadline: Deadline,
        ) -> None:
            outcome = await deadline.run(ctx, use_case.execute(invoker(ctx)))
            await respond(ctx, replies.link(outcome))

    class UnlinkCommand(
        lightbulb.SlashCommand,
        name="unlink",
        description="Unlink your Discord account from TaskFlow",
        **where,
    ):
        @lightbulb.invoke
        async def invoke(
            self,
            ctx: lightbulb.Context,
            use_case: UnlinkDiscord,
            replies: Replies,
            deadline: Deadline,
        ) -> None:
            removed = await deadline.run(ctx, use_case.execute(invoker(ctx).id))
            await respond(ctx, replies.unlinked(removed))

    class WhoAmICommand(
        lightbulb.SlashCommand,
        name="whoami",
        description="Show which TaskFlow account your Discord account is linked to",
        **where,
    ):
        @lightbulb.invoke
        async def invoke(
            self,
            ctx: lightbulb.Context,
            use_case: WhoAmI,
            replies: Replies,
            deadline: Deadline,
        ) -> None:
            linked = await deadline.run(ctx, use_case.execute(invoker(ctx).id))
            await respond(ctx, replies.who_am_i(linked))

    commands = (LinkCommand, UnlinkCommand, WhoAmICommand)
    prime_injection(commands)
    return commands


def prime_injection(commands: tuple[type[lightbulb.SlashCommand], ...]) -> None:
    """linkd (lightbulb's dependency injection) writes each ``invoke`` method's resolver on its
    first call, but lightbulb makes a new command instance per interaction and linkd keeps the
    resolver on that instance's bound copy only: every command paid the code generation again
    (``exec``, ``inspect.signature``, ``eval`` of the annotations: most of a /link's CPU). Made
    once here, on the class, every bound copy inherits it. Harmless if linkd changes: then it
    does nothing."""
    for command in commands:
        method = command.__dict__.get("invoke")
        make = getattr(method, "_codegen_dependency_func", None)
        if make is not None and getattr(method, "_dependency_func", None) is None:
            method._dependency_func = make()  # type: ignore[union-attr]
