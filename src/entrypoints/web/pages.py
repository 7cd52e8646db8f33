"""Server-rendered pages. Thin: read the request, call a use case, render or redirect."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Template

from domain import errors
from domain import use_cases as uc
from domain.model import Account, AuthPurpose, Link, LinkTicket, RoleSync
from domain.names import isolated_handle, isolated_name, shown_display_name
from domain.policies import password_sign_in_destination, sign_in_destination
from domain.use_cases import AuthOutcome, SignedInAs
from entrypoints.web.avatars import Avatars
from entrypoints.web.cookies import CookieJar, loaded_as_no_page, starts_no_round_trip, to_discord
from entrypoints.web.deps import CurrentAccount, CurrentSignIn, Jar, Use
from entrypoints.web.email_pages import email_status_line
from entrypoints.web.errors import field_of, message_page, status_for
from entrypoints.web.head import asked_as_head
from entrypoints.web.other_sites import continue_to_sign_in
from entrypoints.web.rate_limit import client_budget

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]

NOTICES = {
    "linked": "Discord is linked to your account.",
    # With the password: changing the password itself asks the current one all the same.
    "confirmed": "Thanks: for the next 10 minutes you can change your email and Discord link "
    "without typing your password again.",
    # The form sent twice (a double click): the other request confirmed (see ConfirmPassword).
    "confirmed_twice": "Thanks: your confirmation was sent twice and counted once. For the "
    "next 10 minutes you can change your email and Discord link without typing your password "
    "again.",
    # With Discord (an account without a password): setting a first one needs no other.
    "confirmed_with_discord": "Thanks: for the next 10 minutes you can set a password, change "
    "your email and Discord link without confirming again.",
    "session_ended": "That session is signed out.",
    "signed_out": "You are signed out.",
    "signed_out_everywhere": "You are signed out everywhere, on every device.",
    "linked_from_discord": "Discord is linked to your account. Back in Discord, /whoami shows "
    "the link.",
    "already_linked": "This Discord account was already linked to yours.",
    "unlinked": "Discord is unlinked from your account.",
    "password": "Your password is saved. Other devices were signed out.",
    # The form sent twice (a double click): the other request saved it (see SetPassword).
    "password_twice": "Your password is saved (the form was sent twice and counted once). "
    "Other devices were signed out.",
    "password_reset": "Your new password is saved. You are signed in here and signed out "
    "everywhere else.",
    "password_reset_linked": "Your new password is saved. You are signed in here and signed "
    "out everywhere else. The Discord account linked below can still sign in to TaskFlow: if "
    "it is not yours, unlink it.",
    "password_reset_unlinked": "Your new password is saved and you are signed out everywhere "
    "else. The Discord account that was linked is unlinked: this email address had not been "
    "confirmed, so we could not tell who linked it. Link Discord again below if it is yours.",
    "welcome": "Welcome to TaskFlow! We are emailing you a link to confirm your address.",
    "verification_sent": "We are emailing you a new confirmation link.",
    "email_changed": "Your email address is changed. We are emailing it a confirmation link.",
    # The form sent twice (a double click): the other request made the change (ChangeEmail).
    "email_changed_twice": "Your email address is changed (the form was sent twice and "
    "counted once).",
    # The confirmation withheld: the address had as many as it may get (RECIPIENT_LIMITS).
    "welcome_unsent": "Welcome to TaskFlow! We have not emailed you a confirmation link: this "
    "address was sent as many lately as we send to an address that is not confirmed. Ask for "
    "a new link below later.",
    "email_changed_unsent": "Your email address is changed. We have not emailed it a "
    "confirmation link: it was sent as many lately as we send to an address that is not "
    "confirmed. Ask for a new link below later.",
    "role_connected": "Your TaskFlow connection is on Discord: back in Discord, the server's "
    "linked roles can see it. It stays current until you unlink.",
    "role_connection_later": "Discord is linked, but Discord did not take your TaskFlow "
    "connection just now: we will send it again in a few minutes.",
    "role_connection_soon": "Discord is linked: your TaskFlow connection will be on Discord "
    "in a moment, and stays current until you unlink.",
    # The callback's push ended otherwise: an unlink meanwhile (Discord was told "not
    # linked"), or the access taken back in Discord (the tokens are deleted): nothing follows.
    "role_connection_unlinked": "Discord was unlinked from your account meanwhile: Discord now "
    "shows your TaskFlow connection as not linked.",
    "role_connection_revoked": "Discord took back TaskFlow's access to your connection just "
    "now (the app was removed from your Discord account), so it is not on Discord. To connect "
    "it, start again from the server's Linked Roles in Discord.",
}
# Sign in with Discord linked by the confirmed email: the account page names the account it
# found (``_linked_by_email``).
LINKED_BY_EMAIL = "linked_by_email"
# The notice after the verification URL's callback, by how its push ended (``None``: another
# pusher had the connection in hand, and sends the new grant after its own push).
_ROLE_NOTICES: dict[RoleSync | None, str] = {
    RoleSync.PUSHED: "role_connected",
    None: "role_connection_soon",
    RoleSync.CLEARED: "role_connection_unlinked",
    RoleSync.REVOKED: "role_connection_revoked",
}
_ROLE_PURPOSES = (AuthPurpose.ROLES, AuthPurpose.ROLES_LINK)
# The notices after a round trip that kept the tokens of a Discord account: the page names it
# (the linked one: the round trip connects only that one). On a shared computer, Discord may
# have answered as the account left signed in in the browser, not the one of the person who
# clicked in Discord; signed out of TaskFlow, its TaskFlow account was signed in.
_ROLE_CONNECTED = frozenset({"role_connected", "role_connection_soon", "role_connection_later"})


# The query's mark of a round trip that also linked the account (``ROLES_LINK``): that link
# stays whoever signs out, so the way back is to unlink (with the account's proof).
JUST_LINKED = "1"


def _connected_as(link: Link, *, just_linked: bool) -> str:
    named = (
        "Discord account connected: "
        f"{isolated_name(shown_display_name(link.discord_global_name, link.discord_username))} "
        f"({isolated_handle(link.discord_username)}, id {link.discord_id})."
    )
    if just_linked:
        # Signing out undoes nothing here: the Discord account left signed in in the browser
        # (on a shared computer, someone else's) is linked to this account and could sign in
        # to it with Discord. Unlinking tells Discord "not linked" and drops the tokens.
        return (
            f"{named} If it is not yours, unlink it below (it could sign in to your account), "
            "sign out of Discord in this browser, and start again from the server's Linked Roles."
        )
    return (
        f"{named} If it is not yours, sign out, sign out of Discord in this browser too, and "
        "start again from the server's Linked Roles."
    )


# The sign-up form's field each refusal is about.
_SIGN_UP_FIELDS: dict[type[errors.DomainError], str] = {
    errors.InvalidUsername: "username",
    errors.UsernameTaken: "username",
    errors.InvalidEmail: "email",
    errors.EmailTaken: "email",
    errors.WeakPassword: "password",
}
PROOF_LAPSED = (
    "You signed in or typed your password more than 10 minutes ago: type it again to link "
    "this Discord account."
)


def told_linked(destination: str, notice: str = "linked") -> str:
    """Where a sign-in that linked Discord goes on: the account page (where a sign-in goes
    unless told otherwise) with its notice that Discord is linked, or any other page the
    sign-in was for, as it was."""
    return f"/account?notice={notice}" if destination == "/account" else destination


def told_linked_by_email(destination: str) -> str:
    """Where a Sign in with Discord that linked by the confirmed email goes on: the account
    page, whose notice names the account it found (``_linked_by_email``), with the way on to
    any other page the sign-in was for (``onward``). Sent straight there, the person never
    saw the notice: it is the account page's, and says what to do if the account is not
    theirs."""
    if destination in ("/", "/account"):  # the home page sends a signed-in person here
        return f"/account?notice={LINKED_BY_EMAIL}"
    return "/account?" + urlencode({"notice": LINKED_BY_EMAIL, "next": destination})


def onward(next_path: str) -> str:
    """The account page's way on to where a sign-in was bound (its ``next``): a path of this
    site that carries no one-time secret (``sign_in_destination``, as the sign-in's own
    destination), else none (""). The query is anyone's to write."""
    destination = sign_in_destination(next_path) if next_path else "/"
    return "" if destination in ("/", "/account") else destination


