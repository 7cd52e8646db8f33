"""Delivering the webhook outbox, and what operators see and do about it.

Each endpoint's deliveries go one at a time in the order they were queued, whichever worker
of whichever instance sends them: a claim takes an endpoint's first pending deliveries only
while no other claim holds its first one (see ``WebhookRepository.claim_due``), and endpoints
go side by side. A receiver that sees ``link.created`` after ``link.deleted`` would think the
member is still linked. So a failed attempt holds back the deliveries queued after it until it
is delivered, given up or refused with 410, and ends its endpoint's share of the pass (the
rest of the batch is let go, to follow it): a dead endpoint costs a pass one attempt, bounded
by the webhook timeout. So does a slow one: its share ends once its attempts took
``ENDPOINT_TURN``, since a pass waits for every endpoint's share. At least once: an attempt
whose answer was lost is made again, under the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from domain import errors
from domain.ports import Clock, UnitOfWork, UnitOfWorkFactory, WebhookMessage, WebhookSender
from domain.use_cases._claims import Claims, Stopping
from domain.use_cases._webhooks import WebhookOutbox
from domain.webhooks import (
    Outcome,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookState,
    outcome_of,
    retry_delay,
)

# A worker that claimed a delivery and died lets it go after this long. The lease is renewed
# just before each attempt, so it need only outlast one (the timeout is at most a minute).
CLAIM_LEASE = timedelta(minutes=2)
# Deliveries and their events stay this long after they finished, for `webhooks status`.
KEEP_FINISHED_WEBHOOKS = timedelta(days=30)
# An endpoint's turn in a pass ends once its attempts have taken this long (the one under way
# is finished first), its other claimed deliveries let go for the next pass. A pass waits for
# every endpoint's turn: an endpoint answering 2xx slowly (a few seconds an answer) held the
# next deliveries of every other endpoint for up to 20 of its answers (20 timeouts, at worst);
# now it holds them about one, as a dead endpoint does.
ENDPOINT_TURN = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class WebhookReport:
    delivered: list[WebhookDelivery] = field(default_factory=list)
    retrying: list[WebhookDelivery] = field(default_factory=list)
    failed: list[WebhookDelivery] = field(default_factory=list)  # given up
    gone: list[WebhookDelivery] = field(default_factory=list)  # the endpoint said 410
    # Sent, but the lease had run out meanwhile and another worker took the delivery over:
    # this worker's outcome was dropped (that worker's stands).
    taken_over: list[WebhookDelivery] = field(default_factory=list)
    # What ended an endpoint's turn early (its outcome could not be written, say: the
    # database went away); the other endpoints' outcomes above still stand. Its deliveries
    # wait for their lease to run out, so this alone is no reason to look again at once.
    broken: list[Exception] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return any((self.delivered, self.retrying, self.failed, self.gone, self.taken_over))


class DeliverWebhooks:
    """Send what is due. Safe in several processes at once: each pass claims batches no
    other worker gets, and never an endpoint another worker is sending to."""

    def __init__(
        self, uow: UnitOfWorkFactory, clock: Clock, sender: WebhookSender, outbox: WebhookOutbox
    ) -> None:
        self._uow, self._clock, self._sender = uow, clock, sender
        self._endpoints = {e.key: e for e in outbox.endpoints}

    async def execute(self, limit: int = 20, *, stopping: Stopping | None = None) -> WebhookReport:
        """Up to ``limit`` deliveries per endpoint, each endpoint's in order and the endpoints
        side by side: a dead endpoint's backlog never takes a healthy one's turn, and it costs
        a pass one failed attempt (its other deliveries wait behind the one that failed). An
        endpoint another worker is sending to is left to it. ``stopping``: the worker's, when
        its process stops; each endpoint's turn then ends after the attempt under way, and
        what the pass claimed and did not attempt is let go at once (see ``Claims``)."""
        report = WebhookReport()
        if not self._endpoints:
            return report
        now = self._clock.now()
        async with contextlib.AsyncExitStack() as held:
            claims = {
                key: await held.enter_async_context(
                    Claims(self._uow, self._clock, _release, stopping)
                )
                for key in self._endpoints
            }
            async with self._uow() as uow:  # one short transaction: no lock outlives it
                gone = {g.endpoint for g in await uow.webhooks.gone_endpoints()}
                # One call: it locks the endpoints' queues in one order, whatever the order
                # of the URLs in this instance's settings (two orders could wait for each
                # other).
                wanted = [key for key in self._endpoints if key not in gone]
                claimed = await uow.webhooks.claim_due(now, now + CLAIM_LEASE, limit, wanted)
                # Asked again after the claim: an endpoint that answered 410 to another
                # worker between the two (on Postgres each statement sees what committed
                # before it) has its refused delivery out of the queue, and the ones behind
                # it let go: claimed, they would go out before it. They are let go again,
                # untried.
                if claimed:
                    gone = {g.endpoint for g in await uow.webhooks.gone_endpoints()}
                for delivery in claimed:
                    if delivery.endpoint in gone:
                        await uow.webhooks.renew_claim(delivery, now)
                    else:
                        claims[delivery.endpoint].took([delivery])
                await uow.commit()
            # Every endpoint's turn ends before the pass does, and one that fails (its
            # outcome could not be written, say) is reported with the others' outcomes: a
            # plain gather would raise at the first failure and leave the others sending,
            # detached from the pass (their outcomes never reported, still running while the
            # worker stops and the process closes what they use).
            outcomes = await asyncio.gather(
                *(
                    self._deliver_in_order(self._endpoints[key], endpoint_claims, report)
                    for key, endpoint_claims in claims.items()
                ),
                return_exceptions=True,
            )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                report.broken.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        return report

    async def _deliver_in_order(
        self,
        endpoint: WebhookEndpoint,
        claims: Claims[WebhookDelivery],
        report: WebhookReport,
    ) -> None:
        turn_ends = self._clock.now() + ENDPOINT_TURN
        for delivery in claims:
            if not await self._deliver(endpoint, delivery, report, claims):
                # Gone: the rest wait for `webhooks retry`. Failing: they wait behind the one
                # that failed (and would most likely fail too, a timeout each). Taken over:
                # they are the other worker's to send, after it. Either way, not from here.
                await self._let_go(claims.rest())
                return
            if self._clock.now() >= turn_ends:
                # A slow endpoint: the pass, and the other endpoints' next deliveries, wait
                # no longer for it. The rest go first in the next pass (at once: it was busy).
                await self._let_go(claims.rest())
                return

    async def _let_go(self, deliveries: list[WebhookDelivery]) -> None:
        """End this worker's lease on deliveries it will not attempt: due at once, they still
        wait behind their endpoint's first pending delivery, and go with it, not two minutes
        after. Any that another worker took over meanwhile stay as it leased them."""
        if not deliveries:
            return
        now = self._clock.now()
        async with self._uow() as uow:
            for delivery in deliveries:
                await uow.webhooks.renew_claim(delivery, now)
            await uow.commit()

    async def _deliver(
        self,
        endpoint: WebhookEndpoint,
        delivery: WebhookDelivery,
        report: WebhookReport,
        claims: Claims[WebhookDelivery] | None = None,
    ) -> bool:
        """One attempt; ``False`` when the endpoint answered 410 Gone, the attempt failed or
        another worker took the delivery over (its lease ran out): the endpoint's turn ends."""
        now = self._clock.now()
        async with self._uow() as uow:
            # The lease runs from here (earlier attempts of the batch may have taken a
            # while); if it ran out meanwhile, another worker may have the delivery now.
            claimed = await uow.webhooks.renew_claim(delivery, now + CLAIM_LEASE)
            await uow.commit()
            if claimed is not None and claims is not None:
                claims.holding(claimed)  # cut off while it is sent, it is let go as this
        if claimed is None:
            return False
        message = WebhookMessage(claimed.event.message_id, now, claimed.event.payload)
        try:
            outcome, error = outcome_of(await self._sender.send(endpoint, message))
        except errors.WebhookNotDelivered as exc:
            outcome, error = Outcome.RETRY, exc.message
        except Exception:
            outcome, error = Outcome.RETRY, "unexpected_error"
        attempts = claimed.attempts + 1
        # An error stays on record after a later success: `webhooks status` shows the last one.
        after = replace(
            claimed, attempts=attempts, last_attempt_at=now, last_error=error or claimed.last_error
        )
        listed = report.delivered  # where it is reported, once written back
        if outcome is Outcome.DELIVERED:
            after = replace(after, state=WebhookState.DELIVERED, finished_at=now)
        elif outcome is Outcome.GONE:
            after, listed = replace(after, state=WebhookState.GONE, finished_at=now), report.gone
        elif (delay := retry_delay(claimed, attempts)) is None:
            after = replace(after, state=WebhookState.FAILED, finished_at=now)
            listed = report.failed
        else:
            after, listed = replace(after, next_attempt_at=now + delay), report.retrying
        async with self._uow() as uow:
            # Only while the lease is still this worker's: a worker stalled past it (a paused
            # process, clocks apart) must not undo what the one that took the delivery over
            # did (a stale retry would send it again after later events; a stale 410 would
            # stop the endpoint).
            kept = await uow.webhooks.save(after, leased_until=claimed.next_attempt_at)
            if kept and outcome is Outcome.GONE:
                await uow.webhooks.mark_gone(endpoint, now)
            await uow.commit()
        if not kept:
            report.taken_over.append(after)
            return False
        listed.append(after)
        return outcome is Outcome.DELIVERED


