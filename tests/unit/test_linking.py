"""The link table of DESIGN.md (via the account page's OAuth flow and via /link tickets),
and the unlink guard."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import AuditKind, DiscordId, DiscordUser
from domain.use_cases import AuthOutcome, BrowserCookies, TicketIssued
from tests.harness import PASSWORD, Browser, Harness


async def _ticket(h: Harness, user: DiscordUser) -> str:
    issued = await h.container.issue_link_ticket().execute(user)
    assert isinstance(issued, TicketIssued)
    return issued.token


def _issued_beside_the_link(db: MemoryDatabase, discord_id: DiscordId) -> None:
    """The Discord account's tickets live again, as a ticket is that a /link issued beside its
    link (it read "not linked" before the link committed; on Postgres the link's spending
    does not see a ticket another transaction has not committed): the only way a linked
    Discord account has a live button."""
    for digest, row in list(db.tables.link_tickets.items()):
        if row.discord.id == discord_id:
            db.tables.link_tickets[digest] = replace(row, consumed_at=None)


def _live_tickets(db: MemoryDatabase, discord_id: DiscordId) -> list[str]:
    return [
        digest
        for digest, row in db.tables.link_tickets.items()
        if row.discord.id == discord_id and row.consumed_at is None
    ]


# -- rows of the link table, account-page flow ------------------------------------------------


async def test_link_row1_same_link_again_is_an_idempotent_success(
    h: Harness, db: MemoryDatabase
) -> None:
    account = (await h.sign_up("alice", "alice@example.com")).account
    discord = h.discord_user(2001)
    await h.discord_link(account.id, discord)
    events_before = len(db.tables.audit)

    again = await h.discord_link(account.id, discord)

    assert again.outcome is AuthOutcome.ALREADY_LINKED
    assert db.tables.links[discord.id].account_id == account.id
    assert len(db.tables.audit) == events_before  # nothing changed, nothing audited


async def test_link_row2_discord_linked_to_another_account_is_refused(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    bob = (await h.sign_up("bob", "bob@example.com")).account
    discord = h.discord_user(2002)
    await h.discord_link(alice.id, discord)

    with pytest.raises(errors.DiscordLinkedElsewhere):
        await h.discord_link(bob.id, discord)

    assert db.tables.links[discord.id].account_id == alice.id  # never moved silently


async def test_link_row3_account_linked_to_a_different_discord_is_refused(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    first, second = h.discord_user(2003), h.discord_user(2004)
    await h.discord_link(alice.id, first)

    with pytest.raises(errors.AccountLinkedToOtherDiscord) as refused:
        await h.discord_link(alice.id, second)

    assert "unlink it first" in refused.value.message.lower()
    assert set(db.tables.links) == {first.id}


async def test_link_row4_otherwise_links_and_audits(h: Harness, db: MemoryDatabase) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    discord = h.discord_user(2005, username="alice_d", global_name="Alice D")

    done = await h.discord_link(alice.id, discord)

    assert done.outcome is AuthOutcome.LINKED
    assert done.session_token is None  # already signed in; no new session
    assert done.destination == "/account"
    link = db.tables.links[discord.id]
    assert (link.account_id, link.discord_username, link.discord_global_name) == (
        alice.id,
        "alice_d",
        "Alice D",
    )
    linked = [e for e in db.tables.audit if e.kind is AuditKind.LINKED]
    assert [(e.account_id, e.discord_id, e.detail["via"]) for e in linked] == [
        (alice.id, discord.id, "oauth")
    ]


async def test_link_flow_asks_only_for_identify_and_shows_the_account(h: Harness) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    started = await h.container.start_discord_link().execute(
        session_token=alice.session_token, browser_tokens=()
    )
    assert "scope=identify&" in started.authorize_url
    # The consent screen shows which Discord account (a shared browser may be signed in).
    assert "prompt=consent" in started.authorize_url


async def test_linking_is_a_sensitive_change(h: Harness) -> None:
    """A stolen session cookie alone must not add a Discord account that can sign in (and
    that would outlive a password change): linking needs the same proof as unlinking."""
    alice = await h.sign_up("alice", "alice@example.com")
    h.clock.advance(timedelta(minutes=11))
    issued = await h.container.issue_link_ticket().execute(h.discord_user(2010).user)
    assert isinstance(issued, TicketIssued)
    with pytest.raises(errors.ReauthenticationRequired):
        await h.container.start_discord_link().execute(
            session_token=alice.session_token, browser_tokens=()
        )
    with pytest.raises(errors.ReauthenticationRequired):
        await h.container.start_ticket_link().execute(
            token=issued.token, session_token=alice.session_token, browser_tokens=()
        )
    with pytest.raises(errors.InvalidCredentials):
        await h.container.start_discord_link().execute(
            session_token=alice.session_token, current_password="wrong guess", browser_tokens=()
        )
    started = await h.container.start_discord_link().execute(
        session_token=alice.session_token, current_password=PASSWORD, browser_tokens=()
    )
    assert started.authorize_url


async def test_a_link_whose_session_ended_meanwhile_is_refused(
    h: Harness, db: MemoryDatabase
) -> None:
    """Signed out everywhere while Discord was answering: nothing is linked."""
    alice = await h.sign_up("alice", "alice@example.com")
    started = await h.container.start_discord_link().execute(
        session_token=alice.session_token, browser_tokens=()
    )
    approval = h.discord.approve(started.authorize_url, h.discord_user(2011).id)
    await h.container.end_all_sessions().execute(BrowserCookies(session_token=alice.session_token))
    with pytest.raises(errors.NotSignedIn):
        await h.container.complete_discord_auth().execute(
            state=approval.state,
            code=approval.code,
            error=None,
            browser=BrowserCookies(
                session_token=alice.session_token, bindings=started.browser_tokens
            ),
        )
    assert db.tables.links == {}


async def test_link_callback_for_another_signed_in_account_is_refused(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = await h.sign_up("alice", "alice@example.com")
    bob = (await h.sign_up("bob", "bob@example.com")).account
    discord = h.discord_user(2006)
    started = await h.container.start_discord_link().execute(
        session_token=alice.session_token, browser_tokens=()
    )
    approval = h.discord.approve(started.authorize_url, discord.id)

    with pytest.raises(errors.NotSignedIn):
        await h.container.complete_discord_auth().execute(
            state=approval.state,
            code=approval.code,
            error=None,
            browser=BrowserCookies(
                session_token=await h.session_for(bob.id), bindings=started.browser_tokens
            ),
        )
    assert db.tables.links == {}


# -- rows of the link table, /link ticket flow ---------------------------------------------------


async def test_ticket_row1_redeeming_for_the_already_linked_account_is_idempotent(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    discord = h.discord_user(2101)
    # A ticket issued beside the same link made another way (e.g. from the web).
    ticket = await _ticket(h, discord.user)
    await h.discord_link(alice.id, discord)
    _issued_beside_the_link(db, discord.id)
    result = await h.confirm_ticket(ticket, alice.id)
    assert result.outcome is AuthOutcome.ALREADY_LINKED
    assert result.account_id == alice.id


async def test_ticket_row2_discord_linked_elsewhere_is_refused(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    bob = (await h.sign_up("bob", "bob@example.com")).account
    user = DiscordUser(h.discord_user(2102).id, "d2102")
    ticket = await _ticket(h, user)
    await h.discord_link(alice.id, h.discord.users[user.id])
    _issued_beside_the_link(db, user.id)

    with pytest.raises(errors.DiscordLinkedElsewhere):
        await h.confirm_ticket(ticket, bob.id)
    assert db.tables.links[user.id].account_id == alice.id


async def test_ticket_row3_account_linked_to_other_discord_is_refused(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    await h.discord_link(alice.id, h.discord_user(2103))
    ticket = await _ticket(h, DiscordUser(h.discord_user(2104).id, "d2104"))

    with pytest.raises(errors.AccountLinkedToOtherDiscord):
        await h.confirm_ticket(ticket, alice.id)
    assert {d.value for d in db.tables.links} == {2103}


async def test_ticket_row4_links_and_audits(h: Harness, db: MemoryDatabase) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    user = h.discord_user(2105, username="dee", global_name="Dee", avatar="abc123").user
    ticket = await _ticket(h, user)

    shown = await h.container.show_link_ticket().execute(ticket)
    assert shown.discord == user
    result = await h.confirm_ticket(ticket, alice.id)

    assert result.outcome is AuthOutcome.LINKED
    assert db.tables.links[user.id].account_id == alice.id
    assert db.tables.links[user.id].discord_avatar == "abc123"
    assert any(e.kind is AuditKind.LINKED and e.detail["via"] == "ticket" for e in db.tables.audit)


async def test_link_command_when_already_linked_answers_with_the_account(h: Harness) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    discord = h.discord_user(2106)
    await h.discord_link(alice.id, discord)

    answer = await h.container.issue_link_ticket().execute(discord.user)

    assert not isinstance(answer, TicketIssued)
    assert answer.account.username == "alice"


async def test_ticket_stores_only_a_digest(h: Harness, db: MemoryDatabase) -> None:
    token = await _ticket(h, DiscordUser(h.discord_user(2107).id, "x"))
    assert token not in db.tables.link_tickets
    assert all(token not in repr(t) for t in db.tables.link_tickets.values())


# -- unlink -------------------------------------------------------------------------------------


async def test_unlink_removes_the_link_and_audits(h: Harness, db: MemoryDatabase) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    discord = h.discord_user(2201)
    await h.discord_link(alice.id, discord)

    removed = await h.container.unlink_account().execute(
        session_token=await h.session_for(alice.id), current_password=None
    )

    assert removed.discord_id == discord.id
    assert db.tables.links == {}
    assert db.tables.audit[-1].kind is AuditKind.UNLINKED


async def test_unlink_by_discord_id(h: Harness, db: MemoryDatabase) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    discord = h.discord_user(2202)
    await h.discord_link(alice.id, discord)

    await h.container.unlink_discord().execute(discord.id)

    assert db.tables.links == {}
    assert await h.container.who_am_i().execute(discord.id) is None


async def test_unlink_is_refused_when_discord_is_the_only_way_in(
    h: Harness, db: MemoryDatabase
) -> None:
    discord = h.discord_user(2203, email="new@example.com")
    created = await h.discord_login(discord)

    with pytest.raises(errors.UnlinkWouldLockOut) as refused:
        await h.container.unlink_discord().execute(discord.id)
    with pytest.raises(errors.UnlinkWouldLockOut):
        await h.container.unlink_account().execute(
            session_token=await h.session_for(created.account_id), current_password=None
        )

    assert "set a password" in refused.value.message.lower()
    assert discord.id in db.tables.links

    await h.container.set_password().execute(
        session_token=await h.session_for(created.account_id),
        new_password="a long enough password",
        current_password=None,
    )
    await h.container.unlink_discord().execute(discord.id)
    assert db.tables.links == {}


async def test_unlink_when_not_linked(h: Harness) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    with pytest.raises(errors.NotLinked):
        await h.container.unlink_account().execute(
            session_token=await h.session_for(alice.id), current_password=None
        )
    with pytest.raises(errors.NotLinked):
        await h.container.unlink_discord().execute(h.discord_user(2204).id)


async def test_relinking_after_unlink_works(h: Harness, db: MemoryDatabase) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    first, second = h.discord_user(2205), h.discord_user(2206)
    await h.discord_link(alice.id, first)
    await h.container.unlink_account().execute(
        session_token=await h.session_for(alice.id), current_password=None
    )
    await h.discord_link(alice.id, second)
    assert set(db.tables.links) == {second.id}


async def test_who_am_i_and_lookup(h: Harness) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    discord = h.discord_user(2207)
    await h.discord_link(alice.id, discord)

    me = await h.container.who_am_i().execute(discord.id)
    assert me is not None
    assert me.account.username == "alice"
    assert (await h.container.look_up_link().execute("2207")).account_id == alice.id
    assert (await h.container.link_of_account().execute(alice.id)) == me.link
    with pytest.raises(errors.NotFound):
        await h.container.look_up_link().execute(2208)
    with pytest.raises(errors.InvalidDiscordId):
        await h.container.look_up_link().execute("abc")


async def test_ticket_is_redeemed_for_link_even_when_shown_many_times(h: Harness) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    ticket = await _ticket(h, DiscordUser(h.discord_user(2301).id, "x"))
    for _ in range(3):
        await h.container.show_link_ticket().execute(ticket)
    h.clock.advance(timedelta(minutes=9))
    assert (await h.confirm_ticket(ticket, alice.id)).outcome is AuthOutcome.LINKED


# -- one live /link button per Discord account -------------------------------------------------


async def test_a_newer_link_button_ends_the_earlier_ones(h: Harness, db: MemoryDatabase) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    user = DiscordUser(h.discord_user(2401).id, "d2401")
    first, second = await _ticket(h, user), await _ticket(h, user)
    other = await _ticket(h, DiscordUser(h.discord_user(2402).id, "d2402"))
    newest = await _ticket(h, user)

    for ended in (first, second):
        with pytest.raises(errors.SecretConsumed) as refused:
            await h.container.show_link_ticket().execute(ended)
        assert "a newer /link" in refused.value.message
        with pytest.raises(errors.SecretConsumed):
            await h.confirm_ticket(ended, alice.id)
    assert len(_live_tickets(db, user.id)) == 1
    await h.container.show_link_ticket().execute(other)  # another Discord account's: untouched
    assert (await h.confirm_ticket(newest, alice.id)).outcome is AuthOutcome.LINKED


async def test_the_new_button_survives_its_own_issue(h: Harness, db: MemoryDatabase) -> None:
    user = DiscordUser(h.discord_user(2403).id, "d2403")
    for _ in range(3):
        token = await _ticket(h, user)
        shown = await h.container.show_link_ticket().execute(token)
        assert shown.consumed_at is None
        assert _live_tickets(db, user.id) == [h.container.tokens().digest(token)]


async def test_a_button_replaced_during_its_discord_round_trip_links_nothing(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    user = DiscordUser(h.discord_user(2404).id, "d2404")
    ticket = await _ticket(h, user)
    browser = Browser()
    started = await h.start_ticket_link(ticket, alice.id, browser)
    await _ticket(h, user)  # meanwhile, /link again
    approval = h.discord.approve(started.authorize_url, user.id)

    with pytest.raises(errors.SecretConsumed):
        await h.complete(browser, state=approval.state, code=approval.code, signed_in=alice.id)
    assert db.tables.links == {}


def _as_if_issued_at_once(db: MemoryDatabase, discord_id: DiscordId) -> None:
    """Every live-looking ticket of the Discord account live again, as two /link commands run
    at once leave them on Postgres: each spends the tickets committed before its statement,
    and neither sees the other's new one."""
    for digest, row in list(db.tables.link_tickets.items()):
        if row.discord.id == discord_id:
            db.tables.link_tickets[digest] = replace(row, consumed_at=None)


