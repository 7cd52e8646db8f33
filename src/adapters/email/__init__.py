"""``EmailSender`` adapters: SMTP for deployments, an outbox that keeps messages for the demo
and for tests."""

from adapters.email.outbox import OutboxEmailSender, SentEmail
from adapters.email.smtp import SmtpEmailSender, TlsMode

__all__ = ["OutboxEmailSender", "SentEmail", "SmtpEmailSender", "TlsMode"]
