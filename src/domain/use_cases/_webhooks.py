"""Queuing webhooks: a step the use cases that link, unlink or create accounts take inside
their own unit of work, so an event exists exactly when its change committed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from domain.ports import UnitOfWork
from domain.webhooks import WebhookDelivery, WebhookEndpoint, WebhookEvent


@dataclass(frozen=True, slots=True)
class WebhookOutbox:
    """Where events go: the configured endpoints. With none, nothing is queued."""

    endpoints: Sequence[WebhookEndpoint] = ()

    async def publish(self, uow: UnitOfWork, event: WebhookEvent) -> None:
        """Queue ``event`` in the caller's transaction, one delivery per endpoint: it goes
        out only if the change commits, and a rollback takes it back with the change."""
        if not self.endpoints:
            return
        deliveries = [
            WebhookDelivery(
                uuid.uuid4(), event, e.key, e.host, event.occurred_at, event.occurred_at
            )
            for e in self.endpoints
        ]
        await uow.webhooks.add(event, deliveries)


NO_WEBHOOKS = WebhookOutbox()