def _linked_by_email(account: Account, link: Link, others: int) -> str:
    """What Sign in with Discord says when it linked by the confirmed email (DESIGN.md's row
    2): the account it found, by name and address, and who else is signed in to it. The
    person had no say in which account that was: an account whose owner set it up with this
    person's address and had it confirmed (a confirmation link opened in a browser signed in
    to that account) would be theirs, password and sessions included."""
    said = (
        "Discord is linked to your account. Your Discord account "
        f"{isolated_handle(link.discord_username)} (id {link.discord_id}) "
        f"has the email address {account.email}, confirmed for this TaskFlow account, "
        f"{account.username}: it was linked to it, and Sign in with Discord opens it from now "
        "on."
    )
    if others:
        said += f" This account is also signed in on {others} other device(s), listed below."
    return (
        f"{said} If you did not create this account, do not use it: sign out, then ask for a "
        "password reset with that address, which signs everyone else out of it."
    )


def _credentials_page(
    template: str, account: Account | None, next_path: str, notice: str = ""
) -> Template | Redirect:
    """Sign-in and sign-up forms; someone already signed in goes straight on."""
    if account is not None:
        return Redirect(password_sign_in_destination(next_path))
    destination = password_sign_in_destination(next_path or "/account")
    return Template(
        template,
        context={
            "next": destination,
            "sign_in_next": destination,
            "notice": NOTICES.get(notice, ""),
        },
    )


