"""Webhooks for other services (Standard Webhooks): what an event says, where it goes, and the
rules of delivering it. Pure: values in, values out.

Payloads are thin (ids and times, never an email address or a secret): a receiver that wants
more asks the JSON API. The body is made once, when the change happens, and every attempt
sends exactly those bytes under the same ``webhook-id``, so a receiver can drop duplicates.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.model import Account, Link


class WebhookEventType(enum.StrEnum):
    LINK_CREATED = "link.created"
    LINK_DELETED = "link.deleted"
    ACCOUNT_CREATED = "account.created"


class WebhookState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"  # the endpoint answered 2xx
    FAILED = "failed"  # given up after the last attempt
    GONE = "gone"  # the endpoint answered 410 Gone: it wants nothing more from us


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A receiver, named by the SHA-256 of its URL (``key``): rows refer to it by that, so
    no URL, which may carry a token in its path or query, is ever stored or shown. The URL
    stays in the settings, and only the configured endpoints are ever sent anything."""

    key: str
    host: str


def endpoints_digest(endpoints: Sequence[WebhookEndpoint]) -> str:
    """A digest of a set of endpoints (of their keys, the names the queue already stores), in
    any order: what a process announces of the webhook URLs its settings name, so that
    processes compare them without showing or storing a URL."""
    keys = "\n".join(sorted({e.key for e in endpoints}))
    return hashlib.sha256(keys.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: uuid.UUID
    # A newer release's type is kept as its text: its payload goes out as that release wrote
    # it (an older instance during a rolling upgrade, or after a rollback, delivers it in its
    # endpoint's order rather than stopping every endpoint's queue on a type it cannot read).
    type: WebhookEventType | str
    occurred_at: datetime
    payload: str  # the exact body, every attempt

    @property
    def message_id(self) -> str:
        """The ``webhook-id`` header: the same for every attempt and every endpoint."""
        return f"msg_{self.id.hex}"


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One event for one endpoint: queued in the transaction of the change, then attempted
    until the endpoint answers 2xx (delivered) or 410 (gone), or the attempts run out."""

    id: uuid.UUID
    event: WebhookEvent
    endpoint: str  # WebhookEndpoint.key
    host: str
    created_at: datetime
    next_attempt_at: datetime
    # A newer release's state (a rolling upgrade, a rollback) as its text: not one this
    # version claims, sends or sends again (``webhooks retry``).
    state: WebhookState | str = WebhookState.PENDING
    attempts: int = 0
    last_attempt_at: datetime | None = None
    finished_at: datetime | None = None
    last_error: str | None = None  # a short code (``http_500``, ``timeout``), never a body


@dataclass(frozen=True, slots=True)
class GoneEndpoint:
    """An endpoint that answered 410 Gone: nothing is sent to it until an operator runs
    ``taskflow-link webhooks retry``. Its deliveries wait meanwhile (none is lost)."""

    endpoint: str
    host: str
    since: datetime


@dataclass(frozen=True, slots=True)
class WebhookEndpointSummary:
    """What the queue holds for one endpoint (``taskflow-link webhooks status``)."""

    endpoint: str
    host: str
    # A newer release's state (a rolling upgrade, a rollback) counted under its text.
    counts: dict[WebhookState | str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: datetime | None = None  # the last attempt of the delivery that met it
    # That attempt delivered it: the error came at an earlier one, whose time is not kept.
    delivered_since_error: bool = False


# -- payloads ---------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _event(kind: WebhookEventType, now: datetime, data: dict[str, str]) -> WebhookEvent:
    body = {"type": kind.value, "timestamp": _iso(now), "data": data}
    # Minified, and made once: the bytes signed are the bytes sent, on every attempt.
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return WebhookEvent(uuid.uuid4(), kind, now, payload)


def link_created(link: Link, *, via: str) -> WebhookEvent:
    return _event(
        WebhookEventType.LINK_CREATED,
        link.linked_at,
        {
            "discord_id": str(link.discord_id),
            "taskflow_user_id": str(link.account_id),
            "linked_at": _iso(link.linked_at),
            "via": via,
        },
    )


def link_deleted(link: Link, *, now: datetime, via: str) -> WebhookEvent:
    return _event(
        WebhookEventType.LINK_DELETED,
        now,
        {
            "discord_id": str(link.discord_id),
            "taskflow_user_id": str(link.account_id),
            "unlinked_at": _iso(now),
            "via": via,
        },
    )


def account_created(account: Account, *, via: str) -> WebhookEvent:
    return _event(
        WebhookEventType.ACCOUNT_CREATED,
        account.created_at,
        {
            "taskflow_user_id": str(account.id),
            "created_at": _iso(account.created_at),
            "via": via,
        },
    )


# -- delivery rules ---------------------------------------------------------------------------

# After a failed attempt, wait this long before the next (the Standard Webhooks example
# schedule: about three days in all), then give up.
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
# Each delay grows by up to this fraction, so that deliveries failed together (an endpoint
# that was down) do not all come back at the same second.
JITTER = 0.1
HTTP_GONE = 410


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    GONE = "gone"
    RETRY = "retry"


def outcome_of(status: int) -> tuple[Outcome, str | None]:
    """What an endpoint's HTTP status means, and the error to record. 2xx: delivered; 410:
    the endpoint wants nothing more; anything else (3xx included: redirects are never
    followed) is a failure worth another attempt."""
    if 200 <= status < 300:
        return Outcome.DELIVERED, None
    if status == HTTP_GONE:
        return Outcome.GONE, "http_410"
    return Outcome.RETRY, f"http_{status}"


def retry_delay(delivery: WebhookDelivery, attempts: int) -> timedelta | None:
    """How long to wait after ``attempts`` failed attempts, or ``None``: give up. The jitter
    comes from the delivery's id, so it is spread but reproducible."""
    if attempts >= MAX_ATTEMPTS:
        return None
    base = RETRY_DELAYS[attempts - 1]
    spread = hashlib.sha256(f"{delivery.id}:{attempts}".encode()).digest()
    fraction = int.from_bytes(spread[:2], "big") / 0xFFFF
    return base * (1 + JITTER * fraction)
