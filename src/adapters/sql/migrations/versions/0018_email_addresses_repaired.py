"""Revision 0016's rewrite of the accounts' addresses, run again over those it missed:

- An address an older version stored after 0016 ran, during a rolling upgrade (an instance of
  a version before 0016 still taking sign-ups and email changes): kept as typed
  (``Eve@Bücher.de``, matched as ``eve@bücher.de``), which this version finds by neither form.
- An address 0016 as first released rewrote instead of removing: one whose domain has an
  empty label (``eve@bücher.de.`` became ``eve@xn--bcher-kva.de.``, where Postfix delivers
  eve@xn--bcher-kva.de's mail, perhaps another account's), or one holding an invisible format
  character that its A-label now hides (found by decoding the A-labels).
- An address in ASCII that this version refuses (``validate_email``), stored before it did
  and never rewritten (0016 read only addresses beyond ASCII): ``bob@example.com.`` (the DNS
  root's spelling of bob@example.com, another account for that mailbox), an encoded word,
  two "@".

With 0016's rules, frozen here as 0016 froze them (a migration must not change when the
code does): the address takes the form ``domain.model.normalize_email`` gives (address and
matching form alike, as the adapter writes them); one that then matches another account's
stays with the one account that confirmed it when exactly one did (none shared it before),
the others losing it, or else every account holding it is marked ``email_shared``; and one
that is no address in that form is removed from its account (it can add another).

Only the rows a filter cannot rule out are read: an address beyond printable ASCII, with an
A-label, or with a character or shape the checks refuse, or whose matching form is not its
lower case (or missing). Of those, only the ones that change are written, and each only if it
still holds what was read (an instance serving meanwhile may have changed it). A database
with nothing to repair is read, not written; a second run changes nothing.

The downgrade does nothing: a repaired address is valid at every revision, and a removed one
is not kept anywhere. So ``db downgrade 0017_emails_by_recipient --yes`` then ``db upgrade``
runs this repair again, changing only what needs it: after an upgrade from a version before
0016 (both revisions in one step), once the older instances that kept taking sign-ups are
gone. An instance of the version that shipped 0016 stores addresses in this form already.

Revision ID: 0018_email_addresses_repaired
Revises: 0017_emails_by_recipient
Create Date: 2026-11-24
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_email_addresses_repaired"
down_revision: str | None = "0017_emails_by_recipient"
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
    """``domain.model.normalize_email`` as of this revision (as 0016 has it)."""
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
    ``domain.model.validate_email`` takes, as of this revision (as 0016 has it): among its
    checks, no empty label in the domain, and no invisible format character in the address as
    stored or in what its A-labels encode (0016 as first released wrote one into an A-label,
    which shows it no more)."""
    return (
        len(address) <= _COLUMN
        and address.count("@") == 1
        and not address.startswith("@")
        and not address.endswith("@")
        and "" not in address.rpartition("@")[2].split(".")
        and not any(ch.isspace() or ord(ch) < 32 or ch in _NOT_IN_EMAIL for ch in address)
        and not any(unicodedata.category(ch) == "Cf" for ch in address + stored + _decoded(address))
        and not _ENCODED_WORD.search(address)
    )


def _decoded(address: str) -> str:
    """What the A-labels of ``address``'s domain encode (one that is no punycode: nothing)."""
    found = []
    for label in address.rpartition("@")[2].split("."):
        if label.startswith("xn--"):
            try:
                found.append(label[4:].encode("ascii").decode("punycode"))
            except (ValueError, OverflowError):  # UnicodeError is a ValueError
                continue
    return "".join(found)


def _may_need_repair(postgres: bool) -> sa.ColumnElement[bool]:
    """Whether a row's address may need repair: true for every row ``_normalized`` would
    change or ``_is_address`` refuses (and for some more, which are read and left alone).
    An address in printable ASCII is its own new form but for case and surrounding blanks."""
    email, normalized = _ACCOUNTS.c.email, _ACCOUNTS.c.email_normalized

    def beyond_ascii(column: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
        if postgres:
            return column.regexp_match("[^ -~]")
        return column.op("GLOB")("*[^ -~]*")

    refused_characters = " " + "".join(sorted(_NOT_IN_EMAIL - {"\x7f"}))
    return sa.or_(
        normalized.is_(None),
        normalized != sa.func.lower(email),
        beyond_ascii(email),  # also every control character, DEL and format character
        beyond_ascii(normalized),
        sa.func.length(email) > _COLUMN,
        sa.not_(email.contains("@")),
        email.like("%@%@%"),
        email.startswith("@"),
        email.endswith("@"),
        email.endswith("."),
        email.contains("@."),
        email.contains(".."),
        email.like("%=?%?=%"),
        sa.func.lower(email).contains("xn--"),
        *(email.contains(ch, autoescape=True) for ch in refused_characters),
    )


def upgrade() -> None:
    bind = op.get_bind()
    accounts = _ACCOUNTS
    columns = (accounts.c.id, accounts.c.email_verified, accounts.c.email_shared)
    rows = bind.execute(
        sa.select(*columns, accounts.c.email, accounts.c.email_normalized).where(
            accounts.c.email.is_not(None), _may_need_repair(bind.dialect.name == "postgresql")
        )
    ).all()
    # What each row held when read: it is written only if it still does.
    read = {row.id: (row.email, row.email_normalized) for row in rows}
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
            sa.select(*columns, accounts.c.email, accounts.c.email_normalized).where(
                accounts.c.email_normalized.in_(chunk)
            )
        ):
            if holder.id in removed or holder.id in changed:  # holds it no more
                continue
            read.setdefault(holder.id, (holder.email, holder.email_normalized))
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

    def as_read(account_id: object) -> sa.ColumnElement[bool]:
        email, normalized = read[account_id]
        return sa.and_(
            accounts.c.id == account_id,
            accounts.c.email == email,
            accounts.c.email_normalized.is_not_distinct_from(normalized),
        )

    for account_id in sorted(removed, key=str):
        bind.execute(
            sa.update(accounts)
            .where(as_read(account_id))
            .values(email=None, email_normalized=None, email_verified=False, email_shared=False)
        )
    # Marked first: the unique index leaves out a shared address before a second one arrives.
    for account_id in sorted(shared - changed.keys(), key=str):
        bind.execute(sa.update(accounts).where(as_read(account_id)).values(email_shared=True))
    for account_id, address in sorted(changed.items(), key=lambda item: str(item[0])):
        if account_id in removed:
            continue
        values: dict[str, object] = {"email": address, "email_normalized": address}
        if account_id in shared:
            values["email_shared"] = True
        bind.execute(sa.update(accounts).where(as_read(account_id)).values(**values))


def _settle_clashes(
    holders: dict[str, dict[object, tuple[bool, bool]]],
) -> tuple[set[object], set[object]]:
    """Of the accounts holding one address: those that lose it, those that share it (as 0016
    settles them)."""
    losing: set[object] = set()
    shared: set[object] = set()
    for found in holders.values():
        if len(found) < 2:
            continue
        confirmed = [i for i, (verified, _) in found.items() if verified]
        if len(confirmed) == 1 and not any(was for _, was in found.values()):
            losing |= found.keys() - set(confirmed)
        else:
            shared |= found.keys()
    return losing, shared


def downgrade() -> None:
    pass  # a repaired address is valid at every revision; a removed one is not kept anywhere
