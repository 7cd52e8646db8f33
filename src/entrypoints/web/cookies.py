"""The service's cookies: the web session, the OAuth browser bindings, the email-linking
proposal and the trusted device. The CSRF cookie is Litestar's middleware's; this jar only
expires it when someone signs in or out (see ``CookieJar.expired_csrf``).

On https every cookie is ``__Host-`` prefixed: browsers accept such a cookie only when it is
``Secure``, has ``Path=/`` and no ``Domain``, so a sibling subdomain (or a plain-http page of
this host) cannot plant one. Only the prefixed names are read there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Request
from litestar.datastructures import Cookie
from litestar.response import Redirect

from domain.model import LINK_PROPOSAL_TTL, ONE_TIME_SECRET_TTL
from domain.use_cases import AuthStarted, BrowserCookies, SignedIn, SignOut
from domain.use_cases._shared import BINDINGS_KEPT
from entrypoints.web.head import asked_as_head

SESSION_COOKIE = "tfl_session"
BINDING_COOKIE = "tfl_oauth"
PROPOSAL_COOKIE = "tfl_link_proposal"
CSRF_COOKIE = "tfl_csrf"
DEVICE_COOKIE = "tfl_device"
# Set by "This is not my account" on the answer that sends the browser to the page saying the
# address was removed: only that browser, and only then, is told so (see ``declined``).
DECLINED_COOKIE = "tfl_declined"
DECLINED_MAX_AGE = 60
# A browser stays trusted with an account this long after its last password sign-in there
# (400 days is the most browsers keep a cookie).
DEVICE_MAX_AGE = 365 * 86400
# Binding values are URL-safe base64, so a dot separates the ones of flows under way.
_SEPARATOR = "."


def cookie_name(name: str, *, secure: bool) -> str:
    return f"__Host-{name}" if secure else name


def from_another_site(request: Request[Any, Any, Any]) -> bool:
    """Whether a browser sends the request for another site (its Fetch Metadata,
    ``Sec-Fetch-Site``: a link or a redirect of another site's page, a window it opened and
    points here), not for this site's own pages nor for an address typed or opened from an
    app (``none``). Browsers without Fetch Metadata send no such header: this site's."""
    return request.headers.get("sec-fetch-site") in ("cross-site", "same-site")


def loaded_as_no_page(request: Request[Any, Any, Any]) -> bool:
    """Whether a browser says (its Fetch Metadata) that it loads the request as no page of
    its own: an image, a script, a frame, a ``fetch``, whichever site's page asked for it.
    ``Sec-Fetch-Dest`` other than ``document``; without it (Chromium 76 to 79 sent the
    others first), ``Sec-Fetch-Mode`` other than ``navigate``. A browser without Fetch
    Metadata sends neither: taken as a page load.

    A page loaded ahead of time (``loaded_ahead``: a prefetch, a prerender, a preview) is
    none either: a page of this site's or a sibling subdomain's (speculation rules) has the
    browser fetch a document, with the same-site cookies, that nobody may ever look at; if
    someone does go there, the browser loads it again, as a page.
    """
    if loaded_ahead(request):
        return True
    dest = request.headers.get("sec-fetch-dest")
    if dest is not None:
        return dest != "document"
    mode = request.headers.get("sec-fetch-mode")
    return mode is not None and mode != "navigate"


# What browsers say of a page they load before anyone opens it: ``Sec-Purpose`` (Chromium's
# and Firefox's prefetch and prerender), and the older ``Purpose``, ``X-Purpose`` and
# ``X-Moz``.
_AHEAD = ("purpose", "x-purpose", "x-moz")


def loaded_ahead(request: Request[Any, Any, Any]) -> bool:
    """Whether a browser loads the page ahead of time, in case someone opens it: any
    ``Sec-Purpose``, or an older header naming a prefetch, a prerender or a preview (Firefox's
    ``X-Moz: prefetch``, Safari's ``X-Purpose: preview``, from before Fetch Metadata). One
    rule for the sign-in limit and Discord's callback, which only knew ``prefetch`` in
    ``Sec-Purpose`` and ``Purpose``."""
    headers = request.headers
    if "sec-purpose" in headers:
        return True
    return any(
        word in headers.get(name, "").lower()
        for name in _AHEAD
        for word in ("prefetch", "prerender", "preview")
    )


