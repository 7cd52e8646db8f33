"""Email pages: confirm an address, reset a password, change the address, and the demo's
outbox. Emailed links open a page with a button; only the button's POST uses the link, so
mail scanners that fetch links never spend them."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Body, FromPath
from litestar.response import Redirect, Template

from adapters.email import OutboxEmailSender
from adapters.loopback import is_loopback
from domain import errors
from domain import use_cases as uc
from domain.model import DeliveryStatus, EmailPurpose
from domain.ports import EmailSender
from domain.use_cases import EmailStatus
from entrypoints.web.deps import CurrentAccount, CurrentSignIn, Jar, Use
from entrypoints.web.errors import field_of, message_page, status_for
from entrypoints.web.rate_limit import client_budget

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]

# Where confirming an address lands.
CONFIRMED_PAGE = "/account/email/confirmed"
# Where "This is not my account" on a confirmation link's page lands.
DISOWNED_PAGE = "/email/not-mine"
RESET_SENT = (
    "If a TaskFlow account uses {email}, we have sent it a link to choose a new password. "
    "The link works for 1 hour. Nothing arrived after a few minutes? Check your spam folder, "
    "check the address, or ask again."
)


def email_status_line(status: EmailStatus) -> tuple[str, bool]:
    """What the account page says about the address, and whether it offers a new link."""
    account, latest = status.account, status.latest_verification
    if account.email is None:
        return "You have no email address. Add one below to get password reset links.", False
    if account.email_verified:
        return "Confirmed.", False
    if (
        latest is None
        or latest.status is DeliveryStatus.CANCELLED
        # A newer release's status (a rolling upgrade, a rollback): what became of it is not
        # known here, and asking again is what the limits allow anyway.
        or not isinstance(latest.status, DeliveryStatus)
    ):
        return "Not confirmed yet. Ask for a confirmation link.", True
    if latest.status is DeliveryStatus.PENDING and latest.attempts == 0:
        return "Not confirmed yet. We are sending you a confirmation link.", False
    if latest.status is DeliveryStatus.PENDING:
        return (
            f"Not confirmed yet. We could not send the confirmation email so far "
            f"({latest.attempts} attempt(s)); we keep trying.",
            True,
        )
    if latest.status is DeliveryStatus.FAILED:
        return (
            "Not confirmed yet. We could not send the confirmation email to this address. "
            "Check that it is right, then ask again.",
            True,
        )
    sent = (latest.finished_at or latest.created_at).strftime("%H:%M UTC")
    return (
        f"Not confirmed yet. We sent a confirmation link at {sent}: check your inbox and spam "
        "folder.",
        True,
    )


class EmailPages(Controller):
    include_in_schema = False

    # -- confirming the address -----------------------------------------------------------------

    @get("/verify-email/{token:str}")
    async def verify_page(
        self, token: FromPath[str], account: CurrentAccount, show_email_link: Use[uc.ShowEmailLink]
    ) -> Template:
        shown = await show_email_link.execute(token, EmailPurpose.VERIFY)
        return Template(
            "verify_email.html",
            context={
                "email": shown.token.email,
                "token": token,
                "sign_in_next": f"/verify-email/{token}",
                "account": account,
                "owner": shown.account,
                "signed_in_as_owner": account is not None and account.id == shown.account.id,
            },
        )

    @post("/verify-email/{token:str}", status_code=303)
    async def verify(
        self, token: FromPath[str], account: CurrentAccount, verify_email: Use[uc.VerifyEmail]
    ) -> Redirect:
        await verify_email.execute(token, account.id if account is not None else None)
        # A page of its own: the answer to the POST was the page, so going back to it (or
        # reloading it) sent the form again, and said the link was used up.
        return Redirect(CONFIRMED_PAGE, status_code=303)

    @post("/verify-email/{token:str}/not-mine", status_code=303)
    async def not_mine(
        self,
        token: FromPath[str],
        account: CurrentAccount,
        disown_email: Use[uc.DisownEmail],
        jar: Jar,
    ) -> Redirect:
        """The button "This is not my account": the link proves the mailbox, and the address
        leaves the account that claims it (unconfirmed), unless this browser is signed in to
        that very account (refused: it is theirs)."""
        await disown_email.execute(token, signed_in=account.id if account is not None else None)
        return Redirect(DISOWNED_PAGE, status_code=303, cookies=[jar.declined()])

    @get(DISOWNED_PAGE)
    async def disowned_page(
        self, request: Request[Any, Any, Any], account: CurrentAccount, jar: Jar
    ) -> Template:
        """What a decline did, said to the browser that just declined (``CookieJar.declined``)
        and only once; to anyone else (a link to this page from anywhere), what the button
        does, with nothing said about anyone's address."""
        flash = jar.took_declined(request)
        if flash is None:
            return message_page(
                "This is not my account",
                "Did we email you a link to confirm your address for a TaskFlow account you "
                'did not create? Open that link and press "This is not my account": your '
                "address is taken off that account, which cannot take it again. Opened again "
                "afterwards, the link says that you declined it.",
                links=[("Go home", "/")],
                account=account,
            )
        page = message_page(
            "Your address was removed",
            "Your email address is no longer on that TaskFlow account, and its links to it "
            "stop working. That account cannot take your address again, so you get no more "
            "emails about it. Nothing else was changed.",
            links=[("Go home", "/")],
            account=account,
        )
        page.cookies.append(flash)
        return page

    @get(CONFIRMED_PAGE)
    async def confirmed_page(self, account: CurrentAccount) -> Template | Redirect:
        """What confirming an address says, for as long as it is true."""
        if account is None:
            return Redirect("/signin?next=/account")
        if account.email is None or not account.email_verified:
            return Redirect("/account")
        # Its promise of Sign in with Discord only when that finds accounts by email (the
        # template's links_by_email): with TASKFLOW_LINK_EMAIL_LINKING=off it never does.
        return Template(
            "email_confirmed.html",
            context={"email": account.email, "username": account.username, "account": account},
        )

    @post("/account/email/verify", status_code=303)
    async def resend(
        self,
        request: Request[Any, Any, Any],
        account: CurrentAccount,
        resend_verification: Use[uc.ResendVerification],
    ) -> Redirect:
        if account is None:
            return Redirect("/signin?next=/account")
        await resend_verification.execute(account.id, client=client_budget(request))
        return Redirect("/account?notice=verification_sent")

    @post("/account/email", status_code=303)
    async def change_email(
        self,
        request: Request[Any, Any, Any],
        signed_in: CurrentSignIn,
        change_email: Use[uc.ChangeEmail],
        jar: Jar,
        data: Form,
    ) -> Template | Redirect:
        try:
            done = await change_email.execute(
                session_token=jar.session_token(request),
                new_email=data.get("email", ""),
                current_password=data.get("current_password") or None,
                client=client_budget(request),
            )
        except (errors.InvalidCredentials, errors.InvalidInput, errors.EmailTaken) as exc:
            if signed_in is None:
                raise errors.NotSignedIn() from None
            # The form again, with the address typed (never the password).
            return Template(
                "change_email.html",
                context={
                    "account": signed_in.account,
                    "recently_proved": signed_in.recently_proved,
                    "new_email": data.get("email", ""),
                    "error": exc.message,
                    "error_field": field_of(
                        exc,
                        {errors.InvalidCredentials: "email_password", errors.DomainError: "email"},
                    ),
                },
                status_code=status_for(exc),
            )
        notice = "email_changed" if done.confirmation_sent else "email_changed_unsent"
        if done.sent_twice:
            notice = "email_changed_twice"
        return Redirect(f"/account?notice={notice}", cookies=[jar.session(done.session_token)])

    # -- password reset -------------------------------------------------------------------------

    @get("/password/reset")
    async def reset_request_page(self, account: CurrentAccount) -> Template:
        return Template("password_reset_request.html", context={"account": account})

    @post("/password/reset", status_code=200)
    async def reset_request(
        self,
        request: Request[Any, Any, Any],
        account: CurrentAccount,
        request_password_reset: Use[uc.RequestPasswordReset],
        data: Form,
    ) -> Template:
        email = data.get("email", "")
        try:
            await request_password_reset.execute(email, client=client_budget(request))
        except errors.InvalidInput as exc:
            return Template(
                "password_reset_request.html",
                context={
                    "account": account,
                    "email": email,
                    "error": exc.message,
                    "error_field": "email",
                },
                status_code=status_for(exc),
            )
        # The same answer whether or not an account uses the address.
        return message_page(
            "Check your email",
            RESET_SENT.format(email=email.strip()),
            links=[("Back to sign in", "/signin")],
            account=account,
        )

    @get("/password/reset/{token:str}")
    async def reset_page(
        self, token: FromPath[str], account: CurrentAccount, show_email_link: Use[uc.ShowEmailLink]
    ) -> Template:
        shown = await show_email_link.execute(token, EmailPurpose.RESET)
        return Template(
            "password_reset.html",
            context={"target": shown.account, "token": token, "account": account},
        )

    @post("/password/reset/{token:str}", status_code=303)
    async def reset(
        self,
        request: Request[Any, Any, Any],
        token: FromPath[str],
        account: CurrentAccount,
        reset_password: Use[uc.ResetPassword],
        show_email_link: Use[uc.ShowEmailLink],
        jar: Jar,
        data: Form,
    ) -> Template | Redirect:
        try:
            done = await reset_password.execute(
                token=token,
                new_password=data.get("new_password", ""),
                # Rotate: whatever session was here ends (unless it is the one answered: sent
                # twice), with the offer waiting here.
                browser=jar.browser(request),
            )
        except errors.WeakPassword as exc:
            shown = await show_email_link.execute(token, EmailPurpose.RESET)
            return Template(
                "password_reset.html",
                context={
                    "target": shown.account,
                    "token": token,
                    "account": account,
                    "error": exc.message,
                    "error_field": "new_password",
                },
                status_code=status_for(exc),
            )
        notice = (
            "password_reset_unlinked"
            if done.unlinked
            else "password_reset_linked"
            if done.still_linked
            else "password_reset"
        )
        return Redirect(f"/account?notice={notice}", cookies=jar.signed_in(done.signed_in))


