"""The one place where domain errors become HTTP answers: pages for people, JSON for the API."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    SerializationException,
    ValidationException,
)
from litestar.response import Redirect, Template

from domain import errors
from domain.policies import SECRET_PATHS, destination_path
from entrypoints.web.api import PATTERN_WORDS
from entrypoints.web.head import with_head

log = logging.getLogger("taskflow_link.web")

STATUS: dict[type[errors.DomainError], int] = {
    errors.InvalidInput: 400,
    errors.NotFound: 404,
    errors.NotSignedIn: 401,
    errors.SecretUnknown: 404,
    errors.SecretExpired: 410,
    errors.SecretConsumed: 410,
    errors.WrongBrowser: 400,
    errors.StartedByAnotherVersion: 409,
    errors.LinkRefused: 409,
    errors.WrongDiscordAccount: 409,
    errors.ReauthenticationRequired: 403,
    errors.ApiKeyExpired: 401,
    errors.MissingScope: 403,
    errors.NotLinked: 409,
    errors.UnlinkWouldLockOut: 409,
    errors.NothingUnlinked: 409,
    errors.InvalidCredentials: 401,
    errors.UsernameTaken: 409,
    errors.EmailTaken: 409,
    errors.OwnAccountNotDeclined: 409,
    errors.TooManyRequests: 429,
    errors.DiscordDenied: 400,
    errors.DiscordConfirmationFailed: 400,
    errors.DiscordSignInFailed: 400,
    errors.DiscordSignInStopped: 409,
    errors.DiscordUnavailable: 502,
    errors.Conflict: 409,
    errors.StorageError: 503,
    errors.StorageFault: 500,
}

TITLES: dict[int, str] = {
    400: "That did not work",
    401: "Please sign in",
    403: "This form expired",
    404: "Not found",
    405: "Not a page",
    409: "That cannot be done",
    410: "This link is used up",
    413: "Too large",
    415: "Not a form",
    429: "Slow down",
    502: "Discord did not answer",
    503: "Temporarily unavailable",
}


def status_for(error: errors.DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def field_of(error: errors.DomainError, fields: Mapping[type[errors.DomainError], str]) -> str:
    """The id of the refused form's field that ``error`` is about (the one ``fields`` names
    for its kind, or for the nearest kind it is one of), or "" for the whole form: the page
    ties the error's words to that field (see ``_fields.html``)."""
    return next((fields[cls] for cls in type(error).__mro__ if cls in fields), "")


def path_of(request: Request[Any, Any, Any]) -> str:
    """The request's path, from the ASGI scope: ``request.url`` also parses the ``Host``
    header, which a client controls."""
    path: str = request.scope.get("path", "")
    return path


# The page back from Discord, and the titles of its state's refusals (which are no links').
CALLBACK = "/auth/discord/callback"
_CALLBACK_TITLES: dict[type[errors.DomainError], str] = {
    errors.SecretConsumed: "Discord's answer was already used",
    errors.SecretExpired: "This attempt has expired",
    errors.DiscordSignInFailed: "Signing in with Discord did not go through",
    errors.DiscordSignInStopped: "This sign-in with Discord was stopped",
    errors.StartedByAnotherVersion: "Please start again",
    errors.DiscordSignInUsed: "This sign-in was already used",
}
# Email linking "confirm": the page where a Discord sign-in waits for the account's proof.
PROPOSAL_PAGE = "/auth/discord/confirm-link"
# Linked Roles' verification URL, where Discord sends a member (and where its round trip
# starts again: nothing on the account page starts it).
LINKED_ROLE_PAGE = "/discord/linked-role"
# The name of the session cookie, in the app's state: an error page does not look the session
# up (the database may be what failed), but a browser that sends one is most likely signed in.
SESSION_COOKIE_STATE = "session_cookie"


def holds_a_session(request: Request[Any, Any, Any]) -> bool:
    """Whether the browser sent a session cookie: its error pages then lead to the account
    page, which asks it to sign in if that session has ended, rather than to the sign-in
    page, which sends a signed-in browser on to the account page."""
    name = request.app.state.get(SESSION_COOKIE_STATE)
    return bool(name and request.cookies.get(name))


