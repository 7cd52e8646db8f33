"""The ``EmailSender`` port's contract: the outbox (the demo, unit tests) and the SMTP adapter
(against a real SMTP server in the test process) run the same tests.

Subclass ``EmailSenderContract`` and provide ``sender`` (the adapter) and ``delivered`` (what
reached the recipients, in order, as the port's messages)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.ports import EmailMessage, EmailSender

Delivered = Callable[[], list[EmailMessage]]


def _same(received: EmailMessage, sent: EmailMessage) -> bool:
    """Equal, but for the line break a mail system may add at the very end."""
    return (received.to, received.subject, received.text.rstrip("\n")) == (
        sent.to,
        sent.subject,
        sent.text.rstrip("\n"),
    )


class EmailSenderContract:
    async def test_a_message_reaches_its_recipient_intact(
        self, sender: EmailSender, delivered: Delivered
    ) -> None:
        message = EmailMessage(
            "alice@example.com",
            "Confirm your email address",
            "Hello alice,\n\nOpen https://link.example/verify-email/abc_DEF-123 to confirm.\n",
        )
        await sender.send(message)
        [received] = delivered()
        assert _same(received, message), received

    async def test_messages_arrive_in_order_each_to_its_recipient(
        self, sender: EmailSender, delivered: Delivered
    ) -> None:
        messages = [EmailMessage(f"user{n}@example.com", f"Note {n}", f"n={n}") for n in range(3)]
        for message in messages:
            await sender.send(message)
        received = delivered()
        assert len(received) == len(messages)
        assert all(_same(r, m) for r, m in zip(received, messages, strict=True)), received

    @pytest.mark.parametrize(
        "text",
        [
            "Grüße, Zoë — ✓ linked (emoji beyond the BMP: \U0001f517)",
            ".\nA line with only a dot ends an SMTP message unless the sender escapes it.",
            "From here on, a line starting with From is fine.",
            "long line " * 200,
        ],
        ids=["unicode", "lone-dot", "from-line", "long-line"],
    )
    async def test_text_survives_the_trip(
        self, sender: EmailSender, delivered: Delivered, text: str
    ) -> None:
        message = EmailMessage("bob@example.com", "Ünïcode subject ✓", text)
        await sender.send(message)
        [received] = delivered()
        assert _same(received, message), received
