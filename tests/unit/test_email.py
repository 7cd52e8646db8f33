"""The email port's wiring and the development outbox."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.email import OutboxEmailSender, SmtpEmailSender
from domain.ports import EmailMessage
from entrypoints.container import build_container
from entrypoints.settings import Settings, SettingsError, load_settings
from tests.fakes.clock import ManualClock
from tests.harness import TEST_SECRET_KEY, make_settings


async def test_the_outbox_keeps_messages_newest_last() -> None:
    clock = ManualClock()
    outbox = OutboxEmailSender(clock, keep=2)
    for n in range(3):
        await outbox.send(EmailMessage(f"P{n}@example.com", f"s{n}", "t"))

    assert [m.message.subject for m in outbox.messages()] == ["s1", "s2"]
    assert [m.message.subject for m in outbox.messages("p2@EXAMPLE.com")] == ["s2"]
    assert outbox.messages()[0].sent_at == clock.now()


def test_the_container_chooses_the_sender() -> None:
    assert isinstance(build_container(make_settings()).email_sender(), OutboxEmailSender)
    smtp = build_container(make_settings(email_backend="smtp", smtp_host="mail.example"))
    assert isinstance(smtp.email_sender(), SmtpEmailSender)


def test_smtp_needs_a_host() -> None:
    """Refused with the settings, as every other missing setting: `config` passed, and `serve`
    started and logged the same traceback from its email worker every two seconds."""
    for host in (None, "  "):
        with pytest.raises(SettingsError, match="EMAIL_BACKEND=smtp needs TASKFLOW_LINK_SMTP_HOST"):
            load_settings(
                _env_file=None, secret_key=TEST_SECRET_KEY, email_backend="smtp", smtp_host=host
            )


def _smtp(**overrides: Any) -> Settings:
    return load_settings(
        _env_file=None, secret_key=TEST_SECRET_KEY, email_backend="smtp", **overrides
    )


@pytest.mark.parametrize(
    "host",
    [
        "mail.example.com:25",
        "smtp://mail.example.com",
        "smtps://mail.example.com:465",
        "ops@mail.example.com",
        "mail.example.com/relay",
        "mail example.com",
        "[::1]",
    ],
)
def test_an_smtp_host_that_is_not_a_host_alone_is_refused(host: str) -> None:
    """Each was taken, and aiosmtplib looked the whole text up as a host name: every email
    failed, retried every few seconds, with only a DNS error in the log."""
    with pytest.raises(SettingsError) as refused:
        _smtp(smtp_host=host)
    message = str(refused.value)
    assert "TASKFLOW_LINK_SMTP_HOST: must be the server's host name or address alone" in message
    assert "TASKFLOW_LINK_SMTP_PORT" in message


@pytest.mark.parametrize(
    "host",
    [
        "mail.example.com",
        "localhost",
        "127.0.0.1",
        "::1",
        "smtp-relay_1",
        "mail.example.",
        "mail.bücher.example",
    ],
)
def test_an_smtp_host_name_or_address_is_taken(host: str) -> None:
    assert _smtp(smtp_host=host)


def test_an_smtp_password_without_a_user_name_is_refused_without_showing_it() -> None:
    """aiosmtplib logs in only with a user name: the password alone was never sent, and every
    email went unauthenticated (refused by the server, retried) without a word at start."""
    with pytest.raises(SettingsError) as refused:
        _smtp(smtp_host="mail.example.com", smtp_password="s3cr3t-pw")
    message = str(refused.value)
    assert "TASKFLOW_LINK_SMTP_PASSWORD needs TASKFLOW_LINK_SMTP_USERNAME" in message
    assert "s3cr3t-pw" not in message
    assert _smtp(smtp_host="mail.example.com", smtp_username="ops", smtp_password="s3cr3t-pw")
    assert _smtp(smtp_host="mail.example.com", smtp_username="  ", smtp_password="  ")


@pytest.mark.parametrize(
    ("tls", "port", "said"),
    [
        ("tls", None, "SMTP_TLS=tls with TASKFLOW_LINK_SMTP_PORT=587"),  # the default port
        ("tls", 25, "SMTP_TLS=tls with TASKFLOW_LINK_SMTP_PORT=25"),
        ("starttls", 465, "SMTP_TLS=starttls with TASKFLOW_LINK_SMTP_PORT=465"),
        ("none", 465, "SMTP_TLS=none with TASKFLOW_LINK_SMTP_PORT=465"),
    ],
)
def test_an_smtp_tls_mode_the_port_does_not_speak_is_warned_about(
    tls: str, port: int | None, said: str
) -> None:
    """SMTP_TLS=tls left at the default port 587 (STARTTLS's), or starttls on 465 (implicit
    TLS's): every email failed, at the handshake or after the timeout waiting for a greeting
    the server never sends, and nothing at start said why."""
    ports = {} if port is None else {"smtp_port": port}
    settings = _smtp(smtp_host="127.0.0.1", smtp_tls=tls, **ports)
    assert any(w.startswith(f"TASKFLOW_LINK_{said}") for w in settings.warnings()), (
        settings.warnings()
    )


@pytest.mark.parametrize(("tls", "port"), [("tls", 465), ("starttls", 587), ("starttls", 25)])
def test_an_smtp_tls_mode_its_port_speaks_is_not_warned_about(tls: str, port: int) -> None:
    settings = _smtp(smtp_host="mail.example.com", smtp_tls=tls, smtp_port=port)
    assert not [w for w in settings.warnings() if "SMTP_PORT" in w]


def test_the_default_sender_address_in_production_is_warned_about() -> None:
    """EMAIL_FROM left at its default, no-reply@localhost, with SMTP and a public URL: mail
    servers refuse a sender domain that is no domain, or file its mail as spam, and the
    password reset and confirmation links never arrived, with nothing said at start."""
    production = {
        "smtp_host": "mail.example.com",
        "public_url": "https://link.example.com",
    }
    said = [w for w in _smtp(**production).warnings() if "EMAIL_FROM" in w]
    assert said, "no warning about the sender"
    assert said[0].startswith("TASKFLOW_LINK_EMAIL_FROM: no-reply@localhost")
    named = _smtp(**production, email_from="TaskFlow <no-reply@example.com>")
    assert not [w for w in named.warnings() if "EMAIL_FROM" in w]
    on_this_machine = _smtp(smtp_host="127.0.0.1")  # a development relay (Mailpit and such)
    assert not [w for w in on_this_machine.warnings() if "EMAIL_FROM" in w]
