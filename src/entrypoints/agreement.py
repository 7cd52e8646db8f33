"""Settings every process of a deployment must share, compared at start through Redis: each web
instance, and each copy of the gateway bot, which builds its /link buttons and the links of
the emails its worker sends (any queued email it claims) from its public URL, and queues the
role changes of the /unlink it runs by its own settings. (The webhook URLs, which every
process needs alike too, are compared through the database: ``entrypoints.instances``.)"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from entrypoints.container import Container

# What a request started on one instance needs the next to share, and what breaks otherwise.
AGREED = {
    "TASKFLOW_LINK_SECRET_KEY": "forms one instance serves are refused by the other (403, "
    '"This form expired": CSRF tokens are signed with it), a Discord sign-in started on one '
    "fails on the other (its PKCE verifier is derived from it) and API keys' seals do not "
    "hold there",
    "TASKFLOW_LINK_PUBLIC_URL": "a Discord sign-in started on one fails on the other (Discord "
    "refuses a token exchange naming another redirect URI than the sign-in did), and /link "
    "buttons and emailed links point where each process believes people reach the service "
    "(the gateway bot's, and the emails any process's worker sends)",
    "TASKFLOW_LINK_DISCORD_INTERACTION_MAX_AGE_SECONDS": "an interaction replayed to the "
    "instance that accepts older ones, after the other's replay guard forgot it (it keeps "
    "an interaction for twice its own age), is answered again",
    "TASKFLOW_LINK_DISCORD_CLIENT_ID": "a Discord sign-in started on one fails on the other "
    "(Discord refuses a code issued to another application)",
    "TASKFLOW_LINK_EMAIL_LINKING": "Sign in with Discord links an account by its email "
    "through one and not through the other",
    "TASKFLOW_LINK_EMAIL_BACKEND": "every process's worker sends whichever queued email it "
    "claims: one with the outbox keeps its share in its memory, never delivered",
    "TASKFLOW_LINK_DISCORD_LINKED_ROLES": "a link or unlink done through one that lacks a "
    "role neither gives the member that role nor takes it away",
}


async def check_agreement(
    container: Container, log: logging.Logger, *, web: bool, answers_interactions: bool
) -> None:
    """Says at start when the processes of one deployment disagree on a setting they must
    share (they find each other through Redis; nothing is compared without it). The key is
    compared by an HMAC of it, never stored. ``answers_interactions``:
    this process answers HTTP interactions (a web instance with Discord's public key), and so
    keeps them in the shared replay guard for twice its own maximum age. ``web``: this
    process serves the web app (Discord sign-ins); a gateway bot has no say on those."""
    settings = container.settings()
    secret = settings.secret_key.get_secret_value().encode()
    key = hmac.new(secret, b"taskflow-link: one key per deployment", "sha256")
    agreed = {
        "TASKFLOW_LINK_SECRET_KEY": key.hexdigest()[:32],
        # As the service reads it (its links and redirect URI drop a trailing "/"): a URL
        # that differs only by one is the same URL. A root keeps the "/" pydantic gives it.
        "TASKFLOW_LINK_PUBLIC_URL": str(settings.public_url).rstrip("/") + "/",
        "TASKFLOW_LINK_EMAIL_BACKEND": settings.email_backend,
        "TASKFLOW_LINK_DISCORD_LINKED_ROLES": ",".join(
            sorted(f"{role.guild_id.value}:{role.role_id.value}" for role in settings.linked_roles)
        ),
    }
    if web:
        agreed["TASKFLOW_LINK_DISCORD_CLIENT_ID"] = settings.discord_client_id or ""
        agreed["TASKFLOW_LINK_EMAIL_LINKING"] = settings.email_linking.value
    if answers_interactions:
        agreed["TASKFLOW_LINK_DISCORD_INTERACTION_MAX_AGE_SECONDS"] = str(
            settings.discord_interaction_max_age_seconds
        )
    policy = await container.shared_state().eviction_policy()
    if policy is not None:
        log.error(
            "Redis' maxmemory-policy is %s: when it fills, it drops this service's keys before "
            "they expire, silently: interaction ids (a replayed interaction is accepted once "
            "more) and the counts of rate limits and sign-in throttles (a budget starts again). "
            "Give it maxmemory-policy noeviction (Redis' default) and room: a full Redis then "
            "refuses writes, which /readyz reports.",
            policy,
        )
    for name in await container.shared_state().differences(agreed):
        log.error(
            "%s differs from the instance of this deployment (the same Redis and "
            "TASKFLOW_LINK_REDIS_KEY_PREFIX) that started before this one, within a day: %s. "
            "Every instance needs the same value (after changing it on purpose, each instance "
            "started just after one with the other value says so, until those are gone).",
            name,
            AGREED[name],
        )
