"""Email linking "confirm": after a Discord sign-in whose verified email is an existing
account's, the person proves that account (its password, or a link emailed to it) before the
two are linked. The Discord side waits in this browser's cookie (see ``CookieJar.proposal``)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Template

from domain import errors
from domain import use_cases as uc
from domain.model import EmailPurpose
from domain.use_cases import LinkConfirmed
from entrypoints.web.cookies import CookieJar
from entrypoints.web.deps import CurrentAccount, Jar, Use
from entrypoints.web.errors import message_page
from entrypoints.web.pages import told_linked

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
PAGE = "/auth/discord/confirm-link"


def _signed_in(jar: CookieJar, done: LinkConfirmed) -> Redirect:
    # Whatever session was here ended with the link (see ``sign_out_browser``).
    cookies = jar.new_session(done.session_token)  # the offer ends with it
    if done.device_token is not None:
        cookies.append(jar.device(done.device_token))
    return Redirect(told_linked(done.destination), status_code=303, cookies=cookies)


class EmailLinkingPages(Controller):
    include_in_schema = False

    @get(PAGE)
    async def page(
        self,
        request: Request[Any, Any, Any],
        account: CurrentAccount,
        show_link_proposal: Use[uc.ShowLinkProposal],
        jar: Jar,
    ) -> Template:
        shown = await show_link_proposal.execute(jar.proposal_token(request))
        return Template(
            "confirm_discord_link.html",
            context={"shown": shown, "account": account},
        )

    @post(PAGE, status_code=303)
    async def with_password(
        self,
        request: Request[Any, Any, Any],
        account: CurrentAccount,
        confirm_link_with_password: Use[uc.ConfirmLinkWithPassword],
        show_link_proposal: Use[uc.ShowLinkProposal],
        jar: Jar,
        data: Form,
    ) -> Template | Redirect:
        try:
            done = await confirm_link_with_password.execute(
                browser=jar.browser(request),  # its session rotated: it ends
                password=data.get("password", ""),
                device_token=jar.device_token(request),
                client_address=request.client.host if request.client else None,
            )
        except errors.InvalidCredentials as exc:
            shown = await show_link_proposal.execute(jar.proposal_token(request))
            return Template(
                "confirm_discord_link.html",
                # The page again, with the header it was opened with (whoever is signed in).
                context={
                    "shown": shown,
                    "account": account,
                    "error": exc.message,
                    "error_field": "password",
                },
                status_code=401,
            )
        return _signed_in(jar, done)

    @post(f"{PAGE}/email", status_code=200)
    async def send_link(
        self,
        request: Request[Any, Any, Any],
        account: CurrentAccount,
        email_link_confirmation: Use[uc.EmailLinkConfirmation],
        jar: Jar,
    ) -> Template:
        emailed = await email_link_confirmation.execute(jar.proposal_token(request))
        ends = emailed.expires_at.strftime("%H:%M UTC")  # with the Discord sign-in it confirms
        return message_page(
            "Check your email",
            f"We are emailing {emailed.address} a link. Open it in this browser before {ends} "
            "to link your Discord account and sign in.",
            links=[("Back", PAGE)],
            account=account,
        )

    @get(f"{PAGE}/{{token:str}}")
    async def emailed_link_page(
        self, token: FromPath[str], account: CurrentAccount, show_email_link: Use[uc.ShowEmailLink]
    ) -> Template:
        shown = await show_email_link.execute(token, EmailPurpose.LINK)
        return Template(
            "confirm_discord_link_email.html",
            context={"token": token, "owner": shown.account, "account": account},
        )

    @post(f"{PAGE}/{{token:str}}", status_code=303)
    async def with_emailed_link(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        confirm_link_with_email: Use[uc.ConfirmLinkWithEmail],
        jar: Jar,
    ) -> Redirect:
        done = await confirm_link_with_email.execute(
            browser=jar.browser(request),  # its session rotated: it ends
            email_token=token,
        )
        return _signed_in(jar, done)
