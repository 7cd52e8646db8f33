"""Rows a newer release wrote (a rolling upgrade's overlap, or a code-only rollback) with values
this version's enums do not know: what reads them refuses them, skips them or shows them as
text, never a 500 nor a wrong use. Through the web app (in-memory adapters, the fake Discord);
the SQL adapters' reads of such rows are tested on SQLite and Postgres
(``tests/integration/test_sql_repositories.py``)."""

from __future__ import annotations

from dataclasses import replace

from adapters.memory import MemoryDatabase
from domain.model import DiscordId
from tests.harness import Harness
from tests.web_support import Client

AGAIN = "started by another version of this site"


async def _approved(h: Harness, client: Client, discord_id: int) -> str:
    """ "Sign in with Discord" started and approved at Discord: the callback's URL."""
    h.discord_user(discord_id, username="dora", email="dora@example.com")
    started = await client.get("/auth/discord/login", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(discord_id))
    return f"/auth/discord/callback?code={approval.code}&state={approval.state}"


async def test_a_round_trip_of_a_purpose_a_newer_release_started_is_refused_unspent(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """A pending login whose purpose this version does not know (a newer release started the
    round trip; its callback came to this instance): read as its text, it was a 500 (SQL read
    it into the enum); and a purpose as text would have fallen through to a plain sign-in,
    the one the callback finishes when no other purpose matches. It is refused with a page
    saying to start again, and left unspent for an instance that knows it."""
    callback = await _approved(h, client, 7301)
    [(digest, pending)] = db.tables.pending_logins.items()
    db.tables.pending_logins[digest] = replace(pending, purpose="passkey_enrol")

    answer = await client.get(callback, follow_redirects=False)
    assert answer.status_code == 409, answer.text
    assert AGAIN in answer.text
    assert "Please start again" in answer.text
    assert "Start again from the sign-in page." in answer.text
    assert "tfl_session" not in answer.cookies
    assert db.tables.pending_logins[digest].consumed_at is None  # not spent
    assert not db.tables.sessions
    assert not db.tables.accounts
    assert not db.tables.links


async def test_a_newer_releases_round_trip_spent_by_it_is_refused_as_started_elsewhere(
    h: Harness, client: Client, db: MemoryDatabase
) -> None:
    """Its callback loaded again (a reload) on this version after an instance of the newer
    release spent the state: not taken for this version's sign-in loaded twice
    (``FinishDiscordConfirmation``), the same page to start again."""
    callback = await _approved(h, client, 7302)
    [(digest, pending)] = db.tables.pending_logins.items()
    spent = replace(pending, purpose="passkey_enrol", consumed_at=h.clock.now())
    db.tables.pending_logins[digest] = spent

    answer = await client.get(callback, follow_redirects=False)
    assert answer.status_code == 409, answer.text
    assert AGAIN in answer.text
    assert db.tables.pending_logins[digest] == spent
    assert not db.tables.sessions
