"""A real SMTP server in the test process (aiosmtpd) and the mailbox it delivers into."""

from __future__ import annotations

import asyncio
import contextlib
import email
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.bot_support import WAIT_SECONDS
from tests.servers import bound_socket, port_of


@dataclass
class Mailbox:
    received: list[tuple[str, list[str], Message]] = field(default_factory=list)
    # Called about once a second while a test waits for a message that has not come; the
    # end-to-end stack moves its manual clock to a failed send's retry (see ``stack``).
    while_waiting: Callable[[], Awaitable[None]] | None = None
    refuse_next: int = 0  # answer this many messages "451, try again later"
    # Recipients answered with this line (code and text) instead of "250 OK".
    refuse_recipients: dict[str, str] = field(default_factory=dict)
    # Each RCPT command's argument as it came on the wire: aiosmtpd reads the address with
    # Python's header parser, which decodes RFC 2047 words as the sender's may have done.
    rcpt_lines: list[str] = field(default_factory=list)

    def clear(self) -> None:
        """As new, in place (a server recording into this mailbox records into the new one)."""
        self.received.clear()
        self.while_waiting = None
        self.refuse_next = 0
        self.refuse_recipients.clear()
        self.rcpt_lines.clear()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        refusal = self.refuse_recipients.get(address.lower())
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_next > 0:
            self.refuse_next -= 1
            return "451 Requested action aborted: try again later"
        parsed = email.message_from_bytes(envelope.content)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Message]:
        return [m for _, rcpts, m in self.received if address.lower() in (r.lower() for r in rcpts)]

    async def wait_for(self, address: str, count: int = 1) -> Message:
        """The ``count``-th message to ``address``, once the service has sent it."""
        deadline = time.monotonic() + WAIT_SECONDS
        nudge_at = time.monotonic() + 1.0
        while len(self.to(address)) < count:
            assert time.monotonic() < deadline, f"email #{count} to {address} never came"
            await asyncio.sleep(0.02)
            if self.while_waiting is not None and time.monotonic() >= nudge_at:
                await self.while_waiting()
                nudge_at = time.monotonic() + 1.0
        return self.to(address)[count - 1]


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def link_path(message: Message, prefix: str) -> str:
    """The path of the one link to ``prefix`` in the message."""
    found = re.findall(r"https?://[^/\s]+(" + re.escape(prefix) + r"[A-Za-z0-9_-]+)", body(message))
    assert len(found) == 1, body(message)
    return str(found[0])


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailer", b"s3cret")
    return AuthResult(success=ok)


class _RecordingSmtp(SMTP):
    async def smtp_RCPT(self, arg: str | None) -> None:
        if isinstance(self.event_handler, Mailbox) and arg is not None:
            self.event_handler.rcpt_lines.append(arg)
        await super().smtp_RCPT(arg)


class _RecordingController(Controller):
    """aiosmtpd's server on ``sock``, a socket bound before it starts: a port picked free and
    bound later by the server could be taken meanwhile by another process of a busy machine
    (a server binding port 0 gets any free one)."""

    def __init__(self, handler: Any, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=port_of(sock), **kwargs)
        self._sock = sock

    def factory(self) -> SMTP:
        return _RecordingSmtp(self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


@contextlib.contextmanager
def running_smtp_server() -> Iterator[tuple[Mailbox, int]]:
    """A recording SMTP server on a free loopback port: its mailbox and its port."""
    mailbox, sock = Mailbox(), bound_socket()
    with sock:  # closed by the server when it stops, or here if it never started
        controller = _RecordingController(
            mailbox,
            sock,
            authenticator=_authenticator,
            auth_require_tls=False,  # a local test server without certificates
            # aiosmtpd's own is 5 s for its thread to start and answer: generous instead,
            # the suite runs with both cores busy.
            ready_timeout=WAIT_SECONDS,
        )
        controller.start()
        try:
            yield mailbox, port_of(sock)
        finally:
            controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    with running_smtp_server() as running:
        yield running
