"""Addresses whose domain is written beyond ASCII are stored as mail software resolves them:
the domain mapped as IDNA maps it (example.com written in fullwidth letters is
example.com), each label beyond ASCII as its A-label ("bücher.de" is xn--bcher-kva.de).
Before, such an address was another address to the unique index than the one its mail went
to: one mailbox could confirm several accounts, and a mail server without SMTPUTF8 refused it.

This revision rewrites the accounts' addresses written so (the address and its matching
form). When one now matches another account's address and exactly one of the accounts
holding it confirmed it (none shared it before), that one keeps it and the others lose it,
as 0013 took the addresses nobody proved. Otherwise every account holding it is marked
``email_shared``, as revision 0003 marked the addresses accounts shared then: such an address
matches no Discord sign-in (it is ambiguous) and is left out of the unique index. The old
forms are not restored by a downgrade (the new ones are valid addresses there too).

An address whose new form is no address is removed from its account (unconfirmed, as 0013
removed the addresses nobody proved): longer than the column's 254 characters once each label
is an A-label (a 188-character address can grow to 500: Postgres refused the rewrite and the
upgrade failed, for one sign-up anybody could make), or holding what the mapping turns into
an "@", a blank, a character such as ``<`` or ``,``, or an encoded word (a fullwidth "@" in
the domain made ``me@evil.example@gmail.com``), or with an empty label in its domain
(``eve@bücher.de.``, which Postfix delivers to eve@xn--bcher-kva.de, perhaps another
account's), or an invisible format character its A-label hides. The version that writes this
form refuses such addresses (``validate_email``), and mail to one could not be delivered. The
person can add an address again from the account page.

During a rolling upgrade, mind sign-ups and email changes: an older version running beside
this one still stores such an address as typed, after this revision ran. This version then
finds that account by neither form (signing in with the address, or asking for a reset to
it, finds no account), another account may take the new form, and from then on every change
to the first account that keeps its address (a new password, "sign out everywhere") is
refused as a conflict, until its owner changes the address. Keep the older instances from
taking sign-ups and email changes until they are gone (or stop them first). Revision 0018 runs
this rewrite again over the addresses stored so, and removes those this revision as first
released kept (an empty label, a format character inside an A-label).

Revision ID: 0016_email_domains_in_ascii
Revises: 0015_web_instances
Create Date: 2026-11-24
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_email_domains_in_ascii"
down_revision: str | None = "0015_web_instances"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACCOUNTS = sa.table(
    "accounts",
    sa.column("id", sa.Uuid()),
    sa.column("email", sa.String()),
    sa.column("email_normalized", sa.String()),
    sa.column("email_verified", sa.Boolean()),
    sa.column("email_shared", sa.Boolean()),
)
_LABEL_DOTS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61", "."))
_COLUMN = 254  # accounts.email and accounts.email_normalized: VARCHAR(254)
_NOT_IN_EMAIL = frozenset('<>,;:"()[]\\\x7f')
_ENCODED_WORD = re.compile(r"=\?.*\?=")


def _normalized(email: str) -> str:
    """``domain.model.normalize_email`` as of this revision (kept here: a migration must not
    change when the code does)."""
    cleaned = email.strip().lower()
    local, at, domain = cleaned.rpartition("@")
    if not at or domain.isascii():
        return cleaned
    mapped = unicodedata.normalize("NFKC", domain).lower().translate(_LABEL_DOTS)
    labels = (
        label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
        for label in mapped.split(".")
    )
    return f"{local}@{'.'.join(labels)}"


def _is_address(address: str, stored: str) -> bool:
    """Whether ``address`` (the new form of the ``stored`` one) is one
    ``domain.model.validate_email`` takes, as of this revision: among its checks, no empty
    label in the domain (``bob@bücher.de.``: a trailing dot names the DNS root, and Postfix
    delivers to the address without it, perhaps another account's), and no invisible format
    character in the address as stored (an A-label hides one)."""
    return (
        len(address) <= _COLUMN
        and address.count("@") == 1
        and not address.startswith("@")
        and not address.endswith("@")
        and "" not in address.rpartition("@")[2].split(".")
        and not any(ch.isspace() or ord(ch) < 32 or ch in _NOT_IN_EMAIL for ch in address)
        and not any(unicodedata.category(ch) == "Cf" for ch in address + stored)
        and not _ENCODED_WORD.search(address)
    )


def upgrade() -> None:
    bind = op.get_bind()
    accounts = _ACCOUNTS
    # Only addresses beyond printable ASCII can change (an ASCII one was lower-cased already).
    beyond_ascii = (
        accounts.c.email.regexp_match("[^ -~]")
        if bind.dialect.name == "postgresql"
        else accounts.c.email.op("GLOB")("*[^ -~]*")
    )
    columns = (accounts.c.id, accounts.c.email_verified, accounts.c.email_shared)
    rows = bind.execute(
        sa.select(*columns, accounts.c.email, accounts.c.email_normalized).where(
            accounts.c.email.is_not(None), beyond_ascii
        )
    ).all()
    rewritten = {row.id: _normalized(row.email) for row in rows}
    removed = {row.id for row in rows if not _is_address(rewritten[row.id], row.email)}
    changed = {
        row.id: rewritten[row.id]
        for row in rows
        if row.id not in removed and rewritten[row.id] != row.email_normalized
    }
    # Every account holding each new form: (confirmed, shared already) by account.
    holders: dict[str, dict[object, tuple[bool, bool]]] = {}
    wanted = sorted(set(changed.values()))
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for holder in bind.execute(
            sa.select(*columns, accounts.c.email_normalized).where(
                accounts.c.email_normalized.in_(chunk)
            )
        ):
            holders.setdefault(holder.email_normalized, {})[holder.id] = (
                holder.email_verified,
                holder.email_shared,
            )
    for row in rows:
        if row.id in changed:
            holders.setdefault(changed[row.id], {})[row.id] = (
                row.email_verified,
                row.email_shared,
            )
    losing, shared = _settle_clashes(holders)
    removed |= losing
    for account_id in sorted(removed, key=str):
        bind.execute(
            sa.update(accounts)
            .where(accounts.c.id == account_id)
            .values(email=None, email_normalized=None, email_verified=False, email_shared=False)
        )
    # Marked first: the unique index leaves out a shared address before a second one arrives.
    for account_id in sorted(shared - changed.keys(), key=str):
        bind.execute(
            sa.update(accounts).where(accounts.c.id == account_id).values(email_shared=True)
        )
    for account_id, address in sorted(changed.items(), key=lambda item: str(item[0])):
        if account_id in removed:
            continue
        values: dict[str, object] = {"email": address, "email_normalized": address}
        if account_id in shared:
            values["email_shared"] = True
        bind.execute(sa.update(accounts).where(accounts.c.id == account_id).values(**values))


def _settle_clashes(
    holders: dict[str, dict[object, tuple[bool, bool]]],
) -> tuple[set[object], set[object]]:
    """Of the accounts holding one address: those that lose it, those that share it."""
    losing: set[object] = set()
    shared: set[object] = set()
    for found in holders.values():
        if len(found) < 2:
            continue
        confirmed = [i for i, (verified, _) in found.items() if verified]
        if len(confirmed) == 1 and not any(was for _, was in found.values()):
            # One of them proved the mailbox: it keeps the address, the others lose it, as
            # 0013 took the addresses nobody proved (marking them all shared would take the
            # owner's Discord email matching away for good, the others holding it).
            losing |= found.keys() - set(confirmed)
        else:
            shared |= found.keys()
    return losing, shared


def downgrade() -> None:
    pass  # the addresses keep their new form: valid at every revision
