"""Random sequences of logins, links, ticket redemptions, unlinks, replays and clock moves,
checking the invariants the whole service rests on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, assume, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import AccountId, DiscordId, DiscordProfile, SignInMethod, normalize_email
from domain.use_cases import AuthOutcome, TicketIssued
from tests.harness import PASSWORD, Browser, Harness

T = TypeVar("T")
EMAILS = ["a@example.com", "B@example.com", "b@example.com", "c@example.com", None]
DISCORD_IDS = [101, 102, 103, 104]
NAMES = ["ann", "bob", "cid", "dee", "eve"]


class LinkingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.h = Harness.build()
        self.db: MemoryDatabase = self.h.container.memory_db()
        self.accounts: list[AccountId] = []
        # Secrets that already succeeded once, with what is needed to present them again.
        self.spent_states: list[tuple[str, str, Browser]] = []
        self.spent_tickets: list[str] = []
        self.unused_tickets: list[str] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.loop.close()

    def profile(self, discord_id: int, email: str | None, verified: bool) -> DiscordProfile:
        return self.h.discord_user(discord_id, email=email, verified=verified)

    # -- operations -------------------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES), email=st.sampled_from(EMAILS[:-1]), verified=st.booleans())
    def legacy_account(self, name: str, email: str, verified: bool) -> None:
        """Imported accounts: emails may repeat, some verified, some not."""
        try:
            account = self.run(self.h.legacy_account(name, email, verified=verified))
        except errors.Conflict:
            return
        self.accounts.append(account.id)

    @rule(
        discord_id=st.sampled_from(DISCORD_IDS),
        email=st.sampled_from(EMAILS),
        verified=st.booleans(),
    )
    def login_with_discord(self, discord_id: int, email: str | None, verified: bool) -> None:
        profile = self.profile(discord_id, email, verified)
        accounts_before = dict(self.db.tables.accounts)
        browser = Browser()
        started = self.run(self.h.start_login(browser))
        approval = self.h.discord.approve(started.authorize_url, profile.id)
        try:
            done = self.run(self.h.complete(browser, state=approval.state, code=approval.code))
        except errors.LinkRefused as refused:
            event(f"login refused: {refused.code}")
            return
        self.spent_states.append((approval.state, approval.code, browser))
        event(f"login: {done.outcome.value}")
        if done.outcome is AuthOutcome.CREATED:
            self.accounts.append(done.account_id)
        if done.outcome is AuthOutcome.LINKED_AND_SIGNED_IN:
            # Never a link from an unverified email, on either side.
            matched = accounts_before[done.account_id]
            assert profile.verified
            assert matched.email_verified
            assert normalize_email(matched.email) == normalize_email(profile.email)

    @precondition(lambda self: self.accounts)
    @rule(data=st.data(), discord_id=st.sampled_from(DISCORD_IDS))
    def link_from_account_page(self, data: st.DataObject, discord_id: int) -> None:
        account_id = data.draw(st.sampled_from(self.accounts))
        profile = self.profile(discord_id, None, False)
        with contextlib.suppress(errors.LinkRefused):
            self.run(self.h.discord_link(account_id, profile))

    @precondition(lambda self: self.accounts)
    @rule(data=st.data(), discord_id=st.sampled_from(DISCORD_IDS))
    def redeem_ticket(self, data: st.DataObject, discord_id: int) -> None:
        account_id = data.draw(st.sampled_from(self.accounts))
        issued = self.run(
            self.h.container.issue_link_ticket().execute(self.profile(discord_id, None, False).user)
        )
        if not isinstance(issued, TicketIssued):
            return
        try:
            self.run(self.h.confirm_ticket(issued.token, account_id))
        except errors.LinkRefused:
            self.unused_tickets.append(issued.token)  # let time (or a later /link) end it
            return
        self.spent_tickets.append(issued.token)

    @precondition(lambda self: self.accounts)
    @rule(
        data=st.data(),
        sender=st.sampled_from(DISCORD_IDS),
        receiver=st.sampled_from(DISCORD_IDS),
    )
    def forwarded_ticket(self, data: st.DataObject, sender: int, receiver: int) -> None:
        """A /link button confirmed by someone whom Discord knows as another account never
        links anything (the sender's Discord least of all)."""
        assume(sender != receiver)
        account_id = data.draw(st.sampled_from(self.accounts))
        issued = self.run(
            self.h.container.issue_link_ticket().execute(self.profile(sender, None, False).user)
        )
        if not isinstance(issued, TicketIssued):
            return
        links_before = dict(self.db.tables.links)
        try:
            self.run(
                self.h.confirm_ticket(issued.token, account_id, as_discord=DiscordId(receiver))
            )
        except errors.LinkRefused as refused:
            event(f"forwarded ticket refused: {refused.code}")
        else:
            raise AssertionError("a forwarded ticket linked an account")
        assert self.db.tables.links == links_before

    @rule(discord_id=st.sampled_from(DISCORD_IDS))
    def unlink(self, discord_id: int) -> None:
        unlink = self.h.container.unlink_discord()
        with contextlib.suppress(errors.NotLinked, errors.UnlinkWouldLockOut):
            self.run(unlink.execute(self.profile(discord_id, None, False).id))

    @precondition(lambda self: self.accounts)
    @rule(data=st.data())
    def set_password(self, data: st.DataObject) -> None:
        account_id = data.draw(st.sampled_from(self.accounts))
        if self.db.tables.accounts[account_id].password_hash is None:
            self.run(
                self.h.container.set_password().execute(
                    session_token=self.run(
                        self.h.session_for(account_id, proved_with=SignInMethod.DISCORD)
                    ),
                    new_password=PASSWORD,  # the one the harness types to prove it
                    current_password=None,
                )
            )

    @rule(minutes=st.integers(min_value=1, max_value=15))
    def time_passes(self, minutes: int) -> None:
        self.h.clock.advance(timedelta(minutes=minutes))

    # -- replays: a spent or expired secret never succeeds again ---------------------------------

    @precondition(lambda self: self.spent_states)
    @rule(data=st.data())
    def replay_state(self, data: st.DataObject) -> None:
        state, code, browser = data.draw(st.sampled_from(self.spent_states))
        before = (dict(self.db.tables.sessions), dict(self.db.tables.links))
        try:
            again = self.run(self.h.complete(browser, state=state, code=code))
        except (errors.SecretConsumed, errors.DiscordSignInFailed):
            event("state replay refused")
            return
        if again.outcome is AuthOutcome.CONFIRMING:  # the first load may be under way
            assert again.session_token is None
            event("state replay told to wait")
            return
        if again.outcome is AuthOutcome.CONFIRM_NEEDED:  # the proof asked for, shown again
            assert again.session_token is None
            assert again.proposal_token is not None
            assert (dict(self.db.tables.sessions), dict(self.db.tables.links)) == before
            digest = self.h.container.tokens().digest(again.proposal_token)
            assert digest in self.db.tables.link_proposals
            event("state replay handed over the first use's link proposal")
            return
        if again.outcome is AuthOutcome.STILL_SIGNED_IN:  # its browser still holds it
            assert again.session_token is None  # nothing handed over: its own cookie stands
            assert (dict(self.db.tables.sessions), dict(self.db.tables.links)) == before
            assert browser.session is not None
            held = self.db.tables.sessions[self.h.container.tokens().digest(browser.session)]
            assert held.account_id == again.account_id
            event("state replay from the browser still signed in: on, nothing handed")
            return
        # Its own browser within the minute (a double click): handed the session its first
        # use made, nothing made again.
        assert again.session_token is not None, "a consumed OAuth state succeeded twice"
        assert (dict(self.db.tables.sessions), dict(self.db.tables.links)) == before
        assert self.h.container.tokens().digest(again.session_token) in before[0]
        event("state replay handed over the first use's session")

    @precondition(lambda self: self.spent_tickets and self.accounts)
    @rule(data=st.data())
    def replay_ticket(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(self.spent_tickets))
        account_id = data.draw(st.sampled_from(self.accounts))
        try:
            self.run(self.h.confirm_ticket(token, account_id))
        except errors.SecretConsumed:
            event("ticket replay refused")
            return
        raise AssertionError("a consumed ticket succeeded twice")

    @precondition(lambda self: self.unused_tickets and self.accounts)
    @rule(data=st.data())
    def use_expired_ticket(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(self.unused_tickets))
        self.h.clock.advance(timedelta(minutes=10))
        account_id = data.draw(st.sampled_from(self.accounts))
        try:
            self.run(self.h.confirm_ticket(token, account_id))
        except errors.SecretExpired:
            event("expired ticket refused")
            return
        except errors.SecretConsumed:  # a later /link, link or unlink ended it first
            event("ended ticket refused")
            return
        raise AssertionError("an expired ticket succeeded")

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def one_live_button_per_unlinked_discord_account(self) -> None:
        now = self.h.clock.now()
        live = [
            t.discord.id
            for t in self.db.tables.link_tickets.values()
            if t.consumed_at is None and now < t.expires_at
        ]
        assert len(live) == len(set(live)), "a Discord account has two live /link buttons"
        assert not set(live) & set(self.db.tables.links), "a linked account has a live button"

    @invariant()
    def one_to_one_links(self) -> None:
        links = self.db.tables.links
        account_ids = [link.account_id for link in links.values()]
        assert len(account_ids) == len(set(account_ids)), "an account has two Discord links"
        assert all(key == link.discord_id for key, link in links.items())
        assert all(a in self.db.tables.accounts for a in account_ids)

    @invariant()
    def every_account_can_still_sign_in(self) -> None:
        linked = {link.account_id for link in self.db.tables.links.values()}
        for account in self.db.tables.accounts.values():
            created_by_discord = account.id in self.accounts and account.password_hash is None
            if created_by_discord and any(
                e.account_id == account.id and e.detail.get("via") == "discord"
                for e in self.db.tables.audit
            ):
                assert account.id in linked, "a Discord-only account lost its only way in"


TestLinkingMachine = LinkingMachine.TestCase
TestLinkingMachine.settings = settings(
    # How many runs: the profile's (tests/conftest.py), 50 while working, 150 in `make test`.
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_no_property_test_is_timed() -> None:
    """The suite's profiles (tests/conftest.py) leave out Hypothesis's deadline: a test
    must not fail because the machine was busy while one example ran."""
    assert settings().deadline is None
