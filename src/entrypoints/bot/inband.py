"""HTTP interactions answered in the HTTP response itself.

lightbulb's REST client answers every command through Discord's callback endpoint (one more
round trip to Discord per command) and then gives hikari nothing to send back. Here the
command's first reply becomes the body of the answer to Discord's POST (type 4), as Discord
prefers. A command that has not replied within ``defer_after`` seconds is answered "deferred"
(type 5, ephemeral: Discord shows "thinking…" to that person only), and its reply later edits
that message through the interaction's webhook.

The command classes are the same as over the gateway; only where their first reply goes
differs, behind lightbulb's ``Context._create_initial_response``. Other interactions (a
component's, a modal's) keep lightbulb's way: a reply through Discord's callback endpoint, after
which the HTTP answer is 202 with no body, as Discord documents (``answered_through_callback``);
one that nothing handles is answered at once in the HTTP answer (``_unhandled_answer``; over the
gateway, through the callback endpoint: ``answer_unhandled_through_callback``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import hikari
import lightbulb
from lightbulb.client import DEFAULT_EXECUTION_STEP_ORDER, RestEnabledClient
from lightbulb.internal.constants import INITIAL_RESPONSE_IDENTIFIER as INITIAL_RESPONSE

from entrypoints.bot.replies import NO_LONGER_WORKS
from entrypoints.bot.stale import AnswersStaleServerCommands

log = logging.getLogger("taskflow_link.bot")

Builder = hikari.api.InteractionMessageBuilder | hikari.api.InteractionDeferredBuilder

# When (the event loop's time) the HTTP answer to the interaction being handled is due: its
# arrival plus the answer deadline (set by ``HttpInteractions.dispatch``). The "thinking…"
# delay counts from the command's start, after the interaction's checks (a Redis call, up to
# the Redis timeout): a slow check must not let the fallback answer come first, while the
# command, which runs on its own, goes on and does what it was asked with its reply lost.
ANSWER_BY: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "taskflow_link_answer_by", default=None
)
# How long before that deadline "thinking…" is said at the latest.
THINKING_AHEAD = 0.1
# How long lightbulb's REST client waits for a reply before it cancels the handler.
LIGHTBULB_WAITS = 5.0

Answer = Builder | hikari.api.InteractionAutocompleteBuilder


def _unhandled_answer(interaction: hikari.PartialInteraction) -> Answer:
    """The answer to an interaction nothing handled, of a type Discord takes for it: no
    choices for an autocomplete (only type 8 is taken there); for a button or a modal's
    submit, a private message (type 4) saying it no longer works."""
    if isinstance(interaction, hikari.AutocompleteInteraction):
        return interaction.build_response(())
    message = hikari.impl.InteractionMessageBuilder(
        hikari.ResponseType.MESSAGE_CREATE, NO_LONGER_WORKS, flags=hikari.MessageFlag.EPHEMERAL
    )
    return message.set_mentions_everyone(False).set_user_mentions(False).set_role_mentions(False)


async def answer_unhandled_through_callback(interaction: hikari.PartialInteraction) -> None:
    """``_unhandled_answer``, sent through Discord's callback endpoint: over the gateway,
    where there is no HTTP answer to carry it. Without it Discord shows "This interaction
    failed" after 3 s."""
    answer = _unhandled_answer(interaction)
    rest = interaction.app.rest
    if isinstance(answer, hikari.api.InteractionAutocompleteBuilder):
        await rest.create_autocomplete_response(interaction.id, interaction.token, answer.choices)
    elif isinstance(answer, hikari.api.InteractionMessageBuilder):
        await rest.create_interaction_response(
            interaction.id,
            interaction.token,
            answer.type,
            answer.content,
            flags=answer.flags,
            mentions_everyone=answer.mentions_everyone,
            user_mentions=answer.user_mentions,
            role_mentions=answer.role_mentions,
        )


