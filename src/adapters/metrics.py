"""The service's own Prometheus metrics (``taskflow_link_*``), next to the HTTP request metrics
that Litestar's Prometheus middleware keeps.

Every label takes values from a short, fixed set (a route template, a use case's name, an
error's stable code, an email kind, a Discord endpoint's name): never an id, a token, an
address or anything a client chose, so no series can multiply.

One set per process, in prometheus_client's default registry (where Litestar's middleware
keeps its own). With ``PROMETHEUS_MULTIPROC_DIR`` in the environment when the process starts,
prometheus_client writes every value to files in that directory and ``/metrics`` adds up
those of every worker process.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess

PREFIX = "taskflow_link"
# prometheus_client reads either name, once, when it is imported.
MULTIPROCESS_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
# Discord answers in tens to hundreds of milliseconds; the last buckets catch timeouts.
DISCORD_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PrometheusMetrics:
    """Counters and a histogram with methods named after what happened."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(f"{PREFIX}_{name}", documentation, labels, registry=registry)

        self._use_cases = counter(
            "use_cases",
            "Use cases run, by name and outcome (ok, or the domain error's code).",
            "use_case",
            "outcome",
        )
        self._links_created = counter(
            "links_created",
            "Discord accounts linked, by how: ticket (/link button), account_page, "
            "verified_email (Sign in with Discord), signup (a new account), email_confirmed.",
            "how",
        )
        self._links_refused = counter(
            "links_refused", "Links asked for and refused, by the refusal's code.", "reason"
        )
        self._sign_ins = counter(
            "sign_ins",
            "Sign-ins by method (password, discord) and outcome (how it succeeded, or the "
            "refusal's code).",
            "method",
            "outcome",
        )
        self._tickets = counter("link_tickets_issued", "/link tickets issued (buttons shown).")
        self._emails_sent = counter("emails_sent", "Emails handed to the mail server.", "kind")
        self._emails_failed = counter(
            "emails_failed",
            "Failed email sends, by kind and outcome (retrying, given_up).",
            "kind",
            "outcome",
        )
        self._role_changes = counter(
            "discord_role_changes",
            "Changes of the role for linked members sent to Discord, by action (add, remove) "
            "and outcome (done, not_a_member, unknown_role, missing_permissions, unknown_guild, "
            "rejected, rate_limited, unavailable, given_up, superseded; not_configured: not "
            "sent, the role is no longer in the setting).",
            "action",
            "outcome",
        )
        self._role_connections = counter(
            "role_connections",
            "Discord Linked Roles connections a pass (worker, role-connections refresh or "
            "forget) went through, by outcome: pushed, cleared (after an unlink), revoked "
            "(invalid_grant: the tokens deleted), failed, unreadable (a configured key fails "
            "to open them), key_missing (sealed with a key not configured here), gone, "
            "given_up, paused (rate limited or blocked), waiting (the user's own limit).",
            "outcome",
        )
        self._webhooks_delivered = counter(
            "webhooks_delivered",
            "Webhooks an endpoint accepted (2xx), by event type.",
            "type",
        )
        self._webhooks_failed = counter(
            "webhooks_failed",
            "Failed webhook attempts, by event type and outcome (retrying, given_up, gone: "
            "the endpoint answered 410 and gets nothing more).",
            "type",
            "outcome",
        )
        self._late_interactions = counter(
            "discord_interactions_late",
            "Interactions not run because they came after Discord stopped waiting for their "
            "answer, by how they came (gateway, http).",
            "via",
        )
        self._discord_errors = counter(
            "discord_api_errors",
            "Failed calls to Discord's API, by endpoint and kind (rate_limited, 4xx, 5xx, "
            "timeout, transport, invalid_response).",
            "endpoint",
            "kind",
        )
        self._discord_seconds = Histogram(
            f"{PREFIX}_discord_api_request_duration_seconds",
            "Time taken by calls to Discord's API (failures included), by endpoint.",
            ["endpoint"],
            buckets=DISCORD_BUCKETS,
            registry=registry,
        )

    def use_case(self, name: str, outcome: str) -> None:
        self._use_cases.labels(name, outcome).inc()

    def link_created(self, how: str) -> None:
        self._links_created.labels(how).inc()

    def link_refused(self, reason: str) -> None:
        self._links_refused.labels(reason).inc()

    def sign_in(self, method: str, outcome: str) -> None:
        self._sign_ins.labels(method, outcome).inc()

    def ticket_issued(self) -> None:
        self._tickets.inc()

    def email_sent(self, kind: str) -> None:
        self._emails_sent.labels(kind).inc()

    def email_failed(self, kind: str, *, given_up: bool) -> None:
        self._emails_failed.labels(kind, "given_up" if given_up else "retrying").inc()

    def role_change(self, action: str, outcome: str) -> None:
        self._role_changes.labels(action, outcome).inc()

    def role_connections(self, outcome: str, count: int) -> None:
        self._role_connections.labels(outcome).inc(count)

    def webhook_delivered(self, event_type: str) -> None:
        self._webhooks_delivered.labels(event_type).inc()

    def webhook_failed(self, event_type: str, outcome: str) -> None:
        self._webhooks_failed.labels(event_type, outcome).inc()

    def interaction_late(self, via: str) -> None:
        self._late_interactions.labels(via).inc()

    def discord_call(self, endpoint: str, seconds: float, failure: str | None) -> None:
        """One call to Discord's API: how long it took and, if it failed, how."""
        self._discord_seconds.labels(endpoint).observe(seconds)
        if failure is not None:
            self._discord_errors.labels(endpoint, failure).inc()

    def discord_failure(self, endpoint: str, failure: str) -> None:
        """A failure seen after the call was timed (an answer that could not be read)."""
        self._discord_errors.labels(endpoint, failure).inc()


class MetricsDirectoryError(Exception):
    """``PROMETHEUS_MULTIPROC_DIR`` names no directory this process can write."""


def multiprocess_directory() -> Path | None:
    """Where prometheus_client keeps the values of every worker process, when it does."""
    for name in MULTIPROCESS_VARIABLES:
        if os.environ.get(name):
            return Path(os.environ[name])
    return None


@functools.cache
def process_metrics() -> PrometheusMetrics:
    """The process's metrics, made at first use: a metric can be registered once only.

    In multiprocess mode the first metric opens a file in the directory: a missing directory
    is said here, by name, rather than as a ``FileNotFoundError`` at some first count."""
    directory = multiprocess_directory()
    if directory is not None and not (directory.is_dir() and os.access(directory, os.W_OK)):
        raise MetricsDirectoryError(
            "PROMETHEUS_MULTIPROC_DIR must be an existing directory this process can write "
            "(an empty one, emptied before the server starts)"
        )
    return PrometheusMetrics()


def multiprocess_registry() -> CollectorRegistry | None:
    """In multiprocess mode, a registry adding up the values every process wrote."""
    if multiprocess_directory() is None:
        return None
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def mark_process_dead() -> None:
    """At a process's end in multiprocess mode: its live gauges (requests in progress) go."""
    if multiprocess_directory() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