# Where the page of a "Confirm with Discord" callback loaded twice leads while its first load
# is still under way (see ``_confirmed_with_discord``).
CONFIRMING_PAGE = "/auth/discord/confirming"
# How soon that page asks again, in seconds: the browser's own refresh (no script, which the
# pages' Content-Security-Policy forbids), nothing waited for on the server.
CONFIRMING_REFRESH = 1


def _confirmed_with_discord(
    done: uc.AuthCompleted, state: str | None, jar: CookieJar
) -> Redirect | Template:
    """The answer to "Confirm with Discord": the account page with the renewed session, or,
    its callback loaded twice while the first load still asks Discord, a page that asks again
    in a moment (``CONFIRMING_PAGE``), until that session is there."""
    if done.outcome is AuthOutcome.CONFIRMING:
        return _finishing("Finishing your confirmation…", state, holds_session=True)
    assert done.session_token is not None  # noqa: S101 - the session, renewed
    return Redirect(
        "/account?notice=confirmed_with_discord", cookies=[jar.session(done.session_token)]
    )


def _finishing(title: str, state: str | None, *, holds_session: bool) -> Template:
    """The page of a Discord callback loaded twice while its first load still asks Discord:
    it asks again in a moment (``CONFIRMING_PAGE``)."""
    again = f"{CONFIRMING_PAGE}?{urlencode({'state': state or ''})}"
    return message_page(
        title,
        "Your browser sent Discord's answer twice: the first one is still being checked.",
        next_step="This page goes on by itself in a moment. If it does not, continue.",
        links=[("Continue", again)],
        holds_session=holds_session,
        refresh=(CONFIRMING_REFRESH, again),
    )


async def _signed_in_with_discord(
    done: uc.AuthCompleted,
    state: str | None,
    request: Request[Any, Any, Any],
    jar: CookieJar,
    sign_out: uc.SignOut | None,
) -> Redirect | Template:
    """The answer to a plain "Sign in with Discord": its destination with the new session
    (the one its callback's first load made, for a second load: see
    ``FinishDiscordConfirmation``), or, the first load still under way, a page that asks
    again in a moment, or the page that asks for the account's proof first (email linking
    "confirm"), with the proposal's cookie (the first load's, for a second load)."""
    if done.outcome is AuthOutcome.CONFIRM_NEEDED:
        assert done.proposal_token is not None  # noqa: S101 - comes with that outcome
        return Redirect("/auth/discord/confirm-link", cookies=[jar.proposal(done.proposal_token)])
    if done.outcome is AuthOutcome.CONFIRMING:
        holds_session = jar.session_token(request) is not None
        return _finishing("Finishing your sign-in…", state, holds_session=holds_session)
    if done.outcome is AuthOutcome.STILL_SIGNED_IN:  # loaded again, the browser signed in
        return Redirect(done.destination)  # its own session: nothing set, nothing ended
    assert done.session_token is not None  # noqa: S101 - login flows always sign in
    if sign_out is not None:  # None: a first load, whose sign-in ended it in its transaction
        # Rotate: the old session ends here (not the one handed over, if the browser has it).
        await jar.end_session(request, sign_out, keeping=done.session_token, handed_over=True)
    destination = done.destination
    if done.outcome is AuthOutcome.LINKED_AND_SIGNED_IN:  # by its confirmed email
        destination = told_linked_by_email(destination)
    return Redirect(destination, cookies=jar.new_session(done.session_token))


