"""Addresses whose domain is written beyond ASCII are stored as mail software resolves them:
the domain mapped as IDNA maps it (example.com written in fullwidth letters is
example.com), each label beyond ASCII as its A-label ("bücher.de" is xn--bcher-kva.de).
Before, such an address was another address to the unique index than the one its mail went
to: one mailbox could confirm several accounts, and a mail server without SMTPUTF8 refused it.

This revision rewrites the accounts' addresses written so (the address and its matching
form). When one now matches another account's address, every account holding it is marked
``email_shared``, as revision 0003 marked the addresses accounts shared then: such an address
matches no Discord sign-in (it is ambiguous) and is left out of the unique index. The old
forms are not restored by a downgrade (the new ones are valid addresses there too).

Revision ID: 0016_email_domains_in_ascii
Revises: 0015_web_instances
Create Date: 2026-11-24
"""

from __future__ import annotations

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
    sa.column("email_shared", sa.Boolean()),
)
_LABEL_DOTS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61", "."))


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


def upgrade() -> None:
    bind = op.get_bind()
    accounts = _ACCOUNTS
    # Only addresses beyond printable ASCII can change (an ASCII one was lower-cased already).
    beyond_ascii = (
        accounts.c.email.regexp_match("[^ -~]")
        if bind.dialect.name == "postgresql"
        else accounts.c.email.op("GLOB")("*[^ -~]*")
    )
    rows = bind.execute(
        sa.select(accounts.c.id, accounts.c.email, accounts.c.email_normalized).where(
            accounts.c.email.is_not(None), beyond_ascii
        )
    ).all()
    changed = {
        row.id: _normalized(row.email)
        for row in rows
        if _normalized(row.email) != row.email_normalized
    }
    if not changed:
        return
    holders: dict[str, set[object]] = {}
    wanted = sorted(set(changed.values()))
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for row in bind.execute(
            sa.select(accounts.c.id, accounts.c.email_normalized).where(
                accounts.c.email_normalized.in_(chunk)
            )
        ):
            holders.setdefault(row.email_normalized, set()).add(row.id)
    for account_id, address in changed.items():
        holders.setdefault(address, set()).add(account_id)
    shared = {i for ids in holders.values() if len(ids) > 1 for i in ids}
    # Marked first: the unique index leaves out a shared address before a second one arrives.
    for account_id in sorted(shared - changed.keys(), key=str):
        bind.execute(
            sa.update(accounts).where(accounts.c.id == account_id).values(email_shared=True)
        )
    for account_id, address in sorted(changed.items(), key=lambda item: str(item[0])):
        values: dict[str, object] = {"email": address, "email_normalized": address}
        if account_id in shared:
            values["email_shared"] = True
        bind.execute(sa.update(accounts).where(accounts.c.id == account_id).values(**values))


def downgrade() -> None:
    pass  # the addresses keep their new form: valid at every revision
