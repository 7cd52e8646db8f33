"""A webhook receiver for the ordering tests: records each event's type as it arrives, and
runs what a test put in ``during`` while the first send after it is on the wire (another
worker's pass, an unlink)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from domain.ports import WebhookMessage
from domain.webhooks import WebhookEndpoint


class InterleavingSender:
    def __init__(self) -> None:
        self.arrived: list[str] = []
        self.during: list[Callable[[], Awaitable[None]]] = []

    async def send(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> int:
        if self.during:
            await self.during.pop()()
        self.arrived.append(json.loads(message.body)["type"])
        return 204