class InBandContext(lightbulb.Context):
    """A context whose first reply is handed to the HTTP answer instead of Discord's API."""

    __slots__ = ("_answer",)

    def __init__(self, *args: Any, answer: asyncio.Future[Builder], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._answer = answer

    async def defer(self, *, ephemeral: bool = False) -> None:
        """ "thinking…" in the HTTP answer, unless an answer went already (the client defers
        slow commands too). The reply then edits that message, as after the client's."""
        async with self._response_lock:
            if not self._initial_response_sent.is_set():
                self._defer(hikari.MessageFlag.EPHEMERAL if ephemeral else hikari.UNDEFINED)

    def _defer(self, flags: int | hikari.MessageFlag | hikari.UndefinedType) -> None:
        if self._answer.done():
            return
        deferred = self.interaction.build_deferred_response()
        if flags is not hikari.UNDEFINED:
            deferred.set_flags(flags)
        self._answer.set_result(deferred)

    async def _create_initial_response(
        self,
        response_type: hikari.ResponseType,
        content: hikari.UndefinedOr[Any] = hikari.UNDEFINED,
        *,
        flags: int | hikari.MessageFlag | hikari.UndefinedType = hikari.UNDEFINED,
        components: hikari.UndefinedOr[Sequence[hikari.api.ComponentBuilder]] = hikari.UNDEFINED,
        **kwargs: Any,
    ) -> hikari.Snowflakeish:
        if response_type is hikari.ResponseType.DEFERRED_MESSAGE_CREATE:
            self._defer(flags)  # nothing to edit when an answer went already
            return INITIAL_RESPONSE
        if self._answer.done():
            # Answered "deferred" already (the command took too long): the reply edits it.
            await self.interaction.edit_initial_response(
                content, components=components, **_edit_arguments(kwargs)
            )
            return INITIAL_RESPONSE
        message = self.interaction.build_response()
        if content is not hikari.UNDEFINED:
            message.set_content(content)
        if flags is not hikari.UNDEFINED:
            message.set_flags(flags)
        for component in components if components is not hikari.UNDEFINED else ():
            message.add_component(component)
        message.set_mentions_everyone(kwargs.get("mentions_everyone", hikari.UNDEFINED))
        message.set_user_mentions(kwargs.get("user_mentions", hikari.UNDEFINED))
        message.set_role_mentions(kwargs.get("role_mentions", hikari.UNDEFINED))
        self._answer.set_result(message)
        return INITIAL_RESPONSE


def client_arguments(
    default_enabled_guilds: Sequence[hikari.Snowflakeish], sync_commands: bool
) -> tuple[Any, ...]:
    """What ``lightbulb.client_from_app`` passes to a client's constructor, with its defaults
    (for the clients made here as subclasses; ``features=()`` goes by keyword)."""
    return (
        default_enabled_guilds,
        DEFAULT_EXECUTION_STEP_ORDER,
        hikari.Locale.EN_US,
        lightbulb.localization.localization_unsupported,
        True,  # delete_unknown_commands
        None,  # deferred_registration_callback
        (),  # hooks
        sync_commands,
    )


async def _edit_with(
    interaction: hikari.CommandInteraction, reply: hikari.api.InteractionMessageBuilder
) -> None:
    """A reply the HTTP answer missed, as an edit of that answer."""
    try:
        await interaction.edit_initial_response(
            reply.content,
            components=reply.components,
            mentions_everyone=reply.mentions_everyone,
            user_mentions=reply.user_mentions,
            role_mentions=reply.role_mentions,
        )
    except hikari.HTTPError as exc:
        status = getattr(exc, "status", "")
        code = getattr(exc, "code", "")
        log.error(
            "interaction %s: could not send its reply as an edit of the fallback answer: "
            "%s (HTTP %s, Discord code %s)",
            interaction.id,
            type(exc).__name__,
            status,
            code,
        )


def _edit_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    wanted = ("mentions_everyone", "user_mentions", "role_mentions")
    return {k: v for k, v in kwargs.items() if k in wanted}


class InBandRestClient(AnswersStaleServerCommands, RestEnabledClient):
    """lightbulb's client for HTTP interactions, answering commands in the HTTP response."""

    __slots__ = ("_answers", "_defer_after", "_drain_seconds", "_running", "_through_callback")

    def __init__(
        self,
        app: hikari.RESTBot,
        *,
        default_enabled_guilds: Sequence[hikari.Snowflakeish],
        sync_commands: bool,
        defer_after: float,
        drain_seconds: float = 10.0,
    ) -> None:
        """``drain_seconds``: how long ``stop`` waits for the commands under way."""
        # What lightbulb.client_from_app passes for a RESTBot, with its defaults.
        super().__init__(app, *client_arguments(default_enabled_guilds, sync_commands), features=())
        self._defer_after = defer_after
        self._drain_seconds = drain_seconds
        self._answers: dict[hikari.Snowflake, asyncio.Future[Builder]] = {}
        # Interactions whose first answer went through Discord's callback endpoint.
        self._through_callback: set[hikari.Snowflake] = set()
        # The commands running, their HTTP answer sent or not.
        self._running: set[asyncio.Task[Any]] = set()

    async def stop(self, *args: Any) -> None:
        """Lets the commands under way finish (for ``drain_seconds`` at most) before lightbulb's
        client stops: a command that answered "thinking…" runs on after its HTTP request
        ended, which is all the server waits for as it stops, and the REST client and the
        database close after this; its reply (or its /unlink) would be lost."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._drain_seconds
        while running := [t for t in self._running if not t.done()]:
            if (left := deadline - loop.time()) <= 0:
                break
            await asyncio.wait(running, timeout=left)
        await super().stop(*args)

    def answered_through_callback(self, interaction_id: hikari.Snowflakeish) -> bool:
        """Whether that interaction was answered through the callback endpoint (asked once,
        by the HTTP answer)."""
        snowflake = hikari.Snowflake(interaction_id)
        if snowflake in self._through_callback:
            self._through_callback.discard(snowflake)
            return True
        return False

    def _thinking_in(self) -> float:
        """How long a command may take before "thinking…" is said: ``defer_after``, or less
        when the HTTP answer is due sooner (see ``ANSWER_BY``)."""
        answer_by = ANSWER_BY.get()
        if answer_by is None:
            return self._defer_after
        left = answer_by - THINKING_AHEAD - asyncio.get_running_loop().time()
        return min(self._defer_after, max(left, 0.0))

    def _answered_without(
        self, interaction: hikari.CommandInteraction, answer: asyncio.Future[Builder]
    ) -> None:
        """The HTTP answer went without the command's first reply: its deadline came first
        (an event loop that stalled past it wakes with it and "thinking…" both due), and it
        says "something went wrong" (``HttpInteractions.dispatch``). The command runs on:
        its reply edits that message instead of being lost, and one it gave meanwhile,
        handed to an answer gone, is sent as that edit."""
        if not answer.done():
            # Done: whatever the command answers later edits the message (see the context).
            answer.set_result(interaction.build_deferred_response())
            return
        reply = answer.result()
        if isinstance(reply, hikari.api.InteractionMessageBuilder):
            task = self.safe_create_task(_edit_with(interaction, reply))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _handle_other_interaction(
        self, interaction: hikari.PartialInteraction
    ) -> AsyncGenerator[Answer | None, None]:
        """A component's, a modal's or an autocomplete interaction, lightbulb's way: its
        handler replies through the callback endpoint (the HTTP answer then is 202, see
        ``answered_through_callback``). One whose handler returned without a reply, or that
        no handler takes (a button on a message of an older version), is answered at once in
        the HTTP answer (see ``_unhandled_answer``): lightbulb waited 5 s for a reply that
        could not come, past Discord's 3 s."""
        sent = asyncio.Event()
        task = self.safe_create_task(self.handle_interaction_create(interaction, sent))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        replied = asyncio.ensure_future(sent.wait())
        try:
            await asyncio.wait(
                (replied, task), timeout=LIGHTBULB_WAITS, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            replied.cancel()
        if sent.is_set():
            self._through_callback.add(interaction.id)
            yield None
        elif not task.done():
            task.cancel("timed out before creating initial response")  # as lightbulb does
        elif not task.cancelled() and task.exception() is None:
            log.info(
                "interaction %s (type %s): nothing of this version handles it; answered so",
                interaction.id,
                int(interaction.type),
            )
            yield _unhandled_answer(interaction)
        # (a handler that failed: no answer here, the HTTP answer says something went wrong)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def build_command_context(
        self,
        interaction: hikari.CommandInteraction,
        options: Sequence[hikari.CommandInteractionOption],
        command_cls: type[lightbulb.commands.CommandBase],
        initial_response_sent: asyncio.Event,
    ) -> lightbulb.Context:
        answer = self._answers.get(interaction.id)
        if answer is None:  # not from our listener (cannot happen, but stay correct)
            return super().build_command_context(
                interaction, options, command_cls, initial_response_sent
            )
        return InBandContext(
            client=self,
            interaction=interaction,
            options=options,
            command=command_cls(),
            initial_response_sent=initial_response_sent,
            answer=answer,
        )

    async def handle_rest_interaction(  # type: ignore[override]
        self, interaction: hikari.PartialInteraction
    ) -> AsyncGenerator[Answer | None, None]:
        if not isinstance(interaction, hikari.CommandInteraction):
            async for reply in self._handle_other_interaction(interaction):
                yield reply
            return
        answer: asyncio.Future[Builder] = asyncio.get_running_loop().create_future()
        self._answers[interaction.id] = answer
        sent = asyncio.Event()
        task = self.safe_create_task(self.handle_interaction_create(interaction, sent))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        handed = False
        try:
            await asyncio.wait(
                (answer, task), timeout=self._thinking_in(), return_when=asyncio.FIRST_COMPLETED
            )
            if not answer.done() and not task.done():
                # Slow: say "thinking…" now, privately; the reply edits it when it comes.
                deferred = interaction.build_deferred_response().set_flags(
                    hikari.MessageFlag.EPHEMERAL
                )
                answer.set_result(deferred)
            handed = True
            # None: the command produced no reply at all (hikari answers 204).
            yield answer.result() if answer.done() else None
        finally:
            self._answers.pop(interaction.id, None)
            if not handed:
                self._answered_without(interaction, answer)
        with contextlib.suppress(asyncio.CancelledError):
            await task
