"""Sends through an SMTP server with aiosmtplib. Connection, TLS and authentication failures
become the core's ``EmailNotSent``; the password never appears in errors or logs."""

from __future__ import annotations

import asyncio
import email.message
import email.utils
import logging
import re
from typing import Literal

from domain import errors
from domain.ports import EmailMessage

TlsMode = Literal["starttls", "tls", "none"]

log = logging.getLogger("taskflow_link.email")


class SmtpEmailSender:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: TlsMode,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._host, self._port, self._tls = host, port, tls
        self._sender = sender
        self._username, self._password = username, password
        self._timeout = timeout

    def _mime(self, message: EmailMessage) -> email.message.EmailMessage:
        mime = email.message.EmailMessage()
        mime["From"] = self._sender
        mime["To"] = message.to
        mime["Subject"] = message.subject
        mime["Date"] = email.utils.formatdate(localtime=False)
        mime["Message-ID"] = email.utils.make_msgid(domain="taskflow-link")
        mime.set_content(message.text)
        return mime

    async def send(self, message: EmailMessage) -> None:
        # Loaded by the first email sent: a deployment without SMTP never loads it.
        import aiosmtplib  # noqa: PLC0415

        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            use_tls=self._tls == "tls",
            start_tls=self._tls == "starttls",  # required, never "if the server offers it"
            username=self._username,
            password=self._password,
            timeout=self._timeout,
        )
        accepted = False
        try:
            # The timeout bounds the whole conversation: aiosmtplib applies it to each answer
            # only, so a server that answers every command just in time (one that hangs or
            # tarpits) kept a send going ten times as long, past the worker's claim on the
            # email (``CLAIM_LEASE``), and another instance sent it again.
            async with asyncio.timeout(self._timeout):
                await client.connect()
                await client.send_message(
                    self._mime(message),
                    # The address as the service stored it, not as the To header is read
                    # back: the header parser decodes RFC 2047 words, so
                    # "=?us-ascii?q?bob?=@example.com" (another address, as far as the
                    # service can tell) went to bob@example.com.
                    recipients=[message.to],
                )
                accepted = True
                await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            if accepted:
                return  # only the goodbye failed: the server has the message
            cause = _without_secrets(exc)
            # What went wrong, for whoever runs the server (the queue keeps only the code).
            log.warning("SMTP server %s:%d: %s", self._host, self._port, cause)
            if _recipient_refused_for_good(exc):
                raise errors.EmailRefused() from cause
            raise errors.EmailNotSent() from cause
        finally:
            # Without a goodbye after a failure: the server may be the problem (a QUIT would
            # wait for its answer once more).
            client.close()


def _recipient_refused_for_good(exc: BaseException) -> bool:
    """A permanent refusal of the address itself: a 5xx answer to the recipient whose
    enhanced status is one of RFC 3463's about the recipient's address (5.1.x: no such
    mailbox, bad domain, bad syntax; not 5.1.7 and 5.1.8, the sender's), or 550, 551 or 553
    from a server that gives none. A 4xx (a full mailbox, greylisting) is tried again, and
    so is every other failure: an outage, or the server's configuration (TLS, the sender,
    the password, the sending address on a block list), which the operator fixes for every
    email at once. Many servers answer the recipient for those too: Postfix checks the
    sender at RCPT ("550 5.1.0 <sender>: Sender address rejected", "5.1.8 ... Domain not
    found"), Exim says "550 relay not permitted" without an enhanced status, cPanel's "550
    ... not permitted to relay ... without authentication", qmail "553 ... allowed rcpthosts
    (#5.7.1)"; given up at once, every email was lost until ``email retry``."""
    import aiosmtplib  # noqa: PLC0415  (loaded by the send that failed)

    refused: list[aiosmtplib.SMTPRecipientRefused]
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = list(exc.recipients)
    elif isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        refused = [exc]
    else:
        return False
    return bool(refused) and all(_bad_address(r.code, r.message) for r in refused)


_ENHANCED_STATUS = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
# qmail names it after the text: "553 sorry, that domain isn't in my list ... (#5.7.1)".
_TRAILING_STATUS = re.compile(r"\(#([245])\.(\d{1,3})\.(\d{1,3})\)")
# RFC 3463's X.1.x about the recipient's address: other (0), no such mailbox (1) or domain
# (2), bad syntax (3), ambiguous (4), moved (6), and RFC 7505's null MX (10). X.1.7 and
# X.1.8 are the sender's address; X.1.5 and X.1.9 are no refusals.
_RECIPIENT_STATUSES = frozenset({0, 1, 2, 3, 4, 6, 10})
_ABOUT_THE_SENDER = re.compile(r"\bsender\b", re.IGNORECASE)
# Without an enhanced status, what the text says: a refusal of relaying, of a client that
# did not authenticate, of the sending address (a block list), or a policy is the setup's.
_ABOUT_THE_SETUP = re.compile(
    r"\b(sender|relay\w*|auth\w*|black\s?list\w*|block\s?list\w*|blocked|dnsbl|rbl"
    r"|spam\w*|prohibit\w*|polic\w+|rate)\b",
    re.IGNORECASE,
)


def _bad_address(code: int, message: str) -> bool:
    text = message or ""
    if code // 100 != 5:
        return False
    enhanced = _ENHANCED_STATUS.match(text) or _TRAILING_STATUS.search(text)
    if enhanced is not None:
        status, subject, detail = enhanced.group(1, 2, 3)
        return (
            (status, subject) == ("5", "1")
            and int(detail) in _RECIPIENT_STATUSES
            and not _ABOUT_THE_SENDER.search(text)  # Postfix: "5.1.0 <x>: Sender address ..."
        )
    return code in (550, 551, 553) and not _ABOUT_THE_SETUP.search(text)


def _without_secrets(exc: BaseException) -> Exception:
    """The cause to chain, described by type and SMTP code only (some servers echo input)."""
    code = getattr(exc, "code", None)
    return RuntimeError(f"{type(exc).__name__}" + (f" (SMTP {code})" if code else ""))