_URL = re.compile(r"(https?://[^\s<>\"]+)")


def _linkified(text: str) -> list[tuple[str, bool]]:
    """Text split into (piece, is_url) so the template can escape text and link URLs."""
    return [(piece, i % 2 == 1) for i, piece in enumerate(_URL.split(text)) if piece]


_FORWARDED = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")


def _asked_by_its_public_address(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """The outbox shows everyone's reset and sign-in links: only to a browser that asked for
    this service by the name in its public URL. A page of another site whose name was
    pointed at this address (DNS rebinding: the demo listens on 127.0.0.1) sends that
    site's name in ``Host`` instead. With a loopback public URL (which is what lets the
    outbox run without TASKFLOW_LINK_DEVELOPMENT) only this machine may ask: anyone else
    can send any ``Host``, and would reach the page if the server listens beyond loopback
    (``serve --host 0.0.0.0``)."""
    public: str = connection.app.state["public_url"]
    peer = connection.client.host if connection.client else None
    if is_loopback(urlsplit(public).hostname) and (
        not is_loopback(peer) or any(name in connection.headers for name in _FORWARDED)
    ):
        # A proxy's request comes from this machine whoever sent it, and the address it
        # forwards may be the sender's own words: a forwarded request is not this machine's.
        raise errors.NotFound("There is no page here.")
    if connection.headers.get("host", "").lower() != urlsplit(public).netloc.lower():
        raise errors.NotFound(f"The outbox is shown only at {public}/outbox.")


@get("/outbox", include_in_schema=False, guards=[_asked_by_its_public_address])
async def outbox_page(account: CurrentAccount, email_sender: Use[EmailSender]) -> Template:
    """The development outbox: every email the service "sent", newest first."""
    sender = email_sender
    assert isinstance(sender, OutboxEmailSender)  # noqa: S101 - mounted only with the outbox
    messages = [
        {
            "to": sent.message.to,
            "subject": sent.message.subject,
            "at": sent.sent_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "parts": _linkified(sent.message.text),
        }
        for sent in reversed(sender.messages())
    ]
    return Template("outbox.html", context={"messages": messages, "account": account})
