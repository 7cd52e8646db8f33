"""Proven ownership of an address wins over unproven claims to it.

Any number of accounts may hold an address that none of them confirmed (sign-ups and email
changes are claims, not proofs); one account at most holds it confirmed (the database's unique
index on confirmed addresses). The account that proves it (its confirmation link, a password
reset link: our own emailed links) takes it from every account that holds it unconfirmed: their
links to it stop working, they keep everything else. An address some account confirmed is never
taken. Discord's verified email takes nothing: Sign in with Discord creates an account only for
an address no account holds, confirmed or not (DESIGN.md's table; ``address_held``).

Locks, in one order: every account holding the address (by id), then the address
(``OutgoingEmailRepository.lock_recipient``, which the transactions that queue an email to it
take after their own account's lock). So two proofs at once take turns, and a claim made
meanwhile either is seen (and taken) or sees the proof (and is refused).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import datetime

from domain import errors
from domain.model import Account, AccountId, AuditEvent, AuditKind, EmailPurpose, normalize_email
from domain.ports import UnitOfWork


def _by_id(account_id: AccountId) -> str:
    return str(account_id.value)


async def lock_holders(
    uow: UnitOfWork, address: str, *, also: Collection[AccountId] = ()
) -> frozenset[AccountId]:
    """Lock every account that holds ``address`` (and ``also``), in one order: the first
    locks of a transaction that may take the address (``take_address``). Their ids."""
    found = {account.id for account in await uow.accounts.find_by_email(address)} | set(also)
    for account_id in sorted(found, key=_by_id):
        await uow.accounts.lock(account_id)
    return frozenset(found)


def confirmed_elsewhere(holders: Collection[Account], account_id: AccountId | None) -> bool:
    """Whether an account other than ``account_id`` holds the address confirmed."""
    return any(a.email_verified and a.id != account_id for a in holders)


async def claim_refused(uow: UnitOfWork, address: str, account_id: AccountId | None) -> bool:
    """Whether another account holds ``address`` confirmed, read once the address is locked
    (a sign-up or an email change: a claim made while a proof of the address commits is
    refused after it, not left beside it)."""
    await uow.outgoing_emails.lock_recipient(normalize_email(address) or address)
    return confirmed_elsewhere(await uow.accounts.find_by_email(address), account_id)


async def address_held(uow: UnitOfWork, address: str, account_id: AccountId) -> bool:
    """Whether an account other than ``account_id`` holds ``address``, confirmed or not, read
    once the address is locked: a new Discord account with Discord's verified address (made
    because no account held it) whose address a sign-up or an email change claimed meanwhile
    (it checks the address under the same lock, ``claim_refused``). One of the two sees the
    other: the claim is refused as taken, or the Discord sign-in decides again (and refuses,
    an account having the address)."""
    await uow.outgoing_emails.lock_recipient(normalize_email(address) or address)
    return any(a.id != account_id for a in await uow.accounts.find_by_email(address))


async def take_address(
    uow: UnitOfWork,
    address: str,
    *,
    owner: AccountId,
    locked: Collection[AccountId],
    now: datetime,
    proof: str,
) -> list[AccountId]:
    """``owner`` proved ``address``: take it from every other account that holds it
    unconfirmed. Call it after ``lock_holders`` (``locked``). ``EmailTaken`` when another
    account confirmed it (nothing is taken). An account that claimed it since those locks (a
    sign-up or email change that committed meanwhile) is locked now if no transaction holds
    it, else ``Conflict`` (run the transaction again: it locks that one in order): waiting
    for it here, holding the address, could wait for a transaction that waits for the
    address. The accounts it was taken from: each audited (``email_taken``), its links to the
    address spent."""
    await uow.outgoing_emails.lock_recipient(normalize_email(address) or address)
    others = [a for a in await uow.accounts.find_by_email(address) if a.id != owner]
    if confirmed_elsewhere(others, owner):
        raise errors.EmailTaken("Another account has confirmed this email address.")
    for index, account in enumerate(others):
        if account.id not in locked:
            fresh = await uow.accounts.lock_if_free(account.id)
            if fresh is None:
                raise errors.Conflict()
            others[index] = fresh
    others = [
        a for a in others if normalize_email(a.email) == normalize_email(address)
    ]  # as they are once locked
    for account in others:
        await uow.accounts.update(
            replace(account, email=None, email_verified=False, email_shared=False)
        )
        for purpose in EmailPurpose:  # the links sent to it stop working
            await uow.email_tokens.consume_all(account.id, purpose, now)
        await uow.audit.record(
            AuditEvent(
                AuditKind.EMAIL_TAKEN,
                now,
                account.id,
                None,
                {"by": str(owner.value), "proof": proof},
            )
        )
    return [a.id for a in others]
