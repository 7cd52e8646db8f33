"""A server's copy of a command left from before the commands went global.

While developing, the commands often live in one server (``TASKFLOW_LINK_DISCORD_COMMAND_GUILDS``,
which Discord updates at once); in production, globally. Syncing replaces the global commands and
those of the listed servers, never those of a server no longer listed: that server keeps its
copies, and Discord lists each command there twice. lightbulb ignored an interaction for such a
copy (it looks the command up in the server it was registered in), so whoever picked it got
"something went wrong" over HTTP and no answer at all over the gateway. Both clients now answer
it as the global command of that name, and say in the log which server still holds copies.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

import hikari
import lightbulb
from lightbulb.internal.constants import GLOBAL_COMMAND_KEY

log = logging.getLogger("taskflow_link.bot")

Resolved = tuple[Sequence[Any], type[lightbulb.commands.CommandBase]]
# The gateway client looks a command up twice (to claim it, then to run it): one warning each.
_warned: deque[hikari.Snowflake] = deque(maxlen=256)


class AnswersStaleServerCommands(lightbulb.Client):
    """For a lightbulb client (before it in the bases): a command registered in a server
    where this bot no longer registers commands runs as the global one, when the commands are
    global; with commands in chosen servers it is not run, and the log names that server."""

    __slots__ = ()

    def _resolve_options_and_command(
        self, interaction: hikari.CommandInteraction | hikari.AutocompleteInteraction
    ) -> Resolved | None:
        found: Resolved | None = super()._resolve_options_and_command(interaction)
        server = interaction.registered_guild_id
        scopes = self._command_invocation_mapping
        if found is not None or server is None or server in scopes:
            return found
        if GLOBAL_COMMAND_KEY not in scopes:
            # Commands in chosen servers: one dropped from the list keeps its copies (syncing
            # never touches it), and they are not run there. Said, naming the server: the log
            # only read "a command this version lacks?", its members "something went wrong".
            if interaction.id not in _warned:
                _warned.append(interaction.id)
                log.warning(
                    "/%s: not run, its copy is registered in server %s, which is no longer in "
                    "TASKFLOW_LINK_DISCORD_COMMAND_GUILDS. Discord offers the commands there "
                    "until that server's are removed (PUT /applications/{id}/guilds/%s/commands "
                    "with an empty list), or until the server is listed again",
                    interaction.command_name,
                    server,
                    server,
                )
            return None
        as_global = copy.copy(interaction)
        as_global.registered_guild_id = None
        found = super()._resolve_options_and_command(as_global)
        if found is not None and interaction.id not in _warned:
            _warned.append(interaction.id)
            log.warning(
                "/%s: a copy registered in server %s, from before the commands went global "
                "(TASKFLOW_LINK_DISCORD_COMMAND_GUILDS), answered as the global command. "
                "Discord lists each command twice there until that server's are removed "
                "(PUT /applications/{id}/guilds/%s/commands with an empty list)",
                interaction.command_name,
                server,
                server,
            )
        return found
