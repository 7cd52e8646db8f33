"""Counting what the use cases do, from outside the domain.

The container wraps every use case in ``Observed``: the outcome of a run is its result or the
``DomainError`` it raised, and ``record`` turns that into metrics. The domain stays unaware of
being counted, and every entrypoint (web, bot, CLI, the email worker) is counted alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from adapters.metrics import PrometheusMetrics
from domain import errors
from domain.model import AuthPurpose, RoleSync
from domain.use_cases import (
    AuthCompleted,
    AuthOutcome,
    DeliveryReport,
    LinkConfirmed,
    RoleChangeReport,
    RoleSyncReport,
    TicketIssued,
    WebhookReport,
)

log = logging.getLogger("taskflow_link.metrics")

# Refusals of "Sign in with Discord" itself (the login policy), not of a link someone asked for.
LOGIN_REFUSALS = (
    errors.EmailBelongsToAccount,
    errors.EmailAccountLinkedToOtherDiscord,
    errors.AmbiguousEmail,
    errors.SignupDisabled,
)
# How a Discord round trip that linked was started.
_HOW: dict[AuthPurpose, str] = {
    AuthPurpose.LINK: "account_page",
    AuthPurpose.TICKET: "ticket",
    AuthPurpose.ROLES_LINK: "linked_role",
}
_LOGIN_LINKS: dict[AuthOutcome, str] = {
    AuthOutcome.LINKED_AND_SIGNED_IN: "verified_email",
    AuthOutcome.CREATED: "signup",
}


class Observed:
    """A use case whose every run is told to ``record``; callers see no difference."""

    __slots__ = ("_name", "_record", "_use_case")

    def __init__(
        self,
        name: str,
        use_case: Any,
        record: Callable[[str, object, BaseException | None], None],
    ) -> None:
        self._name, self._use_case, self._record = name, use_case, record

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await self._use_case.execute(*args, **kwargs)
        except Exception as exc:
            self._record(self._name, None, exc)
            raise
        self._record(self._name, result, None)
        return result

    @property
    def use_case(self) -> Any:
        return self._use_case

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # own slots not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self._use_case, name)


def observed(
    name: str, use_case_class: type, metrics: PrometheusMetrics
) -> Callable[..., Observed]:
    """What the container makes instead of ``use_case_class``: the same, observed."""

    def record(name: str, result: object, error: BaseException | None) -> None:
        try:
            record_outcome(metrics, name, result, error)
        except Exception:  # counting must never break what it counts
            log.exception("could not record the outcome of %s", name)

    def make(*args: Any, **kwargs: Any) -> Observed:
        return Observed(name, use_case_class(*args, **kwargs), record)

    return make


def record_outcome(
    metrics: PrometheusMetrics, name: str, result: object, error: BaseException | None
) -> None:
    """The metrics one run of the use case ``name`` moves."""
    if error is None:
        metrics.use_case(name, "ok")
        _succeeded(metrics, name, result)
    elif isinstance(error, errors.DomainError):
        metrics.use_case(name, error.code)
        _refused(metrics, name, error)
    else:
        metrics.use_case(name, "unexpected_error")


def _refused(metrics: PrometheusMetrics, name: str, error: errors.DomainError) -> None:
    if isinstance(error, LOGIN_REFUSALS):
        metrics.sign_in("discord", error.code)
    elif isinstance(error, errors.LinkRefused):
        metrics.link_refused(error.code)
    elif name == "sign_in":
        metrics.sign_in("password", error.code)


def _succeeded(metrics: PrometheusMetrics, name: str, result: object) -> None:
    if name == "sign_in":
        metrics.sign_in("password", "signed_in")
    elif isinstance(result, AuthCompleted):
        _discord_round_trip(metrics, result)
    elif isinstance(result, LinkConfirmed):  # email linking "confirm": proved, linked, signed in
        metrics.link_created("email_confirmed")
        metrics.sign_in("discord", AuthOutcome.LINKED_AND_SIGNED_IN.value)
    elif isinstance(result, TicketIssued):
        metrics.ticket_issued()
    elif isinstance(result, DeliveryReport):
        for email in result.sent:
            metrics.email_sent(email.kind.value)
        for email in result.retrying:
            metrics.email_failed(email.kind.value, given_up=False)
        for email in result.failed:
            metrics.email_failed(email.kind.value, given_up=True)
    elif isinstance(result, RoleChangeReport):
        _role_changes(metrics, result)
    elif isinstance(result, WebhookReport):
        _webhooks(metrics, result)
    elif isinstance(result, RoleSyncReport):
        _role_connections(metrics, result)


def _webhooks(metrics: PrometheusMetrics, report: WebhookReport) -> None:
    for delivery in report.delivered:
        metrics.webhook_delivered(str(delivery.event.type))
    for outcome, deliveries in (
        ("retrying", report.retrying),
        ("given_up", report.failed),
        ("gone", report.gone),
    ):
        for delivery in deliveries:
            metrics.webhook_failed(str(delivery.event.type), outcome)


def _role_connections(metrics: PrometheusMetrics, report: RoleSyncReport) -> None:
    for outcome in RoleSync:  # the report's fields are named after the outcomes
        if count := getattr(report, outcome.value):
            metrics.role_connections(outcome.value, count)


def _role_changes(metrics: PrometheusMetrics, report: RoleChangeReport) -> None:
    for done in report.done:
        metrics.role_change(done.action.value, "done")
    for change in (*report.refused, *report.refused_unsent, *report.retrying):
        metrics.role_change(change.action.value, change.last_error or "unavailable")
    for change in report.failed:
        metrics.role_change(change.action.value, "given_up")
    for change in report.superseded:
        metrics.role_change(change.action.value, "superseded")
    for change in report.unconfigured:
        metrics.role_change(change.action.value, "not_configured")


def _discord_round_trip(metrics: PrometheusMetrics, done: AuthCompleted) -> None:
    if done.handed_over:  # a callback loaded twice: its first load was counted
        return
    if done.purpose is AuthPurpose.LOGIN:
        metrics.sign_in("discord", done.outcome.value)
        if done.outcome in _LOGIN_LINKS:
            metrics.link_created(_LOGIN_LINKS[done.outcome])
    elif done.outcome is AuthOutcome.LINKED and done.purpose in _HOW:
        metrics.link_created(_HOW[done.purpose])
    elif done.purpose is AuthPurpose.ROLES and done.outcome is AuthOutcome.SIGNED_IN:
        metrics.sign_in("discord", done.outcome.value)  # Linked Roles' URL, signed out