async def _role_connection_made(
    done: uc.AuthCompleted,
    state: str | None,
    request: Request[Any, Any, Any],
    jar: CookieJar,
    sign_out: uc.SignOut | None,
) -> Redirect | Template:
    """The answer to Linked Roles' verification URL: the account page, saying how the push
    went, with the new session when it signed in (the one its callback's first load made, for
    a second load: see ``FinishDiscordConfirmation``; that load does not know how the first
    one's push went, so it says the connection follows in a moment; started signed in, it
    says how the push stands now, and hands nothing over), or, that first load still under
    way, a page that asks again in a moment."""
    if done.outcome is AuthOutcome.CONFIRMING:
        holds_session = jar.session_token(request) is not None
        signs_in = done.account_id == uc.SIGN_IN_UNDER_WAY  # started signed out
        title = "Finishing your sign-in…" if signs_in else "Finishing your connection…"
        return _finishing(title, state, holds_session=holds_session)
    # Otherwise failed, or paused by Discord's rate limit: left due, for the worker.
    notice = _ROLE_NOTICES.get(done.role_sync, "role_connection_later")
    # The round trip linked the account too (the page names the Discord account).
    if done.outcome is AuthOutcome.LINKED and notice in _ROLE_CONNECTED:
        notice = f"{notice}&linked={JUST_LINKED}"
    answer = Redirect(f"/account?notice={notice}")
    if done.session_token is not None:  # it signed in: rotate, as a sign-in does
        if sign_out is not None:  # None: a first load, whose sign-in ended it in its transaction
            # The old session ends here (not the one handed over, if the browser has it).
            await jar.end_session(request, sign_out, keeping=done.session_token, handed_over=True)
        answer.cookies.extend(jar.new_session(done.session_token))
    return answer


def _callback_looked_at() -> Template:
    """Discord's callback asked with HEAD (a download manager's or a link checker's, sent
    with the browser's cookies before its GET): it spends nothing. Run as the GET, it spent
    the state and signed in, in an answer nobody read, and the browser's own load of the page
    was told "used already"."""
    return message_page(
        "Back from Discord",
        "Open this page in your browser to finish.",
        links=[("Go to your account", "/account")],
    )


def _link_page(
    ticket: LinkTicket,
    token: str,
    signed_in: SignedInAs | None,
    avatars: Avatars,
    error: str = "",
    *,
    status: int = 200,
) -> Template:
    """A /link button's page; ``error``: about the password field, which it asks for."""
    return Template(
        "link_confirm.html",
        context={
            "ticket": ticket,
            "token": token,
            "sign_in_next": f"/link/{token}",
            "account": signed_in.account if signed_in else None,
            "recently_proved": signed_in is not None and signed_in.recently_proved,
            "error": error,
            "error_field": "current_password" if error else "",
            "avatar_url": avatars.url(ticket.discord.id.value, ticket.discord.avatar),
        },
        status_code=status,
    )


def _callback_not_a_page() -> Template:
    """Discord's callback loaded as no page (``loaded_as_no_page``): an image, a script or a
    frame of a page, which a sibling subdomain's page can have its visitor's browser load
    with this site's cookies (SameSite=Lax lets a same-site subresource have them). It spends
    nothing: loaded so, a state that page knew (a callback URL seen in a log) was spent, and
    its person's own load of the page back from Discord said "used already"."""
    return message_page(
        "Back from Discord",
        "This page opens as a page of its own, not inside another page.",
        status=403,
        links=[("Go to your account", "/account")],
    )


def _not_loaded_as_a_page(request: Request[Any, Any, Any]) -> Template | None:
    """The answer of Discord's callback, and of the page its second load leads to
    (``CONFIRMING_PAGE``, which hands over the first load's session and ends the browser's
    old one), to a load that is no browser's page of its own: a ``HEAD``
    (``_callback_looked_at``), an image, a frame, a script's request or a prefetch
    (``_callback_not_a_page``). ``None``: a page load, which goes on."""
    if asked_as_head(request):
        return _callback_looked_at()
    if loaded_as_no_page(request):
        return _callback_not_a_page()
    return None


async def _account_page(
    request: Request[Any, Any, Any],
    signed_in: SignedInAs,
    *,
    link_of_account: uc.LinkOfAccount,
    show_email_status: uc.ShowEmailStatus,
    list_sessions: uc.ListSessions,
    jar: CookieJar,
    avatars: Avatars,
    notice: str = "",
    next_path: str = "",
    linked: str = "",
    error: str = "",
    error_field: str = "",
    status: int = 200,
) -> Template:
    """The account page: with the query's ``notice`` (and its ``next``, ``linked``), or shown
    again by one of its forms refused, ``error`` on the field ``error_field`` names."""
    account = signed_in.account
    link = await link_of_account.execute(account.id)
    email_status, email_resend = email_status_line(await show_email_status.execute(account.id))
    sessions = await list_sessions.execute(jar.session_token(request))
    said, way_on = NOTICES.get(notice, ""), ""
    if notice in _ROLE_CONNECTED and link is not None:
        said = f"{said} {_connected_as(link, just_linked=linked == JUST_LINKED)}"
    if notice == LINKED_BY_EMAIL and link is not None:
        # Only of a confirmed address, which linking by email needs: the notice is the
        # query's, which any link may carry.
        if account.email is not None and account.email_verified:
            others = sum(1 for s in sessions.sessions if s.id != sessions.current.id)
            said = _linked_by_email(account, link, others)
        else:
            said = NOTICES["linked"]
        way_on = onward(next_path)
    return Template(
        "account.html",
        context={
            "account": account,
            "email_status": email_status,
            "email_resend": email_resend,
            "link": link,
            "avatar_url": avatars.url(link.discord_id.value, link.discord_avatar) if link else None,
            "notice": said,
            "onward": way_on,
            "recently_proved": signed_in.recently_proved,
            "sessions": sessions.sessions,
            "current_session": sessions.current.id,
            "error": error,
            "error_field": error_field,
        },
        status_code=status,
    )