def _emailed_link_used(path: str, error: errors.DomainError) -> bool:
    """The emailed link of email linking "confirm", used: its words say the account page
    shows whether Discord is linked."""
    return path.startswith(f"{PROPOSAL_PAGE}/") and isinstance(error, errors.SecretConsumed)


def _next_step(request: Request[Any, Any, Any], error: errors.DomainError) -> str:
    path = path_of(request)
    if isinstance(error, errors.TicketRefused) or (
        path.startswith("/link/") and isinstance(error, errors.SecretRefused)
    ):
        return "Run /link again in Discord to get a new link."
    if isinstance(error, errors.TicketDenied):
        return (
            "Unless it was used in another tab or has expired meanwhile, your /link button "
            "still works: press it again in Discord (or go back to its page) and sign in to "
            "Discord as the account that ran /link."
        )
    if error.from_link_button and isinstance(
        error, errors.DiscordDenied | errors.DiscordUnavailable | errors.NotSignedIn
    ):
        # Discord out of reach or refusing the code, or the session it started from ended:
        # the button's ticket was not spent.
        return (
            "Unless it was used in another tab or has expired meanwhile, your /link button "
            "still works: press it again in Discord (or go back to its page)."
        )
    if path.startswith("/password/reset/") and isinstance(error, errors.SecretRefused):
        return "Ask for a new link on the password reset page: /password/reset"
    if _emailed_link_used(path, error) or isinstance(error, errors.DiscordSignInUsed):
        return ""  # its words say what to do, its button does it
    if _linked_roles_refusal(error):
        if isinstance(error, errors.DiscordDenied | errors.DiscordUnavailable):
            return (
                "Start again with the button below, or from the server's Linked Roles in Discord."
            )
        return ""
    if path.startswith("/auth/discord") and isinstance(
        error,
        errors.SecretRefused
        | errors.DiscordDenied
        | errors.DiscordUnavailable
        | errors.DiscordSignInFailed
        | errors.DiscordSignInStopped,
    ):
        # A round trip from the account page (linking, "Confirm it is you"), or a sign-in.
        if holds_a_session(request):
            return "Start again from your account page."
        return "Start again from the sign-in page."
    return ""


def _linked_roles_refusal(error: errors.DomainError) -> bool:
    """A refusal at the end of Linked Roles' round trip whose way on is its verification URL
    again (not one that says where else to go, nor one for a URL that is not there)."""
    return error.in_linked_roles and not isinstance(
        error, errors.DiscordNotLinkedYet | errors.NotFound
    )


def _wants_json(request: Request[Any, Any, Any]) -> bool:
    return path_of(request).startswith("/api/")


# How soon a client of the JSON API may try again after a 503 (the database out of reach, or
# not upgraded yet): "Try again shortly", in seconds, for clients that wait as told.
RETRY_AFTER_UNAVAILABLE = "5"


