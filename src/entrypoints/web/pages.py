"""Server-rendered pages. Thin: read the request, call a use case, render or redirect."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, QueryParameter
from litestar.response import Redirect, Template

from domain import errors
from domain.model import Account, AuthPurpose
from domain.policies import safe_destination
from domain.use_cases import AuthOutcome
from entrypoints.web.deps import CurrentAccount, Jar, Services
from entrypoints.web.email_pages import email_status_line
from entrypoints.web.errors import status_for

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]

NOTICES = {
    "linked": "Discord is linked to your account.",
    "linked_from_discord": "Discord is linked to your account. Back in Discord, /whoami shows "
    "the link.",
    "already_linked": "This Discord account was already linked to yours.",
    "unlinked": "Discord is unlinked from your account.",
    "password": "Your password is saved. Other devices were signed out.",
    "password_reset": "Your new password is saved. You are signed in here and signed out "
    "everywhere else.",
    "password_reset_unlinked": "Your new password is saved and you are signed out everywhere "
    "else. The Discord account that was linked is unlinked: this email address had not been "
    "confirmed, so we could not tell who linked it. Link Discord again below if it is yours.",
    "welcome": "Welcome to TaskFlow! We are emailing you a link to confirm your address.",
    "verification_sent": "We are emailing you a new confirmation link.",
    "email_changed": "Your email address is changed. We are emailing it a confirmation link.",
}


def avatar_url(discord_id: int, avatar: str | None) -> str | None:
    if not avatar or not avatar.replace("_", "").isalnum():
        return None
    return f"https://cdn.discordapp.com/avatars/{discord_id}/{avatar}.png?size=96"


def _credentials_page(
    template: str, account: Account | None, next_path: str
) -> Template | Redirect:
    """Sign-in and sign-up forms; someone already signed in goes straight on."""
    if account is not None:
        return Redirect(safe_destination(next_path))
    return Template(template, context={"next": safe_destination(next_path or "/account")})


class Pages(Controller):
    include_in_schema = False

    @get("/")
    async def home(self, account: CurrentAccount) -> Template | Redirect:
        if account is not None:
            return Redirect("/account")
        return Template("index.html", context={"account": None})

    # -- password sign in / sign up / sign out --------------------------------------------------

    @get("/signin")
    async def signin_page(self, account: CurrentAccount, next: str = "") -> Template | Redirect:
        return _credentials_page("signin.html", account, next)

    @post("/signin", status_code=303)
    async def signin(
        self, request: Request[Any, Any, Any], container: Services, jar: Jar, data: Form
    ) -> Template | Redirect:
        destination = safe_destination(data.get("next") or "/account")
        try:
            signed_in = await container.sign_in().execute(
                login=data.get("login", ""), password=data.get("password", "")
            )
        except errors.InvalidCredentials as exc:
            context = {"next": destination, "login": data.get("login", ""), "error": exc.message}
            return Template("signin.html", context=context, status_code=401)
        await jar.end_session(request, container)
        return Redirect(destination, cookies=[jar.session(signed_in.session_token)])

    @get("/signup")
    async def signup_page(self, account: CurrentAccount, next: str = "") -> Template | Redirect:
        return _credentials_page("signup.html", account, next)

    @post("/signup", status_code=303)
    async def signup(
        self, request: Request[Any, Any, Any], container: Services, jar: Jar, data: Form
    ) -> Template | Redirect:
        destination = safe_destination(data.get("next") or "/account?notice=welcome")
        try:
            signed_in = await container.sign_up().execute(
                username=data.get("username", ""),
                email=data.get("email", ""),
                password=data.get("password", ""),
            )
        except (errors.InvalidInput, errors.UsernameTaken, errors.EmailTaken) as exc:
            context = {
                "next": destination,
                "username": data.get("username", ""),
                "email": data.get("email", ""),
                "error": exc.message,
            }
            return Template("signup.html", context=context, status_code=status_for(exc))
        await jar.end_session(request, container)
        return Redirect(destination, cookies=[jar.session(signed_in.session_token)])

    @post("/signout", status_code=303)
    async def signout(
        self, request: Request[Any, Any, Any], container: Services, jar: Jar
    ) -> Redirect:
        await jar.end_session(request, container)
        return Redirect("/", cookies=[jar.expired_session()])

    # -- account page ---------------------------------------------------------------------------

    @get("/account")
    async def account_page(
        self, account: CurrentAccount, container: Services, notice: str = ""
    ) -> Template | Redirect:
        if account is None:
            return Redirect("/signin?next=/account")
        link = await container.link_of_account().execute(account.id)
        email_status, email_resend = email_status_line(
            await container.show_email_status().execute(account.id)
        )
        return Template(
            "account.html",
            context={
                "account": account,
                "email_status": email_status,
                "email_resend": email_resend,
                "link": link,
                "avatar_url": avatar_url(link.discord_id.value, link.discord_avatar)
                if link
                else None,
                "notice": NOTICES.get(notice, ""),
            },
        )

    @post("/account/discord/link", status_code=302)
    async def start_link(
        self,
        request: Request[Any, Any, Any],
        account: CurrentAccount,
        container: Services,
        jar: Jar,
    ) -> Redirect:
        if account is None:
            return Redirect("/signin?next=/account")
        started = await container.start_discord_link().execute(
            account_id=account.id, browser_tokens=jar.binding_tokens(request)
        )
        return Redirect(started.authorize_url, cookies=[jar.binding(started.browser_tokens)])

    @post("/account/discord/unlink", status_code=303)
    async def unlink(self, account: CurrentAccount, container: Services) -> Redirect:
        if account is None:
            return Redirect("/signin?next=/account")
        await container.unlink_account().execute(account.id)
        return Redirect("/account?notice=unlinked")

    @post("/account/password", status_code=303)
    async def set_password(
        self,
        request: Request[Any, Any, Any],
        account: CurrentAccount,
        container: Services,
        jar: Jar,
        data: Form,
    ) -> Redirect:
        if account is None:
            return Redirect("/signin?next=/account")
        await container.set_password().execute(
            account_id=account.id,
            new_password=data.get("new_password", ""),
            current_password=data.get("current_password"),
            keep_session_token=jar.session_token(request),
        )
        return Redirect("/account?notice=password")

    # -- Sign in with Discord -----------------------------------------------------------------

    @get("/auth/discord/login", status_code=302)
    async def discord_login(
        self,
        request: Request[Any, Any, Any],
        container: Services,
        jar: Jar,
        next: str = "",
        switch: bool = False,
    ) -> Redirect:
        """``switch=true``: show Discord's consent screen (with its account switcher) even to
        someone who already granted access, to sign in as another Discord account."""
        started = await container.start_discord_login().execute(
            next_path=next or "/account",
            browser_tokens=jar.binding_tokens(request),
            ask_again=switch,
        )
        return Redirect(started.authorize_url, cookies=[jar.binding(started.browser_tokens)])

    @get("/auth/discord/callback", status_code=302)
    async def discord_callback(  # noqa: PLR0917 - Litestar injects by name
        self,
        request: Request[Any, Any, Any],
        account: CurrentAccount,
        container: Services,
        jar: Jar,
        oauth_state: Annotated[str | None, QueryParameter(name="state")] = None,
        code: str | None = None,
        error: str | None = None,
    ) -> Redirect:
        done = await container.complete_discord_auth().execute(
            state=oauth_state,
            code=code,
            error=error,
            browser_tokens=jar.binding_tokens(request),
            signed_in_account=account.id if account else None,
        )
        if done.purpose is not AuthPurpose.LOGIN:
            notice = "already_linked" if done.outcome is AuthOutcome.ALREADY_LINKED else "linked"
            if done.purpose is AuthPurpose.TICKET and notice == "linked":
                notice = "linked_from_discord"
            return Redirect(f"/account?notice={notice}")
        assert done.session_token is not None  # noqa: S101 - login flows always sign in
        await jar.end_session(request, container)  # rotate: the old session ends here
        return Redirect(done.destination, cookies=[jar.session(done.session_token)])

    # -- /link tickets from Discord ----------------------------------------------------------------

    @get("/link/{token:str}")
    async def link_page(self, token: str, account: CurrentAccount, container: Services) -> Template:
        ticket = await container.show_link_ticket().execute(token)
        return Template(
            "link_confirm.html",
            context={
                "ticket": ticket,
                "token": token,
                "account": account,
                "avatar_url": avatar_url(ticket.discord.id.value, ticket.discord.avatar),
            },
        )

    @post("/link/{token:str}", status_code=302)
    async def link_confirm(
        self,
        request: Request[Any, Any, Any],
        token: str,
        account: CurrentAccount,
        container: Services,
        jar: Jar,
    ) -> Redirect:
        """Confirming starts a Discord round trip: the link is made at the callback, only if
        the person signs in to Discord as the account that ran /link."""
        if account is None:
            return Redirect(f"/signin?next=/link/{token}", status_code=303)
        started = await container.start_ticket_link().execute(
            token=token, account_id=account.id, browser_tokens=jar.binding_tokens(request)
        )
        return Redirect(started.authorize_url, cookies=[jar.binding(started.browser_tokens)])