async def _release(uow: UnitOfWork, delivery: WebhookDelivery, now: datetime) -> bool:
    return await uow.webhooks.release(delivery, now)


class RequeueWebhooks:
    """``taskflow-link webhooks retry``: send again what was given up or refused with 410
    (every such delivery, or one by its id), with a fresh round of attempts, and send to the
    endpoints that answered 410 again (all of them, or the one whose refused delivery is
    named; a given-up delivery named alone waits behind its endpoint's refused one)."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(self, delivery_id: uuid.UUID | None = None) -> int:
        """How many deliveries were requeued; ``NotFound`` when ``delivery_id`` names no
        failed or gone delivery."""
        async with self._uow() as uow:
            if delivery_id is None:
                requeued = await uow.webhooks.requeue(self._clock.now())
                await uow.webhooks.forget_gone()
            else:
                delivery = await uow.webhooks.get(delivery_id)
                if delivery is None or delivery.state not in (
                    WebhookState.FAILED,
                    WebhookState.GONE,
                ):
                    raise errors.NotFound("No webhook delivery with this id failed or was refused.")
                requeued = await uow.webhooks.requeue(self._clock.now(), delivery_id)
                # Only the delivery refused with 410 (its endpoint's stopped head) starts the
                # endpoint again: a given-up one sent again must not let the deliveries queued
                # after the refused one go out while the refused one stays unsent (a hole in
                # the receiver's stream, filled out of order by a later `webhooks retry`).
                if delivery.state is WebhookState.GONE:
                    await uow.webhooks.forget_gone(delivery.endpoint)
            await uow.commit()
        return requeued


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    host: str
    configured: bool
    # Every state, and a newer release's (a rolling upgrade, a rollback) under its text.
    counts: dict[WebhookState | str, int]
    gone_since: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    delivered_since_error: bool = False  # last_error_at is then the delivery's time


class ShowWebhookStatus:
    """``taskflow-link webhooks status``: per endpoint, configured ones first (in the order
    of the settings), then any that deliveries still name."""

    def __init__(self, uow: UnitOfWorkFactory, outbox: WebhookOutbox) -> None:
        self._uow, self._endpoints = uow, list(outbox.endpoints)

    async def execute(self) -> list[EndpointStatus]:
        async with self._uow(read_only=True) as uow:
            summaries = {s.endpoint: s for s in await uow.webhooks.summary()}
            gone = {g.endpoint: g for g in await uow.webhooks.gone_endpoints()}
        configured = [e.key for e in self._endpoints]
        hosts = {e.key: e.host for e in self._endpoints}
        hosts.update({k: s.host for k, s in summaries.items() if k not in hosts})
        hosts.update({k: g.host for k, g in gone.items() if k not in hosts})
        keys = configured + sorted(k for k in hosts if k not in configured)
        found = []
        for key in keys:
            summary = summaries.get(key)
            found.append(
                EndpointStatus(
                    host=hosts[key],
                    configured=key in configured,
                    counts=dict.fromkeys(WebhookState, 0) | (summary.counts if summary else {}),
                    gone_since=gone[key].since if key in gone else None,
                    last_error=summary.last_error if summary else None,
                    last_error_at=summary.last_error_at if summary else None,
                    delivered_since_error=summary.delivered_since_error if summary else False,
                )
            )
        return found
