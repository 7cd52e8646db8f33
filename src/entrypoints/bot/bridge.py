"""The bridge from the dependency-injector container to lightbulb's dependency injection.

The container stays the only composition root: lightbulb's registry gets factories that ask the
container for each use case, never adapters of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import hikari
import lightbulb
from linkd import Lifetime

from domain import errors
from domain import use_cases as uc
from entrypoints.bot.context import Deadline, NotRun, respond
from entrypoints.bot.replies import Replies
from entrypoints.container import Container

T = TypeVar("T")
log = logging.getLogger("taskflow_link.bot")


def _from_container(provider: Callable[[], T]) -> Callable[[], T]:
    def make() -> T:
        return provider()

    return make


def register_services(client: lightbulb.Client, container: Container) -> None:
    """Make the commands' dependencies resolvable; call before the first command runs."""
    settings = container.settings()
    replies = Replies(str(settings.public_url))
    registry = client.di.registry_for(lightbulb.di.Contexts.DEFAULT)
    registry.register_value(Replies, replies)
    deadline = Deadline(
        settings.discord_reply_deadline_seconds,
        defer_after=settings.discord_defer_after_seconds,
        deferred=settings.discord_deferred_deadline_seconds,
        clock=container.interaction_clock(),
    )
    registry.register_value(Deadline, deadline)
    use_cases: list[tuple[type[Any], Callable[[], Any]]] = [
        (uc.IssueLinkTicket, container.issue_link_ticket),
        (uc.UnlinkDiscord, container.unlink_discord),
        (uc.WhoAmI, container.who_am_i),
    ]
    for kind, provider in use_cases:
        registry.register_factory(kind, _from_container(provider), lifetime=Lifetime.PROTOTYPE)

    @client.error_handler
    async def reply_to_failure(
        failure: lightbulb.exceptions.ExecutionPipelineFailedException,
    ) -> bool:
        cause: BaseException = failure.causes[0] if failure.causes else failure
        command = failure.context.command_data.qualified_name
        if isinstance(cause, NotRun):  # Discord takes no answer to it any more
            log.warning("%s", cause)
            return True
        if isinstance(cause, errors.DomainError) and not isinstance(cause, errors.StorageError):
            log.info("/%s refused: %s", command, cause.code)
        elif isinstance(cause, errors.StorageContention):  # another request won a lock
            log.warning("/%s: transaction rolled back by the database", command)
        elif isinstance(cause, hikari.HTTPError):
            log.error("/%s failed: %s", command, describe_http_error(cause))
        else:
            log.error("/%s failed", command, exc_info=(type(cause), cause, cause.__traceback__))
        try:
            await respond(failure.context, replies.error(cause))
        except hikari.HTTPError as exc:
            log.error(
                "/%s: could not send the error reply either: %s", command, describe_http_error(exc)
            )
        except Exception:
            log.exception("/%s: could not send the error reply either", command)
        return True


def describe_http_error(error: hikari.HTTPError) -> str:
    """What went wrong talking to Discord, without the URL: interaction callback and webhook
    URLs carry the interaction's token, which can edit the reply (and its /link ticket).
    hikari waits out short rate limits itself; a longer one is said to be one."""
    if isinstance(error, hikari.RateLimitTooLongError):
        scope = "global" if error.is_global else "per route"
        return f"rate limited by Discord (HTTP 429, {scope}): retry after {error.retry_after} s"
    status = getattr(error, "status", "")
    code = getattr(error, "code", "")
    return f"{type(error).__name__} (HTTP {status}, Discord code {code})"
