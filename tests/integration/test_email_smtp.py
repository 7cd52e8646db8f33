"""The SMTP adapter against a real SMTP server in the test process (aiosmtpd): the port's
contract (which the outbox passes too), then what only SMTP does."""

from __future__ import annotations

import asyncio
import logging
from email.header import decode_header, make_header
from typing import Any

import pytest

from adapters.email import SmtpEmailSender
from domain import errors
from domain.ports import EmailMessage
from tests.contracts.email_sender import Delivered, EmailSenderContract
from tests.integration.mailbox import Mailbox, smtp_server
from tests.servers import free_port

__all__ = ["smtp_server"]

SENDER = "TaskFlow Link <no-reply@taskflow.example>"
MESSAGE = EmailMessage("alice@example.com", "Verify your email", "Open https://t.example/v/abc")


def sender(port: int, **overrides: Any) -> SmtpEmailSender:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": port, "tls": "none", "sender": SENDER}
    values.update(overrides)
    return SmtpEmailSender(**values, timeout=5)


class TestSmtpEmailSender(EmailSenderContract):
    @pytest.fixture
    def sender(self, smtp_server: tuple[Mailbox, int]) -> SmtpEmailSender:
        return sender(smtp_server[1])

    @pytest.fixture
    def delivered(self, smtp_server: tuple[Mailbox, int]) -> Delivered:
        def received() -> list[EmailMessage]:
            out = []
            for _, recipients, parsed in smtp_server[0].received:
                assert len(recipients) == 1, recipients
                assert parsed.is_multipart() is False
                text = parsed.get_payload(decode=True)
                assert isinstance(text, bytes)
                charset = parsed.get_content_charset() or "ascii"
                subject = str(make_header(decode_header(parsed["Subject"])))
                # SMTP carries lines as CRLF; a mail reader shows them as lines again.
                lines = text.decode(charset).replace("\r\n", "\n")
                out.append(EmailMessage(recipients[0], subject, lines))
            return out

        return received