async def test_of_two_link_buttons_issued_at_once_only_the_newest_works(
    h: Harness, db: MemoryDatabase
) -> None:
    """Only the newest /link button works: that held only when the /link commands ran one after
    the other: two at once each left its own live, and both worked. The older one (by when it
    was made, then by its digest) is refused now, on its page, on "Continue with Discord" and
    back from Discord, with the reason."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    user = DiscordUser(h.discord_user(2410).id, "d2410")
    older = await _ticket(h, user)
    browser = Browser()
    started = await h.start_ticket_link(older, alice.id, browser)  # before the newer one
    h.clock.advance(timedelta(seconds=1))
    newer = await _ticket(h, user)
    _as_if_issued_at_once(db, user.id)
    assert len(_live_tickets(db, user.id)) == 2

    with pytest.raises(errors.TicketReplaced) as refused:
        await h.container.show_link_ticket().execute(older)
    assert "a newer /link button replaced this one" in refused.value.message.lower()
    with pytest.raises(errors.TicketReplaced):
        await h.start_ticket_link(older, alice.id, Browser())
    approval = h.discord.approve(started.authorize_url, user.id)
    with pytest.raises(errors.TicketReplaced):
        await h.complete(browser, state=approval.state, code=approval.code, signed_in=alice.id)
    assert db.tables.links == {}
    assert _live_tickets(db, user.id) == [h.container.tokens().digest(newer)]  # spent

    assert (await h.confirm_ticket(newer, alice.id)).outcome is AuthOutcome.LINKED


async def test_of_two_link_buttons_made_at_one_moment_the_greater_digest_works(
    h: Harness, db: MemoryDatabase
) -> None:
    """Two /link commands at the same ``now``: one order all the same (the digest's), so one
    button works, not both nor none."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    user = DiscordUser(h.discord_user(2411).id, "d2411")
    tokens = [await _ticket(h, user), await _ticket(h, user)]  # the clock stands still
    _as_if_issued_at_once(db, user.id)
    newest = max(tokens, key=h.container.tokens().digest)

    for token in tokens:
        if token != newest:
            with pytest.raises(errors.TicketReplaced):
                await h.container.show_link_ticket().execute(token)
    assert (await h.confirm_ticket(newest, alice.id)).outcome is AuthOutcome.LINKED


async def test_an_older_button_cannot_link_again_after_an_unlink(
    h: Harness, db: MemoryDatabase
) -> None:
    """The review's case: two buttons, a link with the newer, /unlink; the older one (leaked,
    forwarded) must not link the Discord account again, to any TaskFlow account."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    bob = (await h.sign_up("bob", "bob@example.com")).account
    user = DiscordUser(h.discord_user(2405).id, "d2405")
    older, newer = await _ticket(h, user), await _ticket(h, user)
    await h.confirm_ticket(newer, alice.id)
    await h.container.unlink_discord().execute(user.id)

    with pytest.raises(errors.SecretConsumed):
        await h.confirm_ticket(older, bob.id)
    assert db.tables.links == {}


@pytest.mark.parametrize("route", ["account_page", "discord_sign_up", "verified_email"])
async def test_linking_by_any_route_ends_the_discord_accounts_buttons(
    h: Harness, db: MemoryDatabase, route: str
) -> None:
    profile = h.discord_user(2406, email="dee@example.com")
    ticket = await _ticket(h, profile.user)
    if route == "account_page":
        alice = (await h.sign_up("alice", "alice@example.com")).account
        await h.discord_link(alice.id, profile)
    elif route == "discord_sign_up":
        assert (await h.discord_login(profile)).outcome is AuthOutcome.CREATED
    else:
        await h.sign_up("dee", "dee@example.com", verified=True)
        assert (await h.discord_login(profile)).outcome is AuthOutcome.LINKED_AND_SIGNED_IN

    assert _live_tickets(db, profile.id) == []
    with pytest.raises(errors.SecretConsumed):
        await h.container.show_link_ticket().execute(ticket)


async def test_linking_with_a_button_ends_the_others(h: Harness, db: MemoryDatabase) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    user = DiscordUser(h.discord_user(2407).id, "d2407")
    older = await _ticket(h, user)
    h.clock.advance(timedelta(seconds=1))  # of two made at one moment, the greater digest works
    newer = await _ticket(h, user)
    _issued_beside_the_link(db, user.id)  # both live: two /link at once
    await h.confirm_ticket(newer, alice.id)

    assert _live_tickets(db, user.id) == []
    with pytest.raises(errors.SecretConsumed):
        await h.container.show_link_ticket().execute(older)


@pytest.mark.parametrize("route", ["bot", "account_page", "api"])
async def test_unlinking_by_any_route_ends_the_discord_accounts_buttons(
    h: Harness, db: MemoryDatabase, route: str
) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    profile = h.discord_user(2408)
    ticket = await _ticket(h, profile.user)
    await h.discord_link(alice.id, profile)
    _issued_beside_the_link(db, profile.id)
    if route == "bot":
        await h.container.unlink_discord().execute(profile.id)
    elif route == "account_page":
        await h.container.unlink_account().execute(
            session_token=await h.session_for(alice.id), current_password=PASSWORD
        )
    else:
        admin = await h.container.create_api_key().execute("admin", ["links:write"])
        key = await h.container.authenticate_api_key().execute(admin.token)
        assert key is not None
        await h.container.unlink_with_api_key().execute(profile.id, key)

    assert db.tables.links == {}
    assert _live_tickets(db, profile.id) == []
    with pytest.raises(errors.SecretConsumed):
        await h.confirm_ticket(ticket, alice.id)


async def test_a_button_confirmed_in_two_tabs_says_linked_in_both(
    h: Harness, db: MemoryDatabase
) -> None:
    """The same button opened in two tabs (or a phone and a laptop), "Continue with Discord"
    in both: the first links, and the second, as the same Discord account for the same
    TaskFlow account, finds it done. It said "This button has already been used", as if
    nothing had been linked."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    user = h.discord_user(2409, username="d2409").user
    ticket = await _ticket(h, user)
    first, second = Browser(), Browser()
    tabs = [await h.start_ticket_link(ticket, alice.id, b) for b in (first, second)]
    approvals = [h.discord.approve(t.authorize_url, user.id) for t in tabs]

    done = [
        await h.complete(b, state=a.state, code=a.code, signed_in=alice.id)
        for b, a in zip((first, second), approvals, strict=True)
    ]

    assert [d.outcome for d in done] == [AuthOutcome.LINKED, AuthOutcome.ALREADY_LINKED]
    assert db.tables.links[user.id].account_id == alice.id
    assert sum(e.kind is AuditKind.LINKED for e in db.tables.audit) == 1


async def test_a_spent_button_confirmed_as_another_discord_account_is_still_refused(
    h: Harness, db: MemoryDatabase
) -> None:
    """What the two-tab case allows stays narrow: a spent button's second tab is told "linked"
    only as the Discord account of the button, linked to this TaskFlow account."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    bob = (await h.sign_up("bob", "bob@example.com")).account
    owner = h.discord_user(2410, username="owner").user
    other = h.discord_user(2411, username="other")
    await h.discord_link(bob.id, other)
    ticket = await _ticket(h, owner)
    late, alices = Browser(), Browser()
    started = await h.start_ticket_link(ticket, alice.id, late)
    await h.confirm_ticket(ticket, alice.id, browser=alices)  # the button is spent: linked
    approval = h.discord.approve(started.authorize_url, other.id)  # but Discord says "other"

    with pytest.raises(errors.SecretConsumed):
        await h.complete(late, state=approval.state, code=approval.code, signed_in=alice.id)
    assert db.tables.links[owner.id].account_id == alice.id
    assert db.tables.links[other.id].account_id == bob.id


async def test_a_bulk_lookup_gives_rows_in_the_order_asked_each_once(
    h: Harness, db: MemoryDatabase
) -> None:
    """The use case behind ``POST /api/v1/links/lookup``: the links as rows (id, account,
    linked at, username, global name) in the order asked, an id asked twice once, and the ids
    without a link as numbers; ids given another way than as numbers are read as
    ``DiscordId.parse`` reads them, and refused as it refuses them."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    bob = (await h.sign_up("bob", "bob@example.com")).account
    await h.discord_link(alice.id, h.discord_user(3301))
    await h.discord_link(bob.id, h.discord_user(3302))
    look_up = h.container.look_up_links()

    found = await look_up.execute([3302, 77, 3301, 3302, 78])

    first = db.tables.links[DiscordId(3302)]
    assert [row[0] for row in found.links] == [3302, 3301]
    assert found.links[0] == (
        3302,
        str(bob.id.value),
        first.linked_at,
        first.discord_username,
        first.discord_global_name,
    )
    assert list(found.missing) == [77, 78]
    parsed = await look_up.execute(["3301", DiscordId(77)])
    assert [row[0] for row in parsed.links] == [3301]
    assert list(parsed.missing) == [77]
    for refused in (0, True, "x", 2**63):
        with pytest.raises(errors.InvalidDiscordId):
            await look_up.execute([3301, refused])