class Pages(Controller):
    include_in_schema = False

    @get("/")
    async def home(self, account: CurrentAccount) -> Template | Redirect:
        if account is not None:
            return Redirect("/account")
        return Template("index.html", context={"account": None})

    # -- password sign in / sign up / sign out --------------------------------------------------

    @get("/signin")
    async def signin_page(
        self, account: CurrentAccount, next: FromQuery[str] = "", notice: FromQuery[str] = ""
    ) -> Template | Redirect:
        return _credentials_page("signin.html", account, next, notice)

    @post("/signin", status_code=303)
    async def signin(
        self,
        request: Request[Any, Any, Any],
        sign_in: Use[uc.SignIn],
        jar: Jar,
        data: Form,
    ) -> Template | Redirect:
        destination = password_sign_in_destination(data.get("next") or "/account")
        try:
            signed_in = await sign_in.execute(
                login=data.get("login", ""),
                password=data.get("password", ""),
                client_address=request.client.host if request.client else None,
                device_token=jar.device_token(request),
                # The session this browser had ends (a sign-in rotates it), with the offer.
                browser=jar.browser(request),
            )
        except (errors.InvalidCredentials, errors.TooManyRequests) as exc:
            # The form again, with what was typed: a throttled account's way on is the
            # form's "Forgot your password?", which the throttle's words point to.
            context = {
                "next": destination,
                "sign_in_next": destination,
                "login": data.get("login", ""),
                "error": exc.message,
                "error_field": field_of(exc, {errors.InvalidCredentials: "password"}),
            }
            return Template("signin.html", context=context, status_code=status_for(exc))
        return Redirect(destination, cookies=jar.signed_in(signed_in))

    @get("/signup")
    async def signup_page(
        self, account: CurrentAccount, next: FromQuery[str] = ""
    ) -> Template | Redirect:
        return _credentials_page("signup.html", account, next)

    @post("/signup", status_code=303)
    async def signup(
        self,
        request: Request[Any, Any, Any],
        sign_up: Use[uc.SignUp],
        jar: Jar,
        data: Form,
    ) -> Template | Redirect:
        destination = password_sign_in_destination(data.get("next") or "/account")
        welcome = destination == "/account"  # what the sign-up page's form sends when not told
        try:
            signed_in = await sign_up.execute(
                username=data.get("username", ""),
                email=data.get("email", ""),
                password=data.get("password", ""),
                client=client_budget(request),
                # The same form sent twice (a double click) comes with the same CSRF cookie,
                # another browser with its own: the first request's session is derived from it.
                form_secret=request.cookies.get(jar.csrf_name),
                # The session this browser had ends (a sign-in rotates it), with the offer.
                browser=jar.browser(request),
            )
        except (errors.InvalidInput, errors.UsernameTaken, errors.EmailTaken) as exc:
            context = {
                "next": destination,
                "sign_in_next": destination,
                "username": data.get("username", ""),
                "email": data.get("email", ""),
                "error": exc.message,
                "error_field": field_of(exc, _SIGN_UP_FIELDS),
            }
            return Template("signup.html", context=context, status_code=status_for(exc))
        # The welcome only for the account just made: a refused form keeps its own "next",
        # which its "Sign in" link passes on to an account that exists already.
        if welcome:
            notice = "welcome" if signed_in.confirmation_sent else "welcome_unsent"
            destination = f"/account?notice={notice}"
        return Redirect(destination, cookies=jar.signed_in(signed_in))

    @post("/signout", status_code=303)
    async def signout(
        self, request: Request[Any, Any, Any], sign_out: Use[uc.SignOut], jar: Jar
    ) -> Redirect:
        await jar.end_session(request, sign_out)
        return Redirect("/", cookies=jar.signed_out())

    # -- account page ---------------------------------------------------------------------------

    @get("/account")
    async def account_page(
        self,
        request: Request[Any, Any, Any],
        signed_in: CurrentSignIn,
        link_of_account: Use[uc.LinkOfAccount],
        show_email_status: Use[uc.ShowEmailStatus],
        list_sessions: Use[uc.ListSessions],
        jar: Jar,
        avatars: Use[Avatars],
        notice: FromQuery[str] = "",
        next: FromQuery[str] = "",
        linked: FromQuery[str] = "",
    ) -> Template | Redirect:
        if signed_in is None:
            return Redirect("/signin?next=/account")
        return await _account_page(
            request,
            signed_in,
            link_of_account=link_of_account,
            show_email_status=show_email_status,
            list_sessions=list_sessions,
            jar=jar,
            avatars=avatars,
            notice=notice,
            next_path=next,
            linked=linked,
        )

    @post("/account/discord/link", status_code=302)
    async def start_link(
        self,
        request: Request[Any, Any, Any],
        signed_in: CurrentSignIn,
        start_discord_link: Use[uc.StartDiscordLink],
        link_of_account: Use[uc.LinkOfAccount],
        show_email_status: Use[uc.ShowEmailStatus],
        list_sessions: Use[uc.ListSessions],
        jar: Jar,
        avatars: Use[Avatars],
        data: Form,
    ) -> Redirect | Template:
        try:
            started = await start_discord_link.execute(
                session_token=jar.session_token(request),
                current_password=data.get("current_password") or None,
                browser_tokens=jar.flow_bindings(request),
            )
        except errors.InvalidCredentials as exc:
            if signed_in is None:
                raise errors.NotSignedIn() from None
            # The page again, the error on the form's password field (never what was typed).
            return await _account_page(
                request,
                signed_in,
                link_of_account=link_of_account,
                show_email_status=show_email_status,
                list_sessions=list_sessions,
                jar=jar,
                avatars=avatars,
                error=exc.message,
                error_field="link_password",
                status=status_for(exc),
            )
        return to_discord(started, jar)

    @post("/account/discord/unlink", status_code=303)
    async def unlink(
        self,
        request: Request[Any, Any, Any],
        signed_in: CurrentSignIn,
        unlink_account: Use[uc.UnlinkAccount],
        link_of_account: Use[uc.LinkOfAccount],
        show_email_status: Use[uc.ShowEmailStatus],
        list_sessions: Use[uc.ListSessions],
        jar: Jar,
        avatars: Use[Avatars],
        data: Form,
    ) -> Redirect | Template:
        try:
            await unlink_account.execute(
                session_token=jar.session_token(request),
                current_password=data.get("current_password") or None,
            )
        except errors.InvalidCredentials as exc:
            if signed_in is None:
                raise errors.NotSignedIn() from None
            # The page again, the error on the form's password field (never what was typed).
            return await _account_page(
                request,
                signed_in,
                link_of_account=link_of_account,
                show_email_status=show_email_status,
                list_sessions=list_sessions,
                jar=jar,
                avatars=avatars,
                error=exc.message,
                error_field="unlink_password",
                status=status_for(exc),
            )
        return Redirect("/account?notice=unlinked")

    @post("/account/password", status_code=303)
    async def set_password(
        self,
        request: Request[Any, Any, Any],
        signed_in: CurrentSignIn,
        set_password: Use[uc.SetPassword],
        jar: Jar,
        data: Form,
    ) -> Template | Redirect:
        try:
            done = await set_password.execute(
                session_token=jar.session_token(request),
                new_password=data.get("new_password", ""),
                current_password=data.get("current_password") or None,
            )
        except (errors.InvalidCredentials, errors.InvalidInput) as exc:
            if signed_in is None:
                raise errors.NotSignedIn() from None
            # The form again, its error on the field it is about (never a password typed).
            return Template(
                "change_password.html",
                context={
                    "account": signed_in.account,
                    "error": exc.message,
                    "error_field": field_of(
                        exc,
                        {
                            errors.InvalidCredentials: "current_password",
                            errors.DomainError: "new_password",
                        },
                    ),
                },
                status_code=status_for(exc),
            )
        notice = "password_twice" if done.sent_twice else "password"
        return Redirect(
            f"/account?notice={notice}",
            cookies=[jar.device(done.device_token), jar.session(done.session_token)],
        )

    # -- proving identity again before a sensitive change ("sudo mode") ------------------------

    @get("/account/confirm")
    async def confirm_page(
        self, signed_in: CurrentSignIn, link_of_account: Use[uc.LinkOfAccount]
    ) -> Template | Redirect:
        if signed_in is None:
            return Redirect("/signin?next=/account")
        link = await link_of_account.execute(signed_in.account.id)
        return Template(
            "confirm_identity.html", context={"account": signed_in.account, "link": link}
        )

    @post("/account/confirm", status_code=303)
    async def confirm_with_password(
        self,
        request: Request[Any, Any, Any],
        confirm_password: Use[uc.ConfirmPassword],
        current_session: Use[uc.CurrentSession],
        jar: Jar,
        data: Form,
    ) -> Template | Redirect:
        try:
            done = await confirm_password.execute(
                session_token=jar.session_token(request), password=data.get("password", "")
            )
        except errors.InvalidCredentials as exc:
            signed_in = await current_session.execute(jar.session_token(request))
            if signed_in is None:
                raise errors.NotSignedIn() from None
            return Template(
                "confirm_identity.html",
                context={
                    "account": signed_in.account,
                    "link": None,
                    "error": exc.message,
                    "error_field": "password",
                },
                status_code=401,
            )
        # The session goes on under a new token: a copy of the old cookie has no part in it.
        notice = "confirmed_twice" if done.sent_twice else "confirmed"
        return Redirect(f"/account?notice={notice}", cookies=[jar.session(done.session_token)])

    @post("/account/confirm/discord", status_code=302)
    async def confirm_with_discord(
        self,
        request: Request[Any, Any, Any],
        start_discord_reauth: Use[uc.StartDiscordReauth],
        jar: Jar,
    ) -> Redirect:
        started = await start_discord_reauth.execute(
            session_token=jar.session_token(request), browser_tokens=jar.flow_bindings(request)
        )
        return to_discord(started, jar)

    # -- sessions ----------------------------------------------------------------------------------

    @post("/account/sessions/{session_id:str}/end", status_code=303)
    async def end_session(
        self,
        request: Request[Any, Any, Any],
        session_id: FromPath[str],
        end_session: Use[uc.EndSession],
        jar: Jar,
    ) -> Redirect:
        this_one = await end_session.execute(jar.browser(request), session_id)
        if this_one:  # ended: the offer waiting here too
            return Redirect("/signin?notice=signed_out", cookies=jar.signed_out())
        return Redirect("/account?notice=session_ended")

    @post("/account/sessions/end-all", status_code=303)
    async def end_all_sessions(
        self,
        request: Request[Any, Any, Any],
        end_all_sessions: Use[uc.EndAllSessions],
        jar: Jar,
    ) -> Redirect:
        done = await end_all_sessions.execute(  # ended: the offer waiting here too
            jar.browser(request), jar.device_token(request)
        )
        cookies = jar.signed_out()
        if done.device_token is not None:  # this browser stays trusted, the others do not
            cookies.append(jar.device(done.device_token))
        return Redirect("/signin?notice=signed_out_everywhere", cookies=cookies)

    # -- Sign in with Discord -----------------------------------------------------------------

    @get("/auth/discord/login", status_code=302)
    async def discord_login(
        self,
        request: Request[Any, Any, Any],
        start_discord_login: Use[uc.StartDiscordLogin],
        jar: Jar,
        next: FromQuery[str] = "",
        switch: FromQuery[bool] = False,
    ) -> Redirect | Template:
        """``switch=true``: show Discord's consent screen (with its account switcher) even to
        someone who already granted access, to sign in as another Discord account. Another
        site's page (and a HEAD) gets a page to continue from, not the round trip (see
        ``other_sites``)."""
        if starts_no_round_trip(request):
            return continue_to_sign_in(
                next or "/account",
                switch=switch,
                holds_session=jar.session_token(request) is not None,
            )
        started = await start_discord_login.execute(
            next_path=next or "/account",
            browser_tokens=jar.flow_bindings(request),
            ask_again=switch,
        )
        return to_discord(started, jar)

    @get("/auth/discord/callback", status_code=302)
    async def discord_callback(
        self,
        request: Request[Any, Any, Any],
        complete_discord_auth: Use[uc.CompleteDiscordAuth],
        sign_out: Use[uc.SignOut],
        jar: Jar,
        oauth_state: Annotated[str | None, QueryParameter(name="state")] = None,
        code: FromQuery[str | None] = None,
        error: FromQuery[str | None] = None,
    ) -> Redirect | Template:
        if (not_a_page := _not_loaded_as_a_page(request)) is not None:
            return not_a_page
        done = await complete_discord_auth.execute(
            state=oauth_state,
            code=code,
            error=error,
            browser=jar.browser(request),  # a sign-in ends its session and offer
        )
        # A first load's sign-in ended the browser's session in its own transaction. A load
        # again is handed the first one's session (nothing written): the browser's session
        # ends then, as at the waiting page, for the browser may have got another meanwhile
        # (signed in in another tab while the first load asked Discord).
        rotate = sign_out if done.handed_over else None
        if done.purpose is AuthPurpose.REAUTH:
            return _confirmed_with_discord(done, oauth_state, jar)
        if done.purpose in _ROLE_PURPOSES:  # Linked Roles' verification URL
            return await _role_connection_made(done, oauth_state, request, jar, rotate)
        if done.purpose is not AuthPurpose.LOGIN:
            notice = "already_linked" if done.outcome is AuthOutcome.ALREADY_LINKED else "linked"
            if done.purpose is AuthPurpose.TICKET and notice == "linked":
                notice = "linked_from_discord"
            return Redirect(f"/account?notice={notice}")
        return await _signed_in_with_discord(done, oauth_state, request, jar, rotate)

    @get(CONFIRMING_PAGE)
    async def discord_confirming(
        self,
        request: Request[Any, Any, Any],
        finish_discord_confirmation: Use[uc.FinishDiscordConfirmation],
        sign_out: Use[uc.SignOut],
        jar: Jar,
        oauth_state: Annotated[str | None, QueryParameter(name="state")] = None,
    ) -> Redirect | Template:
        """Where the page of a "Confirm with Discord" or a "Sign in with Discord" callback
        loaded twice, its first load still under way, leads: the first load's session once it
        is there (or what became of it). Reads only (a sign-in's old session ends, as at the
        callback). Loaded as no page, it hands over nothing, as the callback."""
        if (not_a_page := _not_loaded_as_a_page(request)) is not None:
            return not_a_page
        done = await finish_discord_confirmation.execute(
            state=oauth_state,
            browser_tokens=jar.flow_bindings(request),
            session_token=jar.session_token(request),
        )
        if done.purpose is AuthPurpose.LOGIN:
            return await _signed_in_with_discord(done, oauth_state, request, jar, sign_out)
        if done.purpose in _ROLE_PURPOSES:  # signed out at the start: it signs in
            return await _role_connection_made(done, oauth_state, request, jar, sign_out)
        return _confirmed_with_discord(done, oauth_state, jar)

    # -- /link tickets from Discord ----------------------------------------------------------------

    @get("/link/{token:str}")
    async def link_page(
        self,
        token: FromPath[str],
        signed_in: CurrentSignIn,
        show_link_ticket: Use[uc.ShowLinkTicket],
        avatars: Use[Avatars],
        proof: FromQuery[str] = "",
    ) -> Template:
        ticket = await show_link_ticket.execute(token)
        recently_proved = signed_in is not None and signed_in.recently_proved
        # Sent back here by its own form: the proof lapsed while the page was open.
        asks_again = (
            proof == "again"
            and signed_in is not None
            and signed_in.account.has_password
            and not recently_proved
        )
        return _link_page(ticket, token, signed_in, avatars, PROOF_LAPSED if asks_again else "")

    @post("/link/{token:str}", status_code=302)
    async def link_confirm(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        signed_in: CurrentSignIn,
        start_ticket_link: Use[uc.StartTicketLink],
        show_link_ticket: Use[uc.ShowLinkTicket],
        avatars: Use[Avatars],
        jar: Jar,
        data: Form,
    ) -> Redirect | Template:
        """Confirming starts a Discord round trip: the link is made at the callback, only if
        the person signs in to Discord as the account that ran /link."""
        if signed_in is None:
            return Redirect(f"/signin?next=/link/{token}", status_code=303)
        account = signed_in.account
        try:
            started = await start_ticket_link.execute(
                token=token,
                session_token=jar.session_token(request),
                current_password=data.get("current_password") or None,
                browser_tokens=jar.flow_bindings(request),
            )
        except errors.ReauthenticationRequired:
            if not account.has_password:
                raise  # the account page's "Confirm it is you" (with Discord)
            # The page was shown while a proof was recent (no password field), and that
            # proof lapsed before the press: this page asks for the password now, the button
            # still working (the account page's confirmation would end elsewhere).
            return Redirect(f"/link/{token}?proof=again", status_code=303)
        except errors.InvalidCredentials as exc:
            # The page again, its error on the password field, the button still working.
            ticket = await show_link_ticket.execute(token)
            return _link_page(ticket, token, signed_in, avatars, exc.message, status=401)
        return to_discord(started, jar)