def json_error(code: str, message: str, status: int) -> Response[dict[str, Any]]:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status == 503:
        headers = {"Retry-After": RETRY_AFTER_UNAVAILABLE}
    return Response(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def message_page(
    title: str,
    message: str,
    *,
    status: int = 200,
    next_step: str = "",
    links: list[tuple[str, str]] | None = None,
    account: Any = None,
    holds_session: bool = False,
    first_link_waits: bool = False,
    refresh: tuple[int, str] | None = None,
) -> Template:
    """``holds_session``: the account is not known (an error page), but the browser sent a
    session cookie: the header offers the account page instead of signing in.
    ``first_link_waits``: the first link takes no click for its first moments (see
    ``other_sites``). ``refresh``: after so many seconds, the browser goes on to that
    same-site path by itself (a ``<meta http-equiv="refresh">``, no script)."""
    return Template(
        template_name="message.html",
        context={
            "title": title,
            "message": message,
            "next_step": next_step,
            "links": links or [("Go to your account", "/account")],
            "account": account,
            "holds_session": holds_session,
            "first_link_waits": first_link_waits,
            "refresh": refresh,
        },
        status_code=status,
    )


def _log_refusal(request: Request[Any, Any, Any], exc: errors.DomainError) -> None:
    path = redact_path(path_of(request))
    if isinstance(exc, errors.StorageFault):  # a bug: the cause matters
        log.error("storage fault on %s %s", request.method, path, exc_info=exc)
    elif isinstance(exc, errors.StorageNotReady):
        log.error(
            "the database has not got this version's tables on %s %s (%s): run "
            "`taskflow-link db upgrade`",
            request.method,
            path,
            exc.missing,
        )
    elif isinstance(exc, errors.StorageContention):  # another request won a lock: no outage
        log.warning("transaction rolled back by the database on %s %s", request.method, path)
    elif isinstance(exc, errors.StorageError):
        cause = exc.__cause__
        log.warning("database unreachable on %s %s: %s", request.method, path, type(cause).__name__)
    else:
        log.info("refused %s %s: %s", request.method, path, exc.code)


def _sign_in_again(used: errors.DiscordSignInUsed, *, holds_session: bool) -> list[tuple[str, str]]:
    """The buttons of a Discord sign-in loaded again after its session ended: sign in again,
    bound where that sign-in was (a path of this site, checked when it started); a session
    the browser still holds (renewed since) has its account page."""
    again = ("Sign in with Discord", f"/auth/discord/login?next={quote(used.destination)}")
    if holds_session:
        return [again, ("Go to your account", "/account")]
    return [again, ("Other ways to sign in", "/signin")]


def _ways_on(
    path: str, exc: errors.DomainError, status: int, *, holds_session: bool
) -> list[tuple[str, str]]:
    """The buttons of a refusal's page: where its words say to go on."""
    links = [("Sign in", "/signin")] if status == 401 else [("Go home", "/")]
    if isinstance(exc, errors.DiscordNotLinkedYet):  # Linked Roles: sign in, then come back
        links = [("Sign in to TaskFlow", f"/signin?next={LINKED_ROLE_PAGE}")]
    elif _linked_roles_refusal(exc):
        if status == 401:  # the session it started from ended: sign in, then come back
            links = [("Sign in", f"/signin?next={LINKED_ROLE_PAGE}")]
        else:
            links = [("Start again", LINKED_ROLE_PAGE)]
            if holds_session:
                links.append(("Go to your account", "/account"))
    elif (
        status != 401
        and path.startswith(("/account", "/verify-email/"))
        # Not after "This is not my account": its person may have no account here.
        and not isinstance(exc, errors.EmailLinkDeclined)
    ):
        links = [("Go to your account", "/account")]
    elif status != 401 and path.startswith("/auth/discord"):
        if path.startswith(PROPOSAL_PAGE) and not isinstance(exc, errors.SecretRefused):
            # Email linking "confirm": the Discord sign-in still waits on its page (asked
            # for an emailed link too often, say), its password form too.
            links = [("Back", PROPOSAL_PAGE)]
        # Where the next step says to start again (see _next_step).
        elif holds_session or _emailed_link_used(path, exc):
            links = [("Go to your account", "/account")]
        else:
            links = [("Go to the sign-in page", "/signin")]
    elif path.startswith("/password/reset"):
        links = [("Ask for a new link", "/password/reset")]
    if isinstance(exc, errors.PasswordThrottled):  # its message offers a reset
        links = [*links, ("Reset your password", "/password/reset")]
    return links


def domain_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, errors.DomainError)  # noqa: S101 - registered for DomainError only
    status = status_for(exc)
    _log_refusal(request, exc)
    if _wants_json(request):
        return json_error(exc.code, exc.message, status)
    if isinstance(exc, errors.ReauthenticationRequired):
        return Redirect("/account/confirm", status_code=303)  # then back to the account page
    if isinstance(exc, errors.NotSignedIn) and path_of(request).startswith("/account/"):
        return Redirect("/signin?next=/account", status_code=303)  # a form on the account page
    # A 401 says the session is not (or no longer) valid, whatever cookie came with it.
    holds_session = status != 401 and holds_a_session(request)
    links = (
        _sign_in_again(exc, holds_session=holds_session)
        if isinstance(exc, errors.DiscordSignInUsed)
        else _ways_on(path_of(request), exc, status, holds_session=holds_session)
    )
    title = TITLES.get(status, "That did not work")
    if isinstance(exc, errors.SecretExpired):  # a 410 too, but not used up
        title = "This link has expired"
    if path_of(request) == CALLBACK and not isinstance(exc, errors.TicketRefused):
        # The state's refusals (see state_refusal): no link was followed.
        title = _CALLBACK_TITLES.get(type(exc), title)
    if isinstance(
        exc, errors.DiscordSignInFailed | errors.DiscordSignInUsed | errors.DiscordSignInStopped
    ):
        title = _CALLBACK_TITLES[type(exc)]  # at the callback, or the page after it
    if isinstance(exc, errors.InvalidCredentials) and path_of(request).startswith("/account/"):
        # A signed-in person's form asked for the current password: "Please sign in" and a
        # sign-in button would be wrong words for it (the sign-in page sends them back here).
        # (The account page's forms and a /link button's page show their page again, the
        # error on its field: this is for a form that does not.)
        title = "Wrong password"
        links = [("Try again", "/account")]
        # Its 401 is the password's, not the session's: the header offers the account.
        holds_session = holds_a_session(request)
    return message_page(
        title,
        exc.message,
        status=status,
        next_step=_next_step(request, exc),
        links=links,
        holds_session=holds_session,
    )


