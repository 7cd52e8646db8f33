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
from typing import Any, Protocol, TypeGuard

import hikari
from lightbulb.client import GatewayEnabledClient

from entrypoints.bot.inband import answer_unhandled_through_callback
from entrypoints.bot.late import LateInteractions
from entrypoints.bot.stale import AnswersStaleServerCommands

log = logging.getLogger("taskflow_link.bot")

# An interaction's token lives 15 minutes: nothing is answered later. A copy of it that comes
# later still (a gateway session resumed after an outage replays what it missed) is refused as
# late, since TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS is 900 at most.
CLAIM_SECONDS = 15 * 60


class Claims(Protocol):
    async def first_time(self, key: str, ttl_seconds: int) -> bool:
        """Whether ``key`` is new (and now taken) for ``ttl_seconds``."""


class ClaimingGatewayClient(AnswersStaleServerCommands, GatewayEnabledClient):
    """lightbulb's gateway client, running only the interactions this copy claimed, and of
    those only the ones that came in time (see ``late``). As it stops it lets the commands under
    way finish, then claims nothing more."""

    __slots__ = ("_claims", "_drain_seconds", "_late", "_running", "_stopping")

    def __init__(
        self,
        app: hikari.GatewayBot,
        *args: Any,
        claims: Claims,
        late: LateInteractions,
        drain_seconds: float = 10.0,
        **kwargs: Any,
    ) -> None:
        """``drain_seconds``: how long ``stop`` waits for the commands under way."""
        super().__init__(app, *args, **kwargs)
        self._claims = claims
        self._late = late
        self._drain_seconds = drain_seconds
        self._running: set[asyncio.Task[Any]] = set()
        self._stopping = False

    async def handle_interaction_create(
        self,
        interaction: hikari.PartialInteraction,
        initial_response_sent_event: asyncio.Event | None = None,
    ) -> None:
        if self._stopping:
            # Its shards stay connected while the copy releases what the commands need, then
            # its REST client closes: a command run now may never answer, and, claimed, no
            # other copy would run it.
            log.info("interaction %s: not taken, this copy of the bot is stopping", interaction.id)
            return
        # Under way from here, its claim included: a stop that began while the claim (a
        # Redis call) was under way found nothing to wait for, and the command the claim then
        # won ran on a copy closing its connections (no answer), with no other copy to run it.
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            other = isinstance(interaction, hikari.ComponentInteraction | hikari.ModalInteraction)
            claimed = other or self._runs(interaction)
            if claimed:
                if not await self._claims.first_time(f"gateway:{interaction.id}", CLAIM_SECONDS):
                    log.info("interaction %s: another copy of the bot claimed it", interaction.id)
                    return
                # Checked once claimed: the copy that claimed it says so, once for all copies.
                name = getattr(interaction, "command_name", None)
                if late := self._late.refusal(interaction.id, name):
                    log.warning("%s", late)
                    return
            sent = initial_response_sent_event or asyncio.Event()
            await super().handle_interaction_create(interaction, sent)
            # Claimed only: an autocomplete for a command this copy lacks is left to a copy
            # that has it (a newer one, in a rolling upgrade).
            unanswered = not sent.is_set()
            if claimed and unanswered and not isinstance(interaction, hikari.CommandInteraction):
                await self._answer_unhandled(interaction)
        finally:
            self._running.discard(task)

    async def stop(self, *args: Any) -> None:
        """Lets the commands under way finish, those that come meanwhile too (for
        ``drain_seconds`` at most): the copy's shards and REST client close after this, and
        a command still running then never answered. Then claims nothing more, and stops
        lightbulb's client."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._drain_seconds
        while running := [t for t in self._running if t is not asyncio.current_task()]:
            if (left := deadline - loop.time()) <= 0:
                break
            await asyncio.wait(running, timeout=left)
        self._stopping = True
        await super().stop(*args)

    async def _answer_unhandled(self, interaction: hikari.PartialInteraction) -> None:
        """A button's, a modal's or an autocomplete that nothing answered (none of this
        version's handlers takes it: a button on a message of an older version) is answered
        at once, as over HTTP: Discord showed "This interaction failed" after 3 s."""
        log.info(
            "interaction %s (type %s): nothing of this version handles it; answered so",
            interaction.id,
            int(interaction.type),
        )
        try:
            await answer_unhandled_through_callback(interaction)
        except hikari.HTTPError as exc:
            log.warning(
                "interaction %s: Discord refused the answer to an unhandled interaction: %s",
                interaction.id,
                exc,
            )

    def _runs(
        self, interaction: hikari.PartialInteraction
    ) -> TypeGuard[hikari.CommandInteraction | hikari.AutocompleteInteraction]:
        """Whether this copy has a command for ``interaction``, and so claims it. A copy of an
        older release overlapping a newer one in a rolling upgrade has none for a command the
        newer one added: it claimed it all the same, lightbulb ignored it, and the newer
        copy left it to the claim (nobody answered). A button's or a form's interaction (this
        bot attaches no handler for them) is claimed apart, and answered by the copy that
        claims it (``_answer_unhandled``)."""
        if not isinstance(interaction, hikari.CommandInteraction | hikari.AutocompleteInteraction):
            return False
        return self._resolve_options_and_command(interaction) is not None
