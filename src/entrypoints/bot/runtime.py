"""Running the commands: the gateway bot (``taskflow-link bot``), HTTP interactions hosted by
the web app (``POST /interactions``), and command sync (``taskflow-link bot sync``)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import hikari
import lightbulb
import nacl.exceptions
import nacl.signing

from adapters.discord_oauth import HttpFailure
from domain.model import ROLE_METADATA
from entrypoints.agreement import check_agreement
from entrypoints.bot.bridge import register_services
from entrypoints.bot.claims import ClaimingGatewayClient
from entrypoints.bot.commands import command_loader
from entrypoints.bot.inband import ANSWER_BY, InBandRestClient, client_arguments
from entrypoints.bot.late import LateInteractions
from entrypoints.bot.replies import SOMETHING_WENT_WRONG
from entrypoints.bot.signature_headers import malformed_signature
from entrypoints.container import Container, close_resources, discord_proxy
from entrypoints.email_worker import EmailWorker
from entrypoints.instances import gateway_kind, instance_watch
from entrypoints.logs import install_payload_guard
from entrypoints.purge_worker import PurgeWorker
from entrypoints.queue_worker import role_workers, stop_together
from entrypoints.schema import schema_check_at_start
from entrypoints.settings import ShardPlan
from entrypoints.webhook_worker import WebhookWorker

log = logging.getLogger("taskflow_link.bot")

EPHEMERAL_FLAG = 64
CHANNEL_MESSAGE_WITH_SOURCE = 4


@dataclass(frozen=True, slots=True)
class InteractionAnswer:
    status: int
    body: bytes
    content_type: str


# After a reply through Discord's callback endpoint: "respond to the original HTTP request
# with a 202 and no body".
ANSWERED_THROUGH_CALLBACK = InteractionAnswer(202, b"", "text/plain")
FALLBACK_ANSWER = InteractionAnswer(
    200,
    json.dumps(
        {
            "type": CHANNEL_MESSAGE_WITH_SOURCE,
            "data": {
                "content": SOMETHING_WENT_WRONG,
                "flags": EPHEMERAL_FLAG,
                "allowed_mentions": {"parse": []},
            },
        }
    ).encode(),
    "application/json",
)


def _token(container: Container) -> str:
    settings = container.settings()
    settings.require("discord_bot_token")
    assert settings.discord_bot_token  # noqa: S101 - checked by require()
    return settings.discord_bot_token.get_secret_value()


def _rest_url(container: Container) -> str:
    # hikari wants exactly ".../api/v10", without a trailing slash.
    return str(container.settings().discord_api_url).rstrip("/")


def _proxy(container: Container) -> hikari.impl.ProxySettings:
    """The environment's proxy for Discord's API (checked when the container was built), for
    hikari too: its default ignores the environment."""
    return hikari.impl.ProxySettings(url=discord_proxy(container.settings()))


def _start_rest(bot: hikari.RESTBot) -> None:
    """Open the bot's REST client without starting hikari's own web server."""
    rest = bot.rest
    assert isinstance(rest, hikari.impl.RESTClientImpl)  # noqa: S101 - RESTBot's own client
    rest.start()


async def prepare_client(
    app: hikari.RESTBot | hikari.GatewayBot, container: Container, *, sync: bool | None = None
) -> lightbulb.Client:
    """A lightbulb client with the commands and their dependencies; not started yet."""
    settings = container.settings()
    sync_commands = settings.discord_sync_commands if sync is None else sync
    client: lightbulb.Client
    if isinstance(app, hikari.RESTBot):  # HTTP interactions: replies in the HTTP response
        client = InBandRestClient(
            app,
            default_enabled_guilds=settings.command_guild_ids,
            sync_commands=sync_commands,
            defer_after=settings.discord_defer_after_seconds,
            drain_seconds=settings.shutdown_timeout_seconds,
        )
    else:  # the gateway: one copy of the bot runs each interaction (see ``claims``)
        client = ClaimingGatewayClient(
            app,
            *client_arguments(settings.command_guild_ids, sync_commands),
            features=(),
            claims=container.shared_state().replay_guard,
            late=LateInteractions(
                settings.discord_late_interaction_seconds,
                container.interaction_clock(),
                container.metrics(),
                via="gateway",
            ),
            drain_seconds=settings.shutdown_timeout_seconds,
        )
    register_services(client, container)
    loader = command_loader(server_commands=bool(settings.command_guild_ids))
    await loader.add_to_client(client)
    return client


async def start_client(client: lightbulb.Client) -> None:
    """Start, syncing commands if configured. A failed sync is logged, not fatal: the commands
    registered earlier keep working and the next start tries again."""
    try:
        await client.start()
    except hikari.UnauthorizedError:
        # Nothing to trace: the token is wrong, and what needs it next says so too (the
        # gateway's connection; for HTTP interactions, edits and follow-ups).
        log.error("Could not sync the slash commands with Discord: it refused the bot token (401)")
        client.sync_commands = False
        await client.start()
    except hikari.HTTPError as exc:
        if isinstance(exc, hikari.HTTPResponseError):  # Discord answered: what it said counts
            log.exception("Could not sync the slash commands with Discord; serving without syncing")
        else:  # nothing to trace: no way there (an address, a network), said in one line
            log.error(
                "Could not reach Discord to sync the slash commands (%s); serving without "
                "syncing: check TASKFLOW_LINK_DISCORD_API_URL and that this machine reaches it",
                exc,
            )
        client.sync_commands = False
        await client.start()
    except Exception:
        log.exception("Could not sync the slash commands with Discord; serving without syncing")
        client.sync_commands = False
        await client.start()


@dataclass(frozen=True)
class Verified:
    """An interaction request whose signature, age and novelty were checked (only ``verify``
    makes one)."""

    body: bytes
    signature: bytes
    timestamp: bytes


class _CheckedAlready:
    """hikari verifies every request's signature again before handling it; ``verify`` did,
    and only a ``Verified`` request reaches hikari, so its second Ed25519 check (a fifth of a
    command's CPU) is skipped."""

    def verify(self, _message: bytes, _signature: bytes) -> bytes:
        return _message


def _skip_second_signature_check(bot: hikari.RESTBot) -> None:
    server = getattr(bot, "_server", None)
    if server is not None and getattr(server, "_public_key", None) is not None:
        server._public_key = _CheckedAlready()


def _interaction_id(body: bytes) -> str | None:
    """The interaction's id, from the signed body (a snowflake: up to 20 digits)."""
    try:
        found = json.loads(body).get("id")
    except (ValueError, AttributeError, RecursionError):  # nested too deep: hikari refuses it
        return None
    return _snowflake(found)


def _snowflake(value: object) -> str | None:
    if isinstance(value, str) and value.isascii() and value.isdecimal() and len(value) <= 20:
        return value
    return None


PING = 1


def _late_refusal(body: bytes, late: LateInteractions) -> str | None:
    """Why a signed interaction that came too late is not run (see ``late``); ``None`` for
    one in time, a PING (nothing to run), or a body hikari refuses anyway."""
    try:
        found = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(found, dict) or not isinstance(found.get("type"), int):
        return None
    interaction_id = _snowflake(found.get("id"))
    if found["type"] == PING or interaction_id is None:
        return None
    data = found.get("data")
    return late.refusal(int(interaction_id), data.get("name") if isinstance(data, dict) else None)


def _replay_key(body: bytes, signature: str) -> str:
    """Discord gives every interaction its own id (in the signed body); a body without one
    (never sent by Discord) is known by its signature."""
    found = _interaction_id(body)
    return f"interaction:{found}" if found else f"signature:{signature.lower()}"


class HttpInteractions:
    """Discord's HTTP interactions, answered by hikari's ``RESTBot`` inside our web app.

    Discord signs each request (Ed25519 over timestamp + body). Requests that are unsigned,
    badly signed, replayed, or that came after Discord stopped waiting for their answer are
    refused before hikari sees them.
    """

    def __init__(self, container: Container) -> None:
        settings = container.settings()
        settings.require("discord_bot_token", "discord_public_key")
        assert settings.discord_public_key  # noqa: S101 - checked by require()
        self._container = container
        self._public_key = settings.discord_public_key
        self._verify_key = nacl.signing.VerifyKey(bytes.fromhex(settings.discord_public_key))
        self._max_age = settings.discord_interaction_max_age_seconds
        # Discord shows "the application did not respond" after 3 s, network included.
        self._answer_within = settings.discord_answer_deadline_seconds
        # Interactions seen within twice the accepted age: a captured request cannot be
        # replayed while its timestamp is still fresh, to this instance or (with Redis) to any.
        self._replays = container.shared_state().replay_guard
        # Signed and fresh by its timestamp, yet later than Discord waits for an answer.
        self._late = LateInteractions(
            settings.discord_late_interaction_seconds,
            container.interaction_clock(),
            container.metrics(),
            via="http",
        )
        self._bot: hikari.RESTBot | None = None
        self._client: lightbulb.Client | None = None

    async def start(self) -> None:
        install_payload_guard()
        bot = hikari.RESTBot(
            _token(self._container),
            "Bot",
            public_key=self._public_key,
            rest_url=_rest_url(self._container),
            proxy_settings=_proxy(self._container),
            banner=None,
            logs=None,
            suppress_optimization_warning=True,
        )
        _start_rest(bot)
        _skip_second_signature_check(bot)
        self._bot = bot
        self._client = await prepare_client(bot, self._container)
        await start_client(self._client)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.stop()
        if self._bot is not None:
            await self._bot.rest.close()

    async def verify(
        self, body: bytes, signature: str | None, timestamp: str | None, *, now: float | None = None
    ) -> Verified | str:
        """The request, checked (``Verified``), or why it is refused (401): unsigned, badly
        signed, stale, already received (by this instance, or by any with Redis), or an
        interaction that came after Discord stopped waiting for its answer (see ``late``)."""
        if (malformed := malformed_signature(signature, timestamp)) is not None:
            return malformed
        assert signature is not None  # noqa: S101 - checked by malformed_signature()
        assert timestamp is not None  # noqa: S101 - checked by malformed_signature()
        try:
            signature_bytes = bytes.fromhex(signature)
            sent_at = int(timestamp)
            self._verify_key.verify(timestamp.encode() + body, signature_bytes)
        except (ValueError, nacl.exceptions.BadSignatureError):
            return "Invalid request signature."
        now = time.time() if now is None else now
        if abs(now - sent_at) > self._max_age:
            return "The request's timestamp is too old (or in the future); refusing a replay."
        key = _replay_key(body, signature)
        if not await self._replays.first_time(key, 2 * self._max_age, sent_at):
            return "This request was already received; refusing a replay."
        # After the replay guard: a late interaction is refused as late once, its copies as
        # replays.
        if (late := _late_refusal(body, self._late)) is not None:
            return late
        return Verified(body, signature_bytes, timestamp.encode())

    async def dispatch(
        self, request: Verified, *, arrived: float | None = None
    ) -> InteractionAnswer:
        """The answer to a verified request: the command's reply itself (type 4), or
        "thinking…" (type 5) when it is slow (see ``InBandRestClient``). When no reply came
        at all (an unknown command, a failure even the error path could not answer), a
        "something went wrong" reply, still inside Discord's 3 seconds: the answer deadline
        counts from ``arrived`` (the loop's time the request came in), so the time its checks
        took (the replay guard's Redis call, up to the Redis timeout) comes out of it."""
        if self._bot is None:
            raise RuntimeError("HTTP interactions were not started")
        loop = asyncio.get_running_loop()
        answer_by = (loop.time() if arrived is None else arrived) + self._answer_within
        if loop.time() >= answer_by:
            # Its checks used the time up: no command is started, that would go on after
            # this answer (its reply lost) and do what it was asked meanwhile.
            log.error(
                "no reply to an interaction within %s s: its checks took that long (Redis?)",
                self._answer_within,
            )
            return FALLBACK_ANSWER
        answering = ANSWER_BY.set(answer_by)  # "thinking…" comes before it (see there)
        try:
            async with asyncio.timeout_at(answer_by):
                answer = await self._bot.on_interaction(
                    request.body, request.signature, request.timestamp
                )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled ourselves (shutdown)
            log.error("an interaction's handler was cancelled before replying")
            return FALLBACK_ANSWER
        except TimeoutError:
            log.error("no reply to an interaction within %s s", self._answer_within)
            return FALLBACK_ANSWER
        except Exception as exc:
            log.error("an interaction failed: %s", type(exc).__name__)
            return FALLBACK_ANSWER
        finally:
            ANSWER_BY.reset(answering)
        if answer.status_code >= 500:
            log.error("hikari could not handle an interaction (HTTP %s)", answer.status_code)
            return FALLBACK_ANSWER
        if answer.status_code == 204:  # no reply in the HTTP response: one went elsewhere?
            found = _interaction_id(request.body)
            client = self._client
            if (
                found is not None
                and isinstance(client, InBandRestClient)
                and client.answered_through_callback(int(found))
            ):
                return ANSWERED_THROUGH_CALLBACK
            log.error("no command answered an interaction (a command this version lacks?)")
            return FALLBACK_ANSWER
        return InteractionAnswer(
            answer.status_code, answer.payload or b"", answer.content_type or "text/plain"
        )


async def warn_of_interactions_endpoint(container: Container) -> None:
    """Discord sends no interaction over the gateway while the application has an
    Interactions Endpoint URL: it POSTs each one to that URL instead, and the gateway bot
    silently never answers. Says so at start, naming the setting. Read from
    ``GET /applications/@me`` with our own client: hikari 2.6's application has no
    ``interactions_endpoint_url``. A failed read is logged and changes nothing."""
    url = f"{_rest_url(container)}/applications/@me"
    headers = {"Authorization": f"Bot {_token(container)}"}
    try:
        answer = await container.discord_http().request("application", "GET", url, headers=headers)
        found = answer.json() if answer.status_code == 200 else None
    except (HttpFailure, ValueError) as exc:
        found, why = None, type(exc).__name__
    except Exception:  # a bug: said, and the bot serves on
        log.exception("Checking the Discord application's Interactions Endpoint URL failed")
        return
    else:
        why = f"HTTP {answer.status_code}"
    if not isinstance(found, dict):
        log.warning(
            "Could not read the Discord application's settings (%s), so not checked whether "
            "it has an Interactions Endpoint URL (with one, Discord sends this bot no command)",
            why,
        )
        return
    endpoint = found.get("interactions_endpoint_url")
    if isinstance(endpoint, str) and endpoint:
        log.warning(
            "The Discord application has an Interactions Endpoint URL (%s): Discord sends its "
            "slash commands there and none over the gateway, so this bot never receives one. "
            "To use the gateway bot, clear Interactions Endpoint URL on the application's "
            "General Information page in the Discord Developer Portal; to answer over HTTP "
            "instead, stop this bot and let `taskflow-link serve` answer (with "
            "TASKFLOW_LINK_DISCORD_PUBLIC_KEY).",
            endpoint,
        )


@dataclass
class GatewayRunner:
    """The gateway bot with the commands; ``run()`` connects and serves until stopped,
    ``start()`` connects on the running event loop. ``serving`` is true once the commands
    are answered (before any shard connects); ``ready`` is set once the shards are connected
    too. ``shards``: the shards this copy runs (``None``: every shard Discord recommends)."""

    bot: hikari.GatewayBot
    ready: asyncio.Event
    shards: ShardPlan | None = None
    serving: bool = False
    failed: bool = False

    def run(self) -> None:
        self.bot.run(check_for_updates=False, close_loop=True, **self._shard_arguments())

    async def start(self) -> None:
        await self.bot.start(check_for_updates=False, **self._shard_arguments())

    def _shard_arguments(self) -> dict[str, Any]:
        if self.shards is None:
            return {}
        return {"shard_ids": self.shards.ids, "shard_count": self.shards.count}


class _Background(Protocol):
    """What the gateway bot runs beside its commands: the workers, the purge, the instance
    watch."""

    def start(self) -> None: ...

    async def stop(self) -> None: ...


def gateway_background(container: Container) -> list[_Background]:
    """What the gateway bot starts once it is up, and stops when it stops."""
    shards = container.settings().shards
    background: list[_Background | None] = [
        EmailWorker(container),  # sends the notices /unlink queues
        WebhookWorker(container),  # and its link.deleted webhooks
        # Removes the role for linked members that /unlink queues (when one is configured);
        # with Linked Roles, Discord hears "not linked" after an /unlink (at once).
        *role_workers(container),
        # Deletes expired rows, as `purge-expired` does (one purge at a time across instances).
        PurgeWorker(container) if PurgeWorker.wanted(container) else None,
        # Tells of another copy receiving the same interactions that shares no Redis with it.
        instance_watch(container, gateway_kind(shards)),
        schema_check_at_start(container, log),  # a schema not this version's
    ]
    return [task for task in background if task is not None]


def build_gateway_bot(container: Container) -> GatewayRunner:
    """The gateway bot as ``taskflow-link bot`` runs it. A sharded copy (several copies each
    run some of the shards) does not register the commands at start: each copy would put its
    own version's commands (during a rolling upgrade, an old copy the old ones);
    ``taskflow-link bot sync`` does it once per release instead."""
    shards = container.settings().shards
    bot = hikari.GatewayBot(
        _token(container),
        intents=hikari.Intents.NONE,  # slash commands need no gateway events besides interactions
        rest_url=_rest_url(container),
        proxy_settings=_proxy(container),
        banner=None,
        logs=None,
        suppress_optimization_warning=True,
    )
    runner = GatewayRunner(bot, asyncio.Event(), shards)
    started: dict[str, lightbulb.Client] = {}
    running = gateway_background(container)
    checks: list[asyncio.Task[None]] = []

    async def on_starting(_: hikari.StartingEvent) -> None:
        # Everything inside the try: hikari only logs what a listener raises, and connects
        # the shards anyway (on_started then stops a bot that cannot serve its commands).
        try:
            install_payload_guard()
            # Beside the start, not before it: a slow Discord does not hold the shards.
            checks.append(asyncio.create_task(warn_of_interactions_endpoint(container)))
            # Its buttons and its worker's emails link to its public URL: the web's too?
            await check_agreement(container, log, web=False, answers_interactions=False)
            if shards is not None:
                log.info(
                    "sharded bot (%s): not registering the slash commands at start; run "
                    "`taskflow-link bot sync` once per release",
                    shards,
                )
            sync = False if shards is not None else None
            started["client"] = await prepare_client(bot, container, sync=sync)
            # Started here, not at StartedEvent as lightbulb suggests: hikari waits for this
            # listener before it connects a shard (REST is up already), so the commands are
            # answered from a shard's first interaction. Started once every shard is READY,
            # the client ignored what a shard received in between: "The application did not
            # respond" to whoever ran a command while the bot came up.
            await start_client(started["client"])
        except Exception:
            log.critical("The bot cannot serve its commands; stopping", exc_info=True)
            runner.failed = True
            return
        runner.serving = True

    async def on_started(_: hikari.StartedEvent) -> None:
        if runner.failed or not runner.serving:
            runner.failed = True
            await bot.close()  # connected but unable to serve commands: not healthy
            return
        for task in running:
            task.start()
        runner.ready.set()
        log.info(
            "bot ready: serving /link, /unlink and /whoami over the gateway%s",
            f" as {shards}" if shards else "",
        )

    async def on_stopping(_: hikari.StoppingEvent) -> None:
        runner.ready.clear()
        runner.serving = False
        for check in checks:
            check.cancel()
        # Side by side: the workers' calls under way finish beside the commands under way.
        await stop_together(
            *(task.stop() for task in running),
            *([started["client"].stop()] if "client" in started else []),
        )
        await close_resources(container)

    bot.subscribe(hikari.StartingEvent, on_starting)
    bot.subscribe(hikari.StartedEvent, on_started)
    bot.subscribe(hikari.StoppingEvent, on_stopping)
    return runner


def _metadata_records() -> list[hikari.ApplicationRoleConnectionMetadataRecord]:
    return [
        hikari.ApplicationRoleConnectionMetadataRecord(
            type=hikari.ApplicationRoleConnectionMetadataRecordType(field.type.value),
            key=field.key,
            name=field.name,
            description=field.description,
            name_localizations={},
            description_localizations={},
        )
        for field in ROLE_METADATA
    ]


async def register_role_metadata(container: Container) -> list[str]:
    """Linked Roles: register the role connection metadata records with Discord (they replace
    whatever the application had; at most 5). Returns the keys Discord then holds."""
    bot = hikari.RESTBot(
        _token(container),
        "Bot",
        rest_url=_rest_url(container),
        proxy_settings=_proxy(container),
        banner=None,
        logs=None,
        suppress_optimization_warning=True,
    )
    _start_rest(bot)
    try:
        application = await bot.rest.fetch_application()
        records = await bot.rest.set_application_role_connection_metadata_records(
            application, _metadata_records()
        )
        return [record.key for record in records]
    finally:
        await bot.rest.close()


async def sync_commands(container: Container) -> dict[str, list[str]]:
    """Register the slash commands with Discord now. Returns what Discord then lists, by
    scope ("global" or "server ID")."""
    bot = hikari.RESTBot(
        _token(container),
        "Bot",
        rest_url=_rest_url(container),
        proxy_settings=_proxy(container),
        banner=None,
        logs=None,
        suppress_optimization_warning=True,
    )
    _start_rest(bot)
    try:
        client = await prepare_client(bot, container, sync=True)
        await client.start()
        await client.stop()
        application = await bot.rest.fetch_application()
        listed: dict[str, list[str]] = {}
        for guild in container.settings().command_guild_ids or (None,):
            found = await bot.rest.fetch_application_commands(
                application, guild=hikari.UNDEFINED if guild is None else guild
            )
            listed["global" if guild is None else f"server {guild}"] = sorted(c.name for c in found)
        return listed
    finally:
        await bot.rest.close()
