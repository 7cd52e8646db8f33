"""The failed sign-ins audited before the login was keyed lose their login: a plain SHA-256.

A failed sign-in is audited (``sign_in_failed``) with the login typed, and a login field
sometimes holds a password typed into the wrong box. Before this version the login was
recorded as its plain SHA-256 (``"login": <64 lower-case hex digits>``), which a copy of the
database gives back to a dictionary at billions of guesses a second, for the audit's
retention (365 days by default). This version records an HMAC under the secret key instead
(``TokenIssuer.derive``: 43 characters of URL-safe base64 without padding), which this
revision leaves as it is: the two are told apart by their form (64 hex digits are never 43
characters), with no marker needed.

Only the ``login`` key of those events goes (their client address, account and time stay): it
cannot be turned into this version's HMAC, which needs the login itself. Only the rows that hold
one are written; a second run changes nothing.

The downgrade does nothing: a removed digest is not kept anywhere. An instance of the older
version serving beside this one during a rolling upgrade goes on recording plain digests after
this revision ran; once those instances are gone, ``taskflow-link db downgrade
0019_instance_webhooks --yes`` then ``db upgrade`` runs this removal again (this revision adds
no table or column, so that downgrade drops nothing).

Revision ID: 0020_plain_login_digests_gone
Revises: 0019_instance_webhooks
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020_plain_login_digests_gone"
down_revision: str | None = "0019_instance_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As of this revision: the event's kind, and the form of a plain SHA-256 of the login
# (``hashlib.sha256(...).hexdigest()``, as ``TokenIssuer.digest`` gave it).
_KIND = "sign_in_failed"

# Postgres: ``detail`` is ``json`` (not ``jsonb``): the object is rebuilt without the key
# (``jsonb``'s ``-`` would refuse a value holding ``\u0000``). An object left empty is ``{}``.
_POSTGRES = """
UPDATE audit_events
SET detail = COALESCE(
    (SELECT json_object_agg(item.key, item.value)
     FROM json_each(audit_events.detail) AS item
     WHERE item.key <> 'login'),
    '{}'::json)
WHERE kind = :kind AND (detail ->> 'login') ~ '^[0-9a-f]{64}$'
"""

# SQLite: ``detail`` is JSON text (JSON1's functions read it).
_SQLITE = """
UPDATE audit_events
SET detail = json_remove(detail, '$.login')
WHERE kind = :kind
  AND length(json_extract(detail, '$.login')) = 64
  AND json_extract(detail, '$.login') NOT GLOB '*[^0-9a-f]*'
"""


def upgrade() -> None:
    bind = op.get_bind()
    statement = _POSTGRES if bind.dialect.name == "postgresql" else _SQLITE
    bind.execute(sa.text(statement), {"kind": _KIND})


def downgrade() -> None:
    pass  # a removed digest is not kept anywhere
