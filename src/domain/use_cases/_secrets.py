"""Using a one-time secret: the OAuth ``state``, a ``/link`` ticket, an emailed link.

One implementation of the rule for every kind, so that none is checked differently: the token
must look like one of ours, it is looked up by its digest only, and spending it is one atomic
consume whose loser learns whether the secret was unknown, already used or expired (and, for
a secret bound to a browser, whether this is that browser).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from domain import errors
from domain.model import EmailPurpose, EmailToken
from domain.policies import SECRET_REFUSALS, SecretStatus, check_one_time_secret
from domain.ports import EmailTokenRepository


class OneTimeRow(Protocol):
    @property
    def expires_at(self) -> datetime: ...

    @property
    def consumed_at(self) -> datetime | None: ...


R = TypeVar("R", bound=OneTimeRow)
R_co = TypeVar("R_co", bound=OneTimeRow, covariant=True)


class OneTimeSecrets(Protocol[R_co]):
    """What every repository of one-time secrets offers (see ``PendingLoginRepository``)."""

    async def consume(self, digest: str, now: datetime) -> R_co | None: ...

    async def get(self, digest: str) -> R_co | None: ...


Refusal = Callable[[SecretStatus], errors.DomainError]


def default_refusal(status: SecretStatus) -> errors.DomainError:
    return SECRET_REFUSALS[status]()


async def use_secret(
    store: OneTimeSecrets[R],
    digest: str | None,
    now: datetime,
    *,
    spend: bool,
    refusal: Refusal = default_refusal,
    bound_to: Callable[[R], str] | None = None,
    browser_digests: Collection[str] = (),
) -> R:
    """The secret's row, or the refusal for its status (``digest`` from ``digest_of``).

    ``spend=True`` consumes it in the caller's transaction (a caller that rolls back leaves it
    usable; one that commits a refusal leaves it spent); ``spend=False`` only looks, for a page
    that shows what the secret is for before a form spends it. ``bound_to`` names the browser
    digest a row was bound to: then one of ``browser_digests`` (the browser's binding cookie
    values, digested) must match it.
    """
    if digest is None:
        raise refusal(SecretStatus.UNKNOWN)
    if spend:
        row = await store.consume(digest, now)
        taken_before = row is None
        if row is None:
            row = await store.get(digest)
    else:
        row = await store.get(digest)
        taken_before = row is not None and row.consumed_at is not None
    status = check_one_time_secret(
        found=row is not None,
        consumed_by_someone_else=taken_before,
        expires_at=row.expires_at if row is not None else None,
        now=now,
        expected_browser_digest=bound_to(row) if bound_to and row is not None else None,
        browser_digests=browser_digests,
    )
    if status is not SecretStatus.VALID or row is None:
        raise refusal(status)
    return row


@dataclass(frozen=True, slots=True)
class EmailLinks:
    """The emailed links of one purpose, seen as one store: a reset link is no confirm link."""

    repo: EmailTokenRepository
    purpose: EmailPurpose

    async def consume(self, digest: str, now: datetime) -> EmailToken | None:
        return await self.repo.consume(digest, self.purpose, now)

    async def get(self, digest: str) -> EmailToken | None:
        token = await self.repo.get(digest)
        return token if token is not None and token.purpose is self.purpose else None
