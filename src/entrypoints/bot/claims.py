"""One copy of the gateway bot answers each interaction.

Discord sends an interaction to every gateway connection of its shard: to each copy of an
unsharded bot, and to both the old and the new copy of a shard while a rolling upgrade overlaps
them. Each copy used to run the command, and only the first reply was shown: for ``/link`` the
later copy's new ticket spent the one in the button shown ("This button has already been used,
or it was replaced"), nearly every time, since the copy that issues first also answers first.
Now a copy claims the interaction by its id first (the replay guard: in Redis when
``TASKFLOW_LINK_REDIS_URL`` is set, so shared by every copy; else in this process only) and
leaves the interactions another copy claimed alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import hikari
from lightbulb.client import GatewayEnabledClient

log = logging.getLogger("taskflow_link.bot")

# An interaction's token lives 15 minutes: nothing is answered later, and a copy of it that
# comes later (a gateway session resumed after an outage replays what it missed) is not run.
CLAIM_SECONDS = 15 * 60


class Claims(Protocol):
    async def first_time(self, key: str, ttl_seconds: int) -> bool:
        """Whether ``key`` is new (and now taken) for ``ttl_seconds``."""


class ClaimingGatewayClient(GatewayEnabledClient):
    """lightbulb's gateway client, running only the interactions this copy claimed."""

    __slots__ = ("_claims",)

    def __init__(self, app: hikari.GatewayBot, *args: Any, claims: Claims, **kwargs: Any) -> None:
        super().__init__(app, *args, **kwargs)
        self._claims = claims

    async def handle_interaction_create(
        self,
        interaction: hikari.PartialInteraction,
        initial_response_sent_event: asyncio.Event | None = None,
    ) -> None:
        if self._runs(interaction) and not await self._claims.first_time(
            f"gateway:{interaction.id}", CLAIM_SECONDS
        ):
            log.info("interaction %s: another copy of the bot claimed it", interaction.id)
            return
        await super().handle_interaction_create(interaction, initial_response_sent_event)

    def _runs(self, interaction: hikari.PartialInteraction) -> bool:
        """Whether this copy has a command for ``interaction``, and so claims it. A copy of an
        older release overlapping a newer one in a rolling upgrade has none for a command the
        newer one added: it claimed it all the same, lightbulb ignored it, and the newer
        copy left it to the claim (nobody answered). What else comes (a button or a form:
        this bot attaches no handler for them) is not claimed either; lightbulb ignores it."""
        if not isinstance(interaction, hikari.CommandInteraction | hikari.AutocompleteInteraction):
            return False
        return self._resolve_options_and_command(interaction) is not None