async def test_a_message_is_delivered(smtp_server: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp_server
    await sender(port).send(MESSAGE)

    assert len(mailbox.received) == 1
    mail_from, recipients, parsed = mailbox.received[0]
    assert mail_from == "no-reply@taskflow.example"
    assert recipients == ["alice@example.com"]
    assert parsed["Subject"] == "Verify your email"
    assert parsed["From"] == SENDER
    assert parsed["Message-ID"]
    payload = parsed.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert "https://t.example/v/abc" in payload.decode()


async def test_authentication(
    smtp_server: tuple[Mailbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    mailbox, port = smtp_server
    await sender(port, username="mailer", password="s3cret").send(MESSAGE)
    assert len(mailbox.received) == 1

    with (
        caplog.at_level(logging.WARNING, logger="taskflow_link.email"),
        pytest.raises(errors.EmailNotSent) as refused,
    ):
        await sender(port, username="mailer", password="wrong-pw").send(MESSAGE)
    assert "wrong-pw" not in repr(refused.value.__cause__)
    assert len(mailbox.received) == 1
    # The cause is logged for whoever runs the server: its kind and SMTP code, no secret.
    [line] = [r.getMessage() for r in caplog.records if r.name == "taskflow_link.email"]
    # aiosmtplib's error type, or the conversation's timeout (aiosmtpd answers this wrong
    # password with nothing at all).
    assert line.startswith(
        (f"SMTP server 127.0.0.1:{port}: SMTP", f"SMTP server 127.0.0.1:{port}: TimeoutError")
    )
    assert "wrong-pw" not in line


async def test_starttls_is_required_when_configured(smtp_server: tuple[Mailbox, int]) -> None:
    """A server that does not offer STARTTLS gets nothing in clear text."""
    mailbox, port = smtp_server
    with pytest.raises(errors.EmailNotSent):
        await sender(port, tls="starttls").send(MESSAGE)
    assert mailbox.received == []


@pytest.mark.parametrize(
    ("answer", "for_good"),
    [
        ("550 5.1.1 <alice@example.com>: Recipient address rejected: no such user", True),
        ("553 Requested action not taken: mailbox name not allowed", True),
        ("554 5.7.1 <alice@example.com>: Relay access denied", False),  # the server's setup
        ("552 5.2.2 Mailbox full", False),  # "5.2" is the mailbox's state: it may change
        ("450 4.2.0 Greylisted, try again later", False),
        # Refusals of the address as real servers word them: Postfix's relay recipient table,
        # Gmail's (on three lines), Microsoft 365's, Exim's (no enhanced status).
        (
            "550 5.1.1 <alice@example.com>: Recipient address rejected: User unknown in relay "
            "recipient table",
            True,
        ),
        (
            "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
            "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
            "550 5.1.1 unnecessary spaces.",
            True,
        ),
        ("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found", True),
        ("550 Unrouteable address", True),
        # Answers to the recipient about the sender (Postfix checks it at RCPT; Microsoft
        # 365 about a restricted account): every email would be given up at once.
        (
            "550 5.1.0 <noreply@example.org>: Sender address rejected: User unknown in local "
            "recipient table",
            False,
        ),
        ("553 5.1.8 <noreply@example.org>: Sender address rejected: Domain not found", False),
        ("550 5.1.8 Access denied, bad outbound sender", False),
        ("550 5.1.7 Invalid address", False),  # the sender's mailbox syntax (RFC 3463)
        # The server's setup, without an enhanced status: Exim's default relay refusal, its
        # sender verification, cPanel's "authenticate first", a block list, qmail's relay.
        ("550 relay not permitted", False),
        ("550 Sender verify failed", False),
        (
            "550-Please turn on SMTP Authentication in your mail client, or login to the\r\n"
            "550-IMAP/POP3 server before sending your message. host [203.0.113.5] is\r\n"
            "550 not permitted to relay through this server without authentication.",
            False,
        ),
        ("550 Rejected because 203.0.113.5 is in a black list at zen.spamhaus.org", False),
        ("553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", False),
        ("550 Administrative prohibition", False),
    ],
)
async def test_a_recipient_refused_for_good_is_told_apart(
    smtp_server: tuple[Mailbox, int], answer: str, for_good: bool
) -> None:
    """Only a refusal of the address itself is final (the email is given up at once); the
    others are tried again, as a failure the operator fixes for every email at once."""
    mailbox, port = smtp_server
    mailbox.refuse_recipients[MESSAGE.to] = answer
    with pytest.raises(errors.EmailNotSent) as refused:
        await sender(port).send(MESSAGE)
    assert isinstance(refused.value, errors.EmailRefused) is for_good
    assert mailbox.received == []


async def test_an_unreachable_server_is_reported() -> None:
    with pytest.raises(errors.EmailNotSent):
        await sender(free_port()).send(MESSAGE)


@pytest.mark.parametrize(
    "address",
    [
        "=?us-ascii?q?bob?=@example.com",  # Python's header parser reads bob@example.com
        "=?utf-8?q?mallory=40evil.example?=@example.com",  # and "mallory@evil.example"@…
        "bob@=?utf-8?q?evil.example?=",  # and bob@evil.example
    ],
)
async def test_a_message_goes_to_the_address_as_it_is_stored(
    smtp_server: tuple[Mailbox, int], address: str
) -> None:
    """The envelope names the address the service stored, and nothing a header parser makes
    of it: the recipients taken from the To header were decoded as RFC 2047 words, so mail for
    one stored address went to another mailbox (an attacker's review)."""
    mailbox, port = smtp_server
    await sender(port).send(EmailMessage(address, "Confirm", "Open https://t.example/v/abc"))
    assert len(mailbox.received) == 1
    assert mailbox.rcpt_lines == [f"TO:<{address}>"]


async def test_a_server_that_answers_each_command_slowly_is_cut_off() -> None:
    """The timeout bounds the whole conversation, as the setting says, not each answer: a
    server that answers every command just inside it (one that hangs, tarpits, or drips
    replies) kept a send going for ten times as long, past the worker's claim on the email
    (another instance then sent it too, with a second link)."""
    timeout = 0.5
    finished = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def answer(line: bytes) -> None:
            await asyncio.sleep(timeout * 0.6)
            writer.write(line)
            await writer.drain()

        try:
            await answer(b"220 slow.example ESMTP\r\n")
            while line := await reader.readline():
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb in (b"EHLO", b"HELO"):
                    await answer(b"250 slow.example\r\n")
                elif verb == b"DATA":
                    await answer(b"354 go on\r\n")
                    while (await reader.readline()) not in (b".\r\n", b""):
                        pass
                    await answer(b"250 queued\r\n")
                    finished.set()
                elif verb == b"QUIT":
                    await answer(b"221 bye\r\n")
                    break
                else:
                    await answer(b"250 ok\r\n")
        finally:
            writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(errors.EmailNotSent):
            await SmtpEmailSender(
                host="127.0.0.1", port=port, tls="none", sender=SENDER, timeout=timeout
            ).send(MESSAGE)
        assert not finished.is_set()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_server_that_never_says_goodbye_has_the_message_all_the_same() -> None:
    """Once the server accepted the message, a QUIT it does not answer within the timeout
    is no failure: reporting one would send the email again. The timeout bounds the whole
    conversation, so it is the file's usual one (a busy machine could spend a short one
    before the message is accepted); the QUIT is never answered, so the test waits it out."""
    accepted = asyncio.Event()

    async def mute_at_quit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mute.example ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    while (await reader.readline()) not in (b".\r\n", b""):
                        pass
                    writer.write(b"250 queued\r\n")
                    accepted.set()
                elif verb == b"QUIT":
                    await reader.read()  # no answer: until the client hangs up
                else:
                    writer.write(b"250 mute.example\r\n")
        finally:
            writer.close()

    server = await asyncio.start_server(mute_at_quit, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await sender(port).send(MESSAGE)
        assert accepted.is_set()
    finally:
        server.close()
