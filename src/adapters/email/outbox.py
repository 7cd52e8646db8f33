"""Keeps every message instead of sending it: the demo shows them on a page, tests read them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.ports import Clock, EmailMessage


@dataclass(frozen=True, slots=True)
class SentEmail:
    message: EmailMessage
    sent_at: datetime


class OutboxEmailSender:
    def __init__(self, clock: Clock, *, keep: int = 200) -> None:
        self._clock = clock
        self._keep = keep
        self._messages: list[SentEmail] = []

    async def send(self, message: EmailMessage) -> None:
        self._messages.append(SentEmail(message, self._clock.now()))
        del self._messages[: -self._keep]

    def messages(self, to: str | None = None) -> list[SentEmail]:
        """Newest last; only those to ``to`` (case-insensitive) when given."""
        if to is None:
            return list(self._messages)
        return [m for m in self._messages if m.message.to.casefold() == to.casefold()]
