"""Names someone else chose (a Discord username or display name), as the pages, notices,
errors and emails show them: through the web app (Litestar's test client, in-memory
adapters, the fake Discord). Nothing stored changes."""

from __future__ import annotations

from dataclasses import replace

from adapters.memory import MemoryDatabase
from domain import errors
from domain.model import DiscordId
from domain.names import ELLIPSIS, FSI, HIDDEN_MARK, PDI
from domain.use_cases import TicketIssued
from entrypoints.web.email_pages import CONFIRMED_PAGE
from tests.harness import Harness
from tests.web_support import Client, sign_up

RLO = "\u202e"
ZWSP = "\u200b"
FILLER = "\u3164"  # Hangul filler: a name of it looks empty


async def _discord_login(client: Client, h: Harness, discord_id: int) -> None:
    started = await client.get("/auth/discord/login?next=/account", follow_redirects=False)
    approval = h.discord.approve(started.headers["location"], DiscordId(discord_id))
    done = await client.get(
        f"/auth/discord/callback?code={approval.code}&state={approval.state}",
        follow_redirects=False,
    )
    assert done.status_code == 302, done.text


async def test_the_link_page_shows_a_forged_display_name_for_what_it_is(
    client: Client, h: Harness
) -> None:
    """ "\u202eecila" reads as "alice" and "ali\u200bce" as "alice": the page that asks "is this
    you?" shows the marks, the @username and the id, and nothing that reorders them."""
    discord = h.discord_user(6001, username="mallory", global_name=f"{RLO}ecila{ZWSP}")
    issued = await h.container.issue_link_ticket().execute(discord.user)
    assert isinstance(issued, TicketIssued)
    await sign_up(client, "alice", next_path=f"/link/{issued.token}")
    page = (await client.get(f"/link/{issued.token}")).text
    assert f"(<bdi>{HIDDEN_MARK}ecila{HIDDEN_MARK}</bdi>)" in page
    assert "<bdi>@mallory</bdi>" in page
    assert "Discord id 6001" in page
    assert RLO not in page
    assert ZWSP not in page


async def test_the_link_page_shows_an_empty_looking_or_long_name_visibly(
    client: Client, h: Harness
) -> None:
    blank = h.discord_user(6002, username="blank", global_name=FILLER * 3)
    long = h.discord_user(6003, username="long", global_name="alice " + "x" * 58)
    await sign_up(client, "alice")
    for who, shown in (
        (blank, f"(<bdi>{HIDDEN_MARK}</bdi>)"),
        (long, f"(<bdi>alice {'x' * 25}{ELLIPSIS}</bdi>)"),
    ):
        issued = await h.container.issue_link_ticket().execute(who.user)
        assert isinstance(issued, TicketIssued)
        page = (await client.get(f"/link/{issued.token}")).text
        assert shown in page
        assert f"Discord id {who.id}" in page
        assert FILLER not in page


async def test_the_account_page_shows_the_linked_name_and_its_id(
    client: Client, h: Harness, db: MemoryDatabase
) -> None:
    h.discord_user(
        6004, username=f"do{ZWSP}ra", email="dora@example.com", global_name="admin" + RLO
    )
    await _discord_login(client, h, 6004)
    page = (await client.get("/account")).text
    assert f"<strong><bdi>admin{HIDDEN_MARK}</bdi></strong>" in page
    assert f"<bdi>@do{HIDDEN_MARK}ra</bdi> · Discord id 6004 ·" in page
    assert RLO not in page
    # What is stored is what Discord said.
    stored = db.tables.links[DiscordId(6004)]
    assert (stored.discord_username, stored.discord_global_name) == (f"do{ZWSP}ra", "admin" + RLO)


async def test_the_linked_email_isolates_the_name_and_gives_the_id(
    client: Client, h: Harness
) -> None:
    discord = h.discord_user(6005, username=f"{RLO}ecila")
    issued = await h.container.issue_link_ticket().execute(discord.user)
    assert isinstance(issued, TicketIssued)
    await sign_up(client, "bob", next_path=f"/link/{issued.token}")
    [bob] = await h.all_accounts_with_email("bob@example.com")
    await h.mark_email_verified(bob.id)
    await h.confirm_ticket(issued.token, bob.id)
    await h.deliver()
    [linked] = [m for m in h.emails_to("bob@example.com") if "was linked" in m.text]
    assert f"{FSI}@{HIDDEN_MARK}ecila{PDI} (id 6005) was linked" in linked.text
    assert RLO not in linked.text


def test_an_error_naming_two_discord_accounts_keeps_them_apart() -> None:
    error = errors.TicketForAnotherDiscord.naming(
        ticket_username=f"{RLO}ecila", signed_in_as="alice"
    )
    assert f"{FSI}@{HIDDEN_MARK}ecila{PDI}, but you are" in error.message
    assert f"as {FSI}@alice{PDI}, so" in error.message
    assert RLO not in error.message


async def test_an_address_stored_before_the_lookalike_check_shows_for_what_it_is(
    client: Client, h: Harness, db: MemoryDatabase
) -> None:
    """An attacker's second look: an address stored before forms refused characters that
    draw nothing ("al\u2800ice@example.com", the braille blank, reads as alice@example.com)
    stays usable, and the account page, the confirmation link's page and the confirmed page
    showed it as it is. They show the mark, in a <bdi> of its own, as they show names."""
    blank = "\u2800"
    stored = f"al{blank}ice@example.com"
    await sign_up(client, "alice")
    # The link sent at sign-up (once sent), as if sent to the stored address.
    link = await h.emailed_link("alice@example.com", "/verify-email/")
    [alice] = await h.all_accounts_with_email("alice@example.com")
    db.tables.accounts[alice.id] = replace(alice, email=stored, email_verified=False)
    for digest, sent in list(db.tables.email_tokens.items()):
        db.tables.email_tokens[digest] = replace(sent, email=stored)
    shown = f"<bdi>al{HIDDEN_MARK}ice@example.com</bdi>"

    account_page = (await client.get("/account")).text
    assert shown in account_page
    assert blank not in account_page

    verify_page = (await client.get(link)).text
    assert shown in verify_page
    assert blank not in verify_page

    db.tables.accounts[alice.id] = replace(alice, email=stored, email_verified=True)
    confirmed_page = (await client.get(CONFIRMED_PAGE)).text
    assert shown in confirmed_page
    assert blank not in confirmed_page
    assert db.tables.accounts[alice.id].email == stored  # what is stored never changes
