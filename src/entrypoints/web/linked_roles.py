"""Discord Linked Roles' verification URL (only with ``TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS``).

Discord sends someone here from a server's "Linked Roles" (the application's
``role_connections_verification_url``). The round trip asks for ``identify
role_connections.write``; the callback (``/auth/discord/callback``) signs in or links, keeps
the tokens (encrypted) and pushes the role connection."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from domain import errors
from domain import use_cases as uc
from domain.model import Account
from entrypoints.web.cookies import starts_no_round_trip, to_discord
from entrypoints.web.deps import CurrentSignIn, Jar, Use
from entrypoints.web.errors import status_for
from entrypoints.web.other_sites import continue_to_linked_role

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
PATH = "/discord/linked-role"


def _proof_page(
    account: Account, error: str = "", status: int = 200, *, recently_proved: bool = False
) -> Template:
    """Linking comes first, and it is a sensitive change: the password, as on the account
    page (or only a button, with a recent proof), and always a form of this site's (CSRF)."""
    return Template(
        "linked_role.html",
        context={
            "account": account,
            "error": error,
            "error_field": "current_password" if error else "",
            "recently_proved": recently_proved,
        },
        status_code=status,
    )


class LinkedRolePages(Controller):
    include_in_schema = False

    @get(PATH, status_code=302)
    async def verification_url(
        self,
        request: Request[Any, Any, Any],
        signed_in: CurrentSignIn,
        start_linked_role: Use[uc.StartLinkedRole],
        link_of_account: Use[uc.LinkOfAccount],
        jar: Jar,
    ) -> Redirect | Template:
        # A link would be made: never from a GET, which any site can send this browser to
        # (with a recent proof, it went straight to Discord's consent screen). The page's
        # form, below, starts it.
        if signed_in is not None and await link_of_account.execute(signed_in.account.id) is None:
            return _proof_page(signed_in.account, recently_proved=signed_in.recently_proved)
        if starts_no_round_trip(request):  # Discord's link too (and a HEAD): a page
            return continue_to_linked_role(PATH, signed_in.account if signed_in else None)
        try:
            started = await start_linked_role.execute(
                session_token=jar.session_token(request),
                browser_tokens=jar.flow_bindings(request),
            )
        except errors.ReauthenticationRequired:
            assert signed_in is not None  # noqa: S101 - only a signed-in account is asked
            return _proof_page(signed_in.account)
        return to_discord(started, jar)

    @post(PATH, status_code=302)
    async def with_password(
        self,
        request: Request[Any, Any, Any],
        signed_in: CurrentSignIn,
        start_linked_role: Use[uc.StartLinkedRole],
        jar: Jar,
        data: Form,
    ) -> Redirect | Template:
        if signed_in is None:
            return Redirect(f"/signin?next={PATH}", status_code=303)
        try:
            started = await start_linked_role.execute(
                session_token=jar.session_token(request),
                browser_tokens=jar.flow_bindings(request),
                current_password=data.get("current_password") or None,
            )
        except (errors.InvalidCredentials, errors.ReauthenticationRequired) as exc:
            return _proof_page(signed_in.account, exc.message, status_for(exc))
        return to_discord(started, jar)