# Litestar's words (and its 500) when the client hung up before it had sent the whole body
# it announced: no fault of ours, and nobody left to answer.
CLIENT_LEFT = "client disconnected prematurely"
# nginx's "client closed request": what the access log and the request metrics say of it.
CLIENT_CLOSED_REQUEST = 499


def client_left(exc: Exception) -> bool:
    """Whether ``exc`` is Litestar's for a client that hung up while sending its body."""
    return isinstance(exc, InternalServerException) and exc.detail == CLIENT_LEFT


def http_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any] | Template:
    assert isinstance(exc, HTTPException)  # noqa: S101
    if client_left(exc):
        # Counted as a server error, anyone could raise the error rate that alerts watch (a
        # POST that announces a body and hangs up: /signin needs no key) and hide real ones.
        return Response(None, status_code=CLIENT_CLOSED_REQUEST)
    status = exc.status_code
    message = _http_message(status, exc.detail)
    # A rate limit's headers say when to come back (RateLimit-*, and Retry-After for clients
    # that only know that one).
    headers = dict(exc.headers or {})
    if status == 429 and "RateLimit-Reset" in headers:
        headers.setdefault("Retry-After", str(max(1, int(headers["RateLimit-Reset"]))))
        if path_of(request).startswith("/api/"):
            message = (
                "Too many requests with this API key (or, without a valid one, from this "
                f"address). Wait {headers['Retry-After']} s (Retry-After), then try again."
            )
    answer: Response[Any]
    if path_of(request) == "/interactions":  # Discord's endpoint: its refusals' own shape
        answer = Response({"detail": message}, status_code=status)
    elif _wants_json(request):
        message = _api_message(exc, message, request.method, headers)
        answer = json_error(f"http_{status}", message, status)
    else:
        holds_session = holds_a_session(request)
        title, next_step = TITLES.get(status, "That did not work"), _HTTP_NEXT_STEPS.get(status, "")
        if status == 405 and request.method not in ("GET", "HEAD"):
            # A form sent to a page's address (a page of an older version, whose form's
            # address moved): not a form's address opened, as a 405 to GET is.
            title, message, next_step = _FORM_TO_A_PAGE
        answer = message_page(
            title,
            message,
            status=status,
            next_step=next_step,
            # A form's address opened (405): the account page holds a signed-in person's forms.
            links=[("Go to your account", "/account")]
            if status == 405 and holds_session
            else [("Go home", "/")],
            holds_session=holds_session,
        )
    answer.headers.update(headers)
    return answer


