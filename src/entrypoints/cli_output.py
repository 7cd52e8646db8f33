"""What the operations commands read from the command line and print (``audit``, ``webhooks
status``, ``role-connections status``): parsing options into domain values with click's
errors, and lines for a terminal.

Printed values never carry a secret, and never a control character: audit details hold text
that came from outside (a client's address, a reason), and an escape sequence in it must not
reach the operator's terminal."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import click

from domain import errors
from domain.model import (
    EMAIL_MAX,
    AccountId,
    AuditEvent,
    DiscordId,
    RoleConnectionLoss,
    clean_text,
)
from domain.use_cases import EndpointStatus, RoleConnectionStatus
from domain.webhooks import WebhookState

_DURATION = re.compile(r"^(\d{1,6})\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Detail keys whose values are never printed, should one ever be recorded by mistake. (Not
# "key" or "session" alone: an API key's name and id, and which sessions ended, are what an
# operator reads the audit for.)
_SECRET_KEYS = re.compile(
    r"token|secret|password|passwd|cookie|credential|private|hash|^key$|(^|_)(code|session_id)$",
    re.IGNORECASE,
)
_DETAIL_MAX = 200
_LONGEST_AGO = timedelta(days=36525)


def parse_since(text: str) -> datetime | timedelta:
    """``7d`` (how long ago), ``2026-11-01`` (midnight UTC) or an ISO time (UTC unless it
    says otherwise)."""
    value = text.strip()
    if match := _DURATION.fullmatch(value.lower()):
        ago = timedelta(**{_UNITS[match[2]]: int(match[1])})
        if ago > _LONGEST_AGO:
            raise click.BadParameter("go back at most 100 years", param_hint="'--since'")
        return ago
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "give a date (2026-11-01), a time (2026-11-01T12:00Z) or how long ago "
            "(30m, 12h, 7d, 2w)",
            param_hint="'--since'",
        ) from None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-01:00 is in year 10000 in UTC
        raise click.BadParameter(
            "is out of range: give a time in the years 1 to 9999 in UTC", param_hint="'--since'"
        ) from None


def parse_account(text: str) -> AccountId:
    try:
        return AccountId.parse(text.strip())
    except errors.InvalidInput:
        raise click.BadParameter(
            "is not an account id (a UUID, as the API and the audit trail show)",
            param_hint="'--account'",
        ) from None


def parse_discord_id(text: str) -> DiscordId:
    try:
        return DiscordId.parse(text)
    except errors.InvalidDiscordId:
        raise click.BadParameter(
            "is not a Discord id (a positive whole number)", param_hint="'--discord-id'"
        ) from None


def parse_login(text: str) -> str:
    """A login as typed at sign-in. Never repeated in a message: a login field sometimes holds
    a password typed into the wrong box."""
    login = text.strip()
    if not login:
        raise click.BadParameter(
            "give the login as it was typed to sign in (a username or an email address)",
            param_hint="'--login'",
        )
    if clean_text(login, EMAIL_MAX) != login:
        raise click.BadParameter(
            f"is no login a sign-in records (it holds a control character, or is longer than "
            f"{EMAIL_MAX} characters): such a sign-in is refused before it is audited",
            param_hint="'--login'",
        )
    return login


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _shown(value: object) -> str:
    # Nor format characters (Unicode Cf): a right-to-left override would reorder the line.
    text = "".join(c for c in str(value) if unicodedata.category(c) != "Cf")
    text = clean_text(text, _DETAIL_MAX) or ""
    return json.dumps(text) if not text or any(c.isspace() or c in "\"'=" for c in text) else text


def audit_line(event: AuditEvent, *, login_given: bool = False) -> str:
    """``time  kind  account=…  discord=…  key=value …`` on one line. ``login_given``: the
    events were found by the login the operator gave, whose HMAC (the detail's ``login``) is
    shown as ``(as given)``, never printed next to the login it names."""

    def value_of(key: str, value: object) -> str:
        if _SECRET_KEYS.search(key):
            return "(hidden)"
        if login_given and key == "login":
            return "(as given)"
        return _shown(value)

    detail = " ".join(
        f"{_shown(key)}={value_of(key, value)}" for key, value in sorted(event.detail.items())
    )
    fields = [
        _when(event.at),
        str(event.kind),  # a newer release's as its text
        f"account={event.account_id or '-'}",
        f"discord={event.discord_id or '-'}",
    ]
    return "  ".join([*fields, detail] if detail else fields)


def webhook_status_lines(statuses: Sequence[EndpointStatus]) -> Iterator[str]:
    """Every configured endpoint is listed (none: this process's settings name no URL), so
    only next to one can another be told to be no longer configured. Run without
    TASKFLOW_LINK_WEBHOOK_URLS (a shell or cron job given only the database), the command
    cannot tell which endpoints the service still sends to, and says so rather than
    calling every one removed and its backlog stuck."""
    configured = [s for s in statuses if s.configured]
    if not statuses:
        yield "No webhook URLs are configured (TASKFLOW_LINK_WEBHOOK_URLS), and none were."
        return
    if configured:
        yield f"{len(configured)} webhook endpoint(s) configured."
    else:
        yield (
            "This process has no TASKFLOW_LINK_WEBHOOK_URLS, so it cannot tell the endpoints "
            "the service sends to from removed ones (run it with the service's settings):"
        )
    number = 0
    for status in statuses:
        if status.configured:
            number += 1
            name = f"{number}. {status.host}"
        elif not configured:
            name = f"-  {status.host}"
        else:
            name = f"-  {status.host} (no longer configured: its pending deliveries wait)"
        known = [f"{status.counts.get(state, 0)} {state.value}" for state in WebhookState]
        # A newer release's states (a rolling upgrade, a rollback) after them, as written.
        newer = sorted(
            f"{n} {state}"
            for state, n in status.counts.items()
            if not isinstance(state, WebhookState) and n
        )
        counts = ", ".join(known + newer)
        yield f"{name}: {counts}"
        if status.gone_since is not None:
            yield (
                f"     answered 410 Gone at {_when(status.gone_since)}: nothing is sent to it "
                "until `taskflow-link webhooks retry`"
            )
        if status.last_error is not None and status.delivered_since_error:
            # The time is the delivery's, not the error's (an earlier attempt met it).
            yield (
                f"     last error: {_shown(status.last_error)}, then delivered at "
                f"{_when(status.last_error_at)}"
            )
        elif status.last_error is not None:
            yield f"     last error: {_shown(status.last_error)} at {_when(status.last_error_at)}"


_LOSSES = {
    RoleConnectionLoss.REVOKED: "revoked in Discord",
    RoleConnectionLoss.UNREADABLE: "unreadable",
}


def _loss(why: RoleConnectionLoss, tokens_kept: bool) -> str:
    if why is RoleConnectionLoss.UNREADABLE:  # nothing can tell Discord anything
        kept = "kept" if tokens_kept else "deleted"
        return f"unreadable, tokens {kept} (roles stay as last pushed, not updated)"
    return f"{_LOSSES[why]} (tokens {'kept' if tokens_kept else 'deleted'})"


def role_connection_status_lines(status: RoleConnectionStatus, *, listed: bool) -> Iterator[str]:
    """The counts, then (``listed``) the lost members the status holds: Discord id, since
    when, why, and whether their tokens are kept. Never a token, nor an email address."""
    counts = status.counts
    if counts.kept:
        yield (
            f"{counts.kept} role connection(s) kept: {counts.current} current, {counts.due} "
            f"due, {counts.retrying} retrying (failed, tried again later), {counts.pushing} "
            f"being pushed, {counts.unreadable} unreadable (no key here opens them; the "
            "member was told)."
        )
    else:
        yield "No role connection is kept."
    if status.key_missing is None:
        yield "Keys: not known here (no TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY)."
    elif status.key_missing:
        yield (
            f"{status.key_missing} sealed with a key not configured here "
            "(TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY): left to an instance that has it."
        )
    lost = sum(count.members for count in status.losses)
    if lost:
        ordered = sorted(status.losses, key=lambda c: (c.why, not c.tokens_kept))
        yield (
            f"{lost} lost (until the member connects again): "
            + ", ".join(f"{c.members} {_loss(c.why, c.tokens_kept)}" for c in ordered)
            + "."
        )
    else:
        yield "No member's connection is lost."
    yield (
        f"{status.given_up} given up since {status.since:%Y-%m-%d %H:%M} UTC (no longer "
        "linked; Discord failed every push for about a week; tokens deleted)."
    )
    if not listed or not status.lost:
        return
    if len(status.lost) < lost:
        yield f"The {len(status.lost)} longest lost of {lost}:"
    rows = [("DISCORD ID", "LOST SINCE", "WHY", "TOKENS")]
    rows += [
        (
            str(member.discord_id),
            f"{member.since.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
            member.why.value,
            "kept" if member.tokens_kept else "deleted",
        )
        for member in status.lost
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        yield "  ".join([*cells, row[-1]])
