"""The outbox passes the ``EmailSender`` contract (as the SMTP adapter does)."""

from __future__ import annotations

import pytest

from adapters.email import OutboxEmailSender
from tests.contracts.email_sender import Delivered, EmailSenderContract
from tests.fakes.clock import ManualClock


class TestOutboxEmailSender(EmailSenderContract):
    @pytest.fixture
    def sender(self) -> OutboxEmailSender:
        return OutboxEmailSender(ManualClock())

    @pytest.fixture
    def delivered(self, sender: OutboxEmailSender) -> Delivered:
        return lambda: [sent.message for sent in sender.messages()]