def _api_message(exc: HTTPException, fallback: str, method: str, headers: dict[str, str]) -> str:
    """What a program (and its author) needs from a refusal: the API guard's own words
    (401, 403), which part of the request was not valid and why (400), where the routes are
    (404) and which methods a path takes (405). The pages' words speak of pages."""
    if exc.status_code in (401, 403) and exc.detail:
        return exc.detail
    if exc.status_code == 404:
        return "The JSON API has no route at this path: /schema/openapi.json lists its routes."
    allowed = next((v for k, v in headers.items() if k.lower() == "allow"), None)
    if exc.status_code == 405 and allowed:
        return (
            f"This path of the JSON API does not take {method}: use {with_head(allowed)} "
            "(Allow lists them)."
        )
    if isinstance(exc, ValidationException):
        problems = [
            _problem(item.get("key", "?"), getattr(source, "value", source), item.get("message"))
            for item in (exc.extra if isinstance(exc.extra, list) else [])
            if isinstance(item, dict) and (source := item.get("source", "request"))
        ]
        if problems:
            return "The request was not valid: " + "; ".join(problems[:5])
    # A body that is not JSON: Litestar raises a ClientException (not a ValidationException)
    # with msgspec's words ("JSON is malformed: trailing characters (byte 22)", "Input data
    # was truncated").
    if exc.status_code == 400 and isinstance(exc.__cause__, SerializationException):
        detail = exc.detail.removeprefix("JSON is malformed: ")
        return f"The request was not valid: JSON is malformed: {detail[:1].lower()}{detail[1:]}"
    return fallback


def _problem(key: object, source: object, message: object) -> str:
    """One part of a request and what is wrong with it. Litestar names a value it did not get
    by the ``KeyError`` it caught: a request without a body read "data (body): 'data'"."""
    if key == "data" and source == "body" and message == repr("data"):
        return "the body is empty: send a JSON object (/schema/openapi.json shows which)"
    if isinstance(message, str):
        message = PATTERN_WORDS.get(message, message)
    return f"{key} ({source}): {message}"


def _http_message(status: int, detail: str) -> str:
    if status == 403 and "csrf" in detail.lower():
        return "This form expired or came from another site. Go back, reload the page, try again."
    if status == 429:
        return "Too many attempts. Wait a minute, then try again."
    if status == 404:
        return "There is no page here."
    if status == 413:
        return "The request is too large."
    if status == 405:
        return "This address is where a form's button sends what you typed, not a page to open."
    if status == 415 and detail:
        return detail
    if 400 <= status < 500:
        # An address changed by hand, or a form of an older version of the page.
        return "This page could not read what your browser sent."
    return "Something went wrong on our side. Try again in a minute."


# What a page of Litestar's own refusals says to do (the domain's refusals say their own).
_HTTP_NEXT_STEPS = {
    400: "Go back, reload the page and try again.",
    405: "Go back to the page with the form and use its button.",
}
# A 405 to a form sent to an address that takes none (a page): its title, what happened
# and what to do.
_FORM_TO_A_PAGE = (
    "That form is out of date",
    "This address is a page, and takes no form: the form came from an older version of a "
    "page, kept by your browser.",
    "Go back, reload the page and try again.",
)


# A bug's page: not rendered from a template (the templates may be what failed), but in the
# site's language, style and layout, with a way back.
BUG_PAGE = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>Something went wrong · TaskFlow</title>\n"
    '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">\n'
    '<link rel="stylesheet" href="/static/style.css">\n</head>\n<body>\n'
    '<header><div class="bar"><a class="brand" href="/">TaskFlow</a></div></header>\n'
    '<main><div class="card">\n<h1>Something went wrong</h1>\n'
    "<p>Something went wrong on our side. Try again in a minute.</p>\n"
    '<div class="actions"><a class="button" href="/">Go home</a></div>\n'
    "</div></main>\n</body>\n</html>\n"
)


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unexpected error on %s %s", request.method, redact_path(path_of(request)))
    if _wants_json(request):
        return json_error("internal_error", "Something went wrong on our side.", 500)
    return Response(BUG_PAGE, media_type=MediaType.HTML, status_code=500)


def redact_path(path: str) -> str:
    """Paths can carry secrets (``/link/<ticket>``); logs get them redacted, however they are
    spelled (``/./link/…``, ``//link/…``: the path they reach is checked)."""
    if "/." in path or "//" in path or "%" in path:
        reached = destination_path("/" + path.lstrip("/"))  # not "//host/…": a path here
    else:
        reached = path
    for prefix in SECRET_PATHS:
        if reached.startswith(prefix):
            return f"{prefix}<token>"
    return path