def starts_no_round_trip(request: Request[Any, Any, Any]) -> bool:
    """Whether a GET that would start a Discord round trip answers a page to continue from
    instead (see ``other_sites``): another site's navigation (``from_another_site``), or a
    HEAD, which runs as that GET (see ``head``) and may have no side effects (RFC 9110,
    9.2.1). An uptime monitor's or a link checker's HEAD started a sign-in as the GET does: a
    pending sign-in stored, a binding cookie, and the sign-in budget of its address spent.
    It gets the status and headers of the page another site's link gets."""
    return from_another_site(request) or asked_as_head(request)


class CookieJar:
    def __init__(self, *, secure: bool, session_max_age: int) -> None:
        self._secure = secure
        self._session_max_age = session_max_age
        self.session_name = cookie_name(SESSION_COOKIE, secure=secure)
        self.binding_name = cookie_name(BINDING_COOKIE, secure=secure)
        self.proposal_name = cookie_name(PROPOSAL_COOKIE, secure=secure)
        self.device_name = cookie_name(DEVICE_COOKIE, secure=secure)
        self.declined_name = cookie_name(DECLINED_COOKIE, secure=secure)
        self.csrf_name = cookie_name(CSRF_COOKIE, secure=secure)  # as the app's CSRFConfig

    def _cookie(self, key: str, value: str, max_age: int) -> Cookie:
        # Lax: sent on the top-level redirect back from Discord, not on cross-site POSTs.
        return Cookie(
            key=key,
            value=value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self._secure,
        )

    def session(self, token: str) -> Cookie:
        return self._cookie(self.session_name, token, self._session_max_age)

    def new_session(self, token: str) -> list[Cookie]:
        """Someone signed in (the session this browser had ends): their session, a new CSRF
        token from the next page on, and no email-linking offer (see ``signed_out``)."""
        return [self.session(token), self.expired_csrf(), self.expired_proposal()]

    def signed_out(self) -> list[Cookie]:
        """Signed out here: the session ends, and so do the CSRF token and the email-linking
        offer waiting in this browser (``proposal``), which lived on for up to 30 minutes: at
        a shared computer, the next person saw it (a Discord and a TaskFlow username) and
        could have a link emailed to the account."""
        return [
            self._cookie(self.session_name, "", 0),
            self.expired_csrf(),
            self.expired_proposal(),
        ]

    def expired_csrf(self) -> Cookie:
        """The CSRF cookie (the double-submit token of Litestar's middleware), expired: the
        next page the browser loads gets a new one. Whoever read the token at a shared
        computer (on a page, in the cookie) holds none for the next person's session. Its
        attributes are the middleware's (path, Secure, HttpOnly, Lax; ``__Host-`` on
        https), so the browser replaces that very cookie."""
        return self._cookie(self.csrf_name, "", 0)

    def binding(self, tokens: Sequence[str]) -> Cookie:
        """The browser binding of the OAuth flows under way in this browser, newest first:
        ``tokens`` from a flow started with ``flow_bindings``' values.

        One cookie for all: another site's page starts no flow in its visitor's browser that
        could push out those of this site's pages (the newest few are kept). Its navigations
        get a page to continue from (see ``other_sites``), and its forms fail CSRF."""
        value = _SEPARATOR.join(tokens)
        return self._cookie(self.binding_name, value, int(ONE_TIME_SECRET_TTL.total_seconds()))

    def proposal(self, token: str) -> Cookie:
        """Email linking "confirm": the Discord sign-in waiting for the account's proof."""
        return self._cookie(self.proposal_name, token, int(LINK_PROPOSAL_TTL.total_seconds()))

    def expired_proposal(self) -> Cookie:
        return self._cookie(self.proposal_name, "", 0)

    def signed_in(self, signed_in: SignedIn) -> list[Cookie]:
        """A password sign-in's (or sign-up's, or reset's) cookies: the session (see
        ``new_session``), and the device's."""
        cookies = self.new_session(signed_in.session_token)
        if signed_in.device_token is not None:
            cookies.append(self.device(signed_in.device_token))
        return cookies

    def device(self, token: str) -> Cookie:
        """This browser signed in to an account with its password: trusted with it (its
        wrong passwords there have a throttle of their own). Kept at sign-out."""
        return self._cookie(self.device_name, token, DEVICE_MAX_AGE)

    def declined(self) -> Cookie:
        """A flash for the page a decline ("This is not my account") lands on: it says "your
        address was removed" to the browser that declined, once (``took_declined``). Opened
        by anyone else (another site's link to it), that page states nothing: a query
        parameter would let that link say it to its visitor, and no other site can set this
        host's cookies."""
        return self._cookie(self.declined_name, "1", DECLINED_MAX_AGE)

    def took_declined(self, request: Request[Any, Any, Any]) -> Cookie | None:
        """The expired flash (for the answer that says it) when the browser sent it, else
        ``None``."""
        if request.cookies.get(self.declined_name) != "1":
            return None
        return self._cookie(self.declined_name, "", 0)

    def device_token(self, request: Request[Any, Any, Any]) -> str | None:
        return request.cookies.get(self.device_name)

    def proposal_token(self, request: Request[Any, Any, Any]) -> str | None:
        return request.cookies.get(self.proposal_name)

    def session_token(self, request: Request[Any, Any, Any]) -> str | None:
        return request.cookies.get(self.session_name)

    def flow_bindings(self, request: Request[Any, Any, Any]) -> list[str]:
        """Every binding value this browser holds: those of the round trips a new one joins,
        and those Discord's callback may be for."""
        return self._binding_values(request, self.binding_name)

    def browser(self, request: Request[Any, Any, Any]) -> BrowserCookies:
        """What the use cases that end or replace this browser's session read of its cookies
        (see ``sign_out_browser``): its session, its email-linking offer and its binding
        values, read once for the request."""
        return BrowserCookies(
            session_token=self.session_token(request),
            proposal_token=self.proposal_token(request),
            bindings=tuple(self.flow_bindings(request)),
        )

    @staticmethod
    def _binding_values(request: Request[Any, Any, Any], name: str) -> list[str]:
        """The newest values of one cookie (each holds that many at most, unless planted)."""
        values = [t for t in request.cookies.get(name, "").split(_SEPARATOR) if t]
        return values[:BINDINGS_KEPT]

    async def end_session(
        self,
        request: Request[Any, Any, Any],
        sign_out: SignOut,
        *,
        keeping: str | None = None,
        handed_over: bool = False,
    ) -> None:
        """The session this browser had ends (a sign-in rotates it), with those a form sent
        twice renewed it into (see ``SignOut``), unless it is ``keeping``, the very one the
        request answers: a form sent again with the cookie of its first answer (see
        ``session_token_after``) must not end what it is answered. The email-linking offer
        waiting in this browser ends too (see ``SignOut``), as its cookie does
        (``new_session``, ``signed_out``), and so does the session of a Discord sign-in of
        this browser's whose answer never reached it (its binding cookie's values).
        ``handed_over``: ``keeping`` is a Discord sign-in's session, handed over (see
        ``SignOut``): the browser's other Discord sign-ins under way go on."""
        browser = self.browser(request)
        if browser.session_token is not None and browser.session_token == keeping:
            browser = browser.without_session()
        await sign_out.execute(browser, keeping=keeping, handed_over=handed_over)


def to_discord(started: AuthStarted, jar: CookieJar) -> Redirect:
    """On to Discord's consent screen, the browser bound to the round trip just started."""
    return Redirect(started.authorize_url, cookies=[jar.binding(started.browser_tokens)])
