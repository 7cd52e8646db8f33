"""What a GET that would start a Discord round trip answers when another site's page caused
it (``from_another_site``: a link, a redirect, a window it opened): a page of this site with a
"Continue to Discord" link, not the round trip.

Discord sends a returning person straight back, without its consent screen, so any site could
send a browser through a whole Discord sign-in without a click: signed in as its own Discord
account's TaskFlow account (ending the session it had), or given a new account, and a round
trip under way in it (a ``/link`` button's) pushed aside. The link on this page, followed,
arrives as this site's own navigation (``Sec-Fetch-Site: same-origin``) and starts the round
trip as before; another site's page cannot follow it for its visitor (the page is never
framed, and a window of another origin is not reachable from it). Browsers without Fetch
Metadata send no ``Sec-Fetch-Site``: for them nothing changes.

Nor can it have its visitor follow the link unawares: a page that asks for a double click can
send the browser here on the first click, the link under the pointer, and the second followed
it. The link takes no click for its first moments (a CSS animation keeps its
``pointer-events`` off: no script runs on these pages), so a click arriving with the page goes
to the card around it, and only a later one goes on.
"""

from __future__ import annotations

from urllib.parse import urlencode

from litestar.response import Template

from domain.model import Account
from domain.policies import sign_in_destination
from entrypoints.web.errors import message_page


def continue_to_sign_in(next_path: str, *, switch: bool, holds_session: bool) -> Template:
    """``/auth/discord/login``'s page for another site's navigation: its link keeps ``next``
    (as the sign-in would keep it) and ``switch``."""
    query = {"next": sign_in_destination(next_path), **({"switch": "true"} if switch else {})}
    return message_page(
        "Sign in with Discord",
        "A page of another site sent you here to sign in to TaskFlow with your Discord account.",
        next_step="Continue only if you want to sign in: if you signed in with Discord before, "
        "Discord may send you straight back, signed in.",
        links=[("Continue to Discord", f"/auth/discord/login?{urlencode(query)}"), ("Cancel", "/")],
        holds_session=holds_session,
        first_link_waits=True,
    )


def continue_to_linked_role(path: str, account: Account | None) -> Template:
    """The Linked Roles verification URL's page for another site's navigation (Discord's
    own, from a server's Linked Roles, is one too)."""
    return message_page(
        "Connect TaskFlow to Discord",
        "A Discord server gives roles to members whose Discord account is linked to TaskFlow.",
        next_step="Continue only if you came here from a server's Linked Roles in Discord"
        + (
            ": Discord may send you straight back, signed in."
            if account is None
            else ", to connect your TaskFlow account, " + account.username + "."
        ),
        links=[("Continue to Discord", path), ("Cancel", "/")],
        account=account,
        first_link_waits=True,
    )
