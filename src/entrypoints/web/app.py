"""The Litestar app factory. Nothing happens at import time; ``create_app`` wires a container."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from inspect import signature
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from litestar import Controller, Litestar, Request, Router, get
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import CacheControlHeader, State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.handlers import BaseRouteHandler
from litestar.middleware.base import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.response import Response
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import Middleware
from msgspec import Struct

from adapters.metrics import mark_process_dead
from adapters.shared_state import SharedState
from domain import errors
from domain.model import Account, EmailLinking
from domain.names import shown_display_name, shown_email, shown_name
from domain.use_cases import SignedInAs
from entrypoints.agreement import check_agreement
from entrypoints.container import Container, close_resources, is_use_case
from entrypoints.email_worker import EmailWorker
from entrypoints.health import Readiness
from entrypoints.instances import WEB, instance_watch
from entrypoints.logs import request_id
from entrypoints.purge_worker import PurgeWorker
from entrypoints.queue_worker import QueueWorker, role_workers, stop_together
from entrypoints.schema import schema_check_at_start
from entrypoints.settings import Settings
from entrypoints.web.api import LinksApi
from entrypoints.web.avatars import Avatars
from entrypoints.web.cookies import (
    CSRF_COOKIE,
    CookieJar,
    cookie_name,
    loaded_ahead,
    starts_no_round_trip,
)
from entrypoints.web.deps import CurrentSignIn
from entrypoints.web.email_pages import EmailPages, outbox_page
from entrypoints.web.errors import (
    SESSION_COOKIE_STATE,
    domain_error_handler,
    http_error_handler,
    path_of,
    unexpected_error_handler,
)
from entrypoints.web.forwarded import forwarded_client
from entrypoints.web.guards import (
    AsciiCsrfMiddleware,
    StaticFiles,
    few_form_fields,
    front_door,
    refuse_control_characters,
)
from entrypoints.web.head import HEAD_AS_GET, runs_as_get, without_body
from entrypoints.web.interactions import interactions
from entrypoints.web.link_by_email import EmailLinkingPages
from entrypoints.web.metrics import metrics_route, request_metrics
from entrypoints.web.pages import Pages
from entrypoints.web.rate_limit import Hit, client_budget, counted_rate_limit
from entrypoints.web.request_id import SCOPE_KEY, choose_request_id
from entrypoints.web.security import (
    api_security_headers,
    before_send_hook,
    origin,
    security_headers,
)
from entrypoints.web.templates import PagesTemplateEngine
from entrypoints.webhook_worker import WebhookWorker

if TYPE_CHECKING:
    from litestar.plugins.jinja import JinjaTemplateEngine

    from entrypoints.bot.runtime import HttpInteractions

HERE = Path(__file__).parent
FORM_BODY_LIMIT = 64 * 1024
# Everything that tries credentials or starts an OAuth flow shares one budget per client.
RATE_LIMITED = {
    ("POST", "/signin"),
    ("POST", "/signup"),
    ("GET", "/auth/discord/login"),
    ("POST", "/password/reset"),
    # Each of these checks a password (a proof of identity before a sensitive change).
    ("POST", "/account/confirm"),
    ("POST", "/account/password"),
    ("POST", "/account/email"),
    ("POST", "/account/discord/unlink"),
    ("POST", "/auth/discord/confirm-link"),
    # Each of these starts a Discord round trip (a pending login row).
    ("POST", "/account/discord/link"),
    ("POST", "/account/confirm/discord"),
    # Linked Roles' verification URL (and its password form). Like the sign-in start, it
    # answers another site's navigation with a page that starts nothing (see _starts_nothing).
    ("GET", "/discord/linked-role"),
    ("POST", "/discord/linked-role"),
}
RATE_LIMITED_PREFIXES = (
    ("POST", "/password/reset/"),  # each try hashes a password
    ("POST", "/link/"),  # a Discord round trip, and maybe a password check
)


def _rate_limited(method: str, path: str) -> bool:
    return (method, path) in RATE_LIMITED or any(
        method == m and path.startswith(p) for m, p in RATE_LIMITED_PREFIXES
    )


def _for_another_sites_page(request: Request[Any, Any, Any]) -> bool:
    """Whether a browser sends the request for a page of another site, other than by opening
    this one (its Fetch Metadata: an image, a frame, a script's request). Another site's
    page could otherwise spend its visitors' sign-in budget, and their whole network's, with
    twenty ``<img src=".../auth/discord/login">``, and keep them from signing in while it is
    open. (Browsers without Fetch Metadata send none of these headers.)"""
    site = request.headers.get("sec-fetch-site")
    if site is None or site in ("same-origin", "none"):
        return False
    return request.headers.get("sec-fetch-dest", "document") != "document"


def _starts_nothing(request: Request[Any, Any, Any]) -> bool:
    """Whether a limited route answers only a page that starts nothing, uncounted: each GET
    among them does when another site's page caused it (``from_another_site``: a link, a
    redirect, a window it opened), a page with a "Continue to Discord" link (see
    ``other_sites``), which costs no more than any other page. Such GETs had a second budget
    of their own (after one click, another site's page re-pointed the window it had opened at
    ``/auth/discord/login`` again and again, up to 17 counted in Chromium, and its visitor's
    whole network could not sign in for a minute): now that they start nothing, nothing is
    left for it to guard. A client that is no browser may send the header: it gets the page.
    Only GETs: a form is another site's only by headers such a client writes, and each of
    its tries checks a password or starts a round trip. A HEAD (run as a GET) starts
    nothing either (``starts_no_round_trip``)."""
    return request.method == "GET" and starts_no_round_trip(request)


log = logging.getLogger("taskflow_link.web")


_BUDGET = "api_key_budget"


def _hits(shared: SharedState, namespace: str) -> Hit:
    """A rate limit's counter, as a function (see ``counted_rate_limit``)."""
    counter = shared.counter(namespace)

    async def hit(key: str, seconds: int) -> tuple[int, int]:
        return await counter.hit(key, seconds)

    return hit


def _api_key_budgets(
    container: Container,
) -> tuple[
    Callable[[Request[Any, Any, Any]], Awaitable[bool]], Callable[[Request[Any, Any, Any]], str]
]:
    """The per-key API limit: a request spends its key's budget when it carries a key this
    service issued (its seal says so) or one the process knows, and its client's (by
    address) otherwise. A digest of whatever token is sent is not a budget: made-up tokens
    would each get a fresh one (see ``IdentifyApiKey``). Litestar lets only this check be
    async, so it leaves the budget's name on the request for the identifier.
    (Functions, not methods: Litestar deep-copies a router's middleware, and with a method its
    object.)"""
    identify_api_key = container.identify_api_key

    async def check(request: Request[Any, Any, Any]) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else None
        # A preflight carries no key to check (the key check lets it through): the client's.
        budget = None if request.method == "OPTIONS" else await identify_api_key().execute(bearer)
        request.state[_BUDGET] = f"key:{budget}" if budget is not None else client_budget(request)
        return True

    def identify(request: Request[Any, Any, Any]) -> str:
        budget: str = request.state[_BUDGET]
        return budget

    return check, identify


class Alive(Struct):
    status: Literal["ok"]


@get("/healthz", include_in_schema=True, tags=["operations"], sync_to_thread=False)
def healthz() -> Alive:
    """The process is alive."""
    return Alive("ok")


# The style sheet and the icon, the same for everyone and no one's secret: kept by browsers
# (and caches) for an hour rather than fetched again with every page, two more lines in the
# access log each time. A new version's style reaches every browser within the hour.
STATIC_KEPT = CacheControlHeader(public=True, max_age=3600)
_ICON = HERE / "static" / "favicon.svg"
# The icon's answer may be kept a day: the same for every page, and no one's in particular.
_ICON_HEADERS = {"Cache-Control": "public, max-age=86400"}


@functools.cache
def _icon() -> bytes:
    return _ICON.read_bytes()


@get("/favicon.ico", include_in_schema=False, sync_to_thread=False)
def favicon() -> Response[bytes]:
    """The site's icon where browsers look when a page names none (a JSON answer opened in a
    tab, the probes): a 404 there was an error in the console of each. The pages name
    ``/static/favicon.svg`` (an image of this origin, as their policy's img-src allows)."""
    return Response(_icon(), media_type="image/svg+xml", headers=_ICON_HEADERS)


class ReadyOut(Struct):
    """Each check answers "ok" or what is wrong ("unreachable", "no answer within 2 s", …):
    ``database`` always, ``schema`` on SQL storage (unknown while the database is not
    ready), ``redis`` when Redis is configured. "degraded": ready, with a problem that only
    Redis has (limits count in each instance's memory meanwhile)."""

    status: Literal["ready", "degraded", "not ready"]
    checks: dict[str, str]


@get(
    "/readyz",
    include_in_schema=True,
    tags=["operations"],
    response_description="Ready (every check answered ok), or degraded (only Redis did not)",
    responses={
        503: ResponseSpec(
            data_container=ReadyOut,
            description="Not ready: the checks say what is wrong",
            generate_examples=False,
        )
    },
)
async def readyz(request: Request[Any, Any, Any]) -> Response[ReadyOut]:
    """Ready to serve: the database answers with the newest schema (503 otherwise, within
    TASKFLOW_LINK_READINESS_TIMEOUT_SECONDS). A configured Redis that does not answer, or
    takes no writes, is "degraded" but ready (200): each instance then counts its limits in
    its own memory and serves on, and the one Redis failing every instance's probe would
    take the whole service out."""
    readiness: Readiness = request.app.state.readiness
    ready, checks = await readiness.report()
    if not ready:
        return Response(ReadyOut("not ready", checks), status_code=503)
    degraded = any(result != "ok" for result in checks.values())
    return Response(ReadyOut("degraded" if degraded else "ready", checks), status_code=200)


# The container's providers that handlers take by name: its use cases, and what the health
# check and the development outbox read.
_INJECTED = (
    *(name for name, p in Container.providers.items() if is_use_case(p)),
    "email_sender",
)


def _template_globals(settings: Settings) -> Callable[[JinjaTemplateEngine], None]:
    """What every page may say of the configuration: whether Sign in with Discord finds an
    account by its confirmed email (with ``TASKFLOW_LINK_EMAIL_LINKING=off`` it never does,
    and a page that promised it misled)."""

    def configure(engine: JinjaTemplateEngine) -> None:
        engine.engine.globals["links_by_email"] = settings.email_linking is not EmailLinking.OFF
        # Names someone else chose (``domain.names``), each put in its own <bdi> by the page.
        engine.engine.filters["shown_name"] = shown_name
        # An address stored before forms refused what draws nothing in one: likewise.
        engine.engine.filters["shown_email"] = shown_email
        engine.engine.globals["discord_name"] = shown_display_name

    return configure


class WebApp(Litestar):
    """The Litestar app, with a request id around everything it does for a request: routes,
    404s, refusals at the door, the access log (see ``request_id``). Set here, in the app's
    own call, rather than by one more wrapper: each layer of coroutines costs again at every
    point where a request waits (a lookup waits three times). A HEAD of a path that GET
    serves runs as that GET, without its body (see ``head``)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if scope["method"] == "HEAD" and runs_as_get(self, scope):
            # A copy: the server keeps its own scope, which still says HEAD.
            scope = {**scope, "method": "GET", HEAD_AS_GET: True}
            send = without_body(send)
        current = choose_request_id(scope["headers"])
        # For the response's header, which the before_send hook adds (see security).
        scope[SCOPE_KEY] = current
        token = request_id.set(current)
        try:
            await super().__call__(scope, receive, send)
        finally:
            request_id.reset(token)


def _use_cases_named(container: Container, handlers: Iterable[object]) -> dict[str, Provide]:
    """The use cases these handlers take by name. Litestar resolves, for every handler, every
    dependency in scope and checks each against all the others: the container's sixty use
    cases at the app's level made building an app cost a tenth of a second."""
    named = {
        name
        for handler in handlers
        if isinstance(handler, BaseRouteHandler)
        for name in signature(handler.fn).parameters
    }
    return {name: _provided(container, name) for name in _INJECTED if name in named}


def _own_dependencies(controller: type[Controller]) -> dict[str, Any]:
    """What the controller class itself declares (Controller's own attribute is a slot)."""
    for cls in controller.__mro__:
        declared = vars(cls).get("dependencies")
        if isinstance(declared, dict):
            return declared
    return {}


def _with_use_cases(container: Container, controller: type[Controller]) -> type[Controller]:
    """``controller`` (this app's own subclass) with the use cases its handlers name."""
    dependencies = {
        **_own_dependencies(controller),
        **_use_cases_named(container, vars(controller).values()),
    }
    return type(controller.__name__, (controller,), {"dependencies": dependencies})


def _provided(container: Container, name: str) -> Provide:
    provider = getattr(container, name)

    def make() -> Any:
        return provider()

    return Provide(make, sync_to_thread=False)


class _Workers:
    """The background workers of each running server (per event loop: tests may run two at
    once): the email worker, the webhook worker (idle without webhook URLs), the role worker
    when a role for linked members is set, with Linked Roles the role connection worker, and
    the purge unless ``TASKFLOW_LINK_PURGE_INTERVAL_SECONDS`` is 0."""

    def __init__(self, container: Container) -> None:
        self._container = container
        self._running: dict[asyncio.AbstractEventLoop, list[QueueWorker | PurgeWorker]] = {}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        container = self._container
        workers: list[QueueWorker | PurgeWorker] = [
            EmailWorker(container),
            WebhookWorker(container),
        ]
        # The role workers' modules load only where they run (see role_workers).
        workers += role_workers(container)
        if PurgeWorker.wanted(container):
            workers.append(PurgeWorker(container))
        for worker in workers:
            worker.start()
        self._running[loop] = workers

    async def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stops them side by side: each lets its call (or the purge its batch) under way
        finish (see ``QueueWorker``, ``PurgeWorker``)."""
        await stop_together(*(worker.stop() for worker in self._running.pop(loop, [])))


def _linked_role_pages(settings: Settings) -> list[type[Controller]]:
    """Linked Roles' pages, when Linked Roles is on: their module loads only then."""
    if not settings.discord_role_connections:
        return []
    from entrypoints.web.linked_roles import LinkedRolePages  # noqa: PLC0415

    return [LinkedRolePages]


def _http_interactions(container: Container) -> HttpInteractions | None:
    """HTTP interactions are on when Discord's public key is configured (and then need the
    bot token). hikari and lightbulb (about 40 MB) are loaded only by processes that answer
    interactions."""
    if not container.settings().discord_public_key:
        return None
    from entrypoints.bot.runtime import HttpInteractions  # noqa: PLC0415

    return HttpInteractions(container)


def _limits(
    container: Container, limit: int
) -> tuple[list[Middleware], list[Middleware], Router | type[Controller]]:
    """The middleware that guards the app (Host header, request metrics),
    that which guards the browser's routes only (the per-client limit on sign-in and friends,
    CSRF), and the JSON API (behind its per-key limit when there is one). The limits count in
    the shared state's counters (Redis, when there is one)."""
    settings = container.settings()

    async def auth_route(request: Request[Any, Any, Any]) -> bool:
        if not _rate_limited(request.method, path_of(request)):
            return False
        if _for_another_sites_page(request):
            # Refused, not merely left uncounted: a client that is no browser can send
            # these headers too.
            raise HTTPException(
                status_code=403,
                detail="This page opens as a page of its own, not inside another site's.",
            )
        # Loaded ahead of time (a prefetch, a prerender): a page of any site can ask it to
        # (speculation rules), without a click, for dozens of URLs at once, and Chromium sends
        # a cross-site one as a document nobody's page asked for (Sec-Fetch-Site: none),
        # which the check above lets through: it spent its visitor's sign-in budget, and
        # their whole network's. A refused prefetch is not used: the page loads when opened.
        if loaded_ahead(request):
            raise HTTPException(
                status_code=403,
                detail="This page is not loaded ahead of time: it loads when it is opened.",
            )
        return not _starts_nothing(request)

    auth_rate_limit = RateLimitConfig(
        rate_limit=("minute", limit),
        check_throttle_handler=auth_route,
        # An IPv6 client's /64 network (see there).
        identifier_for_request=client_budget,
        # Never on the hot paths (a cheap pattern match, before any request object is built).
        exclude=[
            r"^/api/",
            r"^/interactions$",
            r"^/static/",
            r"^/healthz$",
            r"^/readyz$",
            r"^/metrics$",
        ],
        store="auth_rate_limit",  # the counter's name, below (no store is read)
    )
    shared = container.shared_state()
    # The request metrics count what the rate limit and CSRF refuse too; not a bad Host
    # header, which they could not even read (Litestar's middleware parses the request's URL).
    middleware: list[Middleware] = [front_door(request_metrics() if settings.metrics else None)]
    https = urlsplit(str(settings.public_url)).scheme == "https"
    csrf = CSRFConfig(
        secret=settings.secret_key.get_secret_value(),
        cookie_name=cookie_name(CSRF_COOKIE, secure=https),
        cookie_secure=https,
        cookie_httponly=True,
        cookie_samesite="lax",
        # Anchored: a substring would exempt any future path that merely contains "/api/".
        # The static files take no form, and their answers are kept (see STATIC_KEPT): no
        # CSRF cookie of anyone's in them.
        exclude=["^/api/", "^/interactions$", "^/metrics$", "^/static/"],
    )
    # On every route but the JSON API's (which takes no cookie and no form): at the app's
    # level Litestar runs both on every route, the API's too, where they only checked their
    # exclusion patterns.
    browser: list[Middleware] = [
        few_form_fields,  # before anything parses a form (CSRF does, for its token)
        # CSRF before the limit: a form another site's page posts (no token) spent its
        # visitor's budget, and their whole network's, before CSRF refused it.
        DefineMiddleware(AsciiCsrfMiddleware, config=csrf),
        counted_rate_limit(auth_rate_limit, _hits(shared, "auth-rate-limit")),
    ]
    api: Router | type[Controller] = _with_use_cases(container, LinksApi)
    if settings.api_rate_limit_per_second:
        check, identify = _api_key_budgets(container)
        api_limit = RateLimitConfig(
            rate_limit=("second", settings.api_rate_limit_per_second),
            check_throttle_handler=check,
            identifier_for_request=identify,
            store="api_rate_limit",
        )
        # On the JSON API's routes only.
        limited = counted_rate_limit(api_limit, _hits(shared, "api-rate-limit"))
        api = Router(path="/", route_handlers=[api], middleware=[limited])
    return middleware, browser, api


def create_app(
    container: Container, *, rate_limit_per_minute: int | None = None, worker: bool = False
) -> Litestar:
    """``worker``: one of ``serve --workers N``'s processes, whose start-up notes (the
    settings' warnings, the schema's revision) ``serve`` says once for them all."""
    settings = container.settings()
    public = urlsplit(str(settings.public_url))
    https = public.scheme == "https"
    avatars = Avatars(str(settings.discord_cdn_url))
    jar = CookieJar(secure=https, session_max_age=settings.session_ttl_days * 86400)
    limit = rate_limit_per_minute or settings.auth_rate_limit_per_minute

    middleware, browser, api = _limits(container, limit)
    page_functions = [outbox_page] if settings.email_outbox_page else []
    # Discord's endpoint, the probes and the icon: no cookie, no form, so none of the
    # browser's guards (CSRF, the sign-in limit, the form checks), which would only cost them
    # time.
    service_functions = [interactions, healthz, readyz, favicon]

    async def current_session(request: Request[Any, Any, Any]) -> SignedInAs | None:
        signed_in: SignedInAs | None = await container.current_session().execute(
            jar.session_token(request)
        )
        return signed_in

    def current_account(signed_in: CurrentSignIn) -> Account | None:
        return signed_in.account if signed_in is not None else None

    http_interactions = _http_interactions(container)
    workers = _Workers(container)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        # Per running server: its checks' tasks belong to its event loop.
        app.state.readiness = Readiness(
            container.readiness_checks(),
            timeout=settings.readiness_timeout_seconds,
            needs={"schema": "database"},  # a database that is down has no schema to read
            degrading={"redis"},  # each instance counts in its own memory meanwhile
        )
        watch = instance_watch(container, WEB)  # tells of instances that share no Redis
        # A schema not this version's (said by `serve` for its workers).
        schema = None if worker else schema_check_at_start(container, log)
        try:
            await check_agreement(
                container, log, web=True, answers_interactions=http_interactions is not None
            )
            if watch is not None:
                watch.start()
            if schema is not None:
                schema.start()
            if http_interactions is not None:
                await http_interactions.start()
                app.state.interactions = http_interactions
            workers.start(loop)
            yield
        finally:
            await app.state.readiness.close()
            if schema is not None:
                await schema.stop()
            if watch is not None:
                await watch.stop()
            # The workers' calls under way finish beside the commands under way.
            await stop_together(
                workers.stop(loop),
                *([http_interactions.close()] if http_interactions is not None else []),
            )
            await close_resources(container)
            if settings.metrics:
                mark_process_dead()

    for warning in [] if worker else settings.warnings():
        log.warning("%s", warning)

    controllers: list[type[Controller]] = [Pages, EmailPages, EmailLinkingPages]
    controllers += _linked_role_pages(settings)
    app = WebApp(
        route_handlers=[
            Router(
                path="/",
                route_handlers=[
                    *([metrics_route(settings.metrics_token)] if settings.metrics else []),
                    *(_with_use_cases(container, controller) for controller in controllers),
                    Router(
                        path="/",
                        route_handlers=page_functions,
                        dependencies=_use_cases_named(container, page_functions),
                    ),
                    create_static_files_router(
                        path="/static",
                        directories=[HERE / "static"],
                        file_system=StaticFiles(),
                        cache_control=STATIC_KEPT,
                    ),
                ],
                middleware=browser,
                before_request=refuse_control_characters,
            ),
            Router(
                path="/",
                route_handlers=service_functions,
                dependencies=_use_cases_named(container, service_functions),
            ),
            api,
        ],
        # Handlers name what they use: each use case by its provider's name in the container
        # (a new instance per request, as the container's factories make; given to each
        # controller's router, see _with_use_cases), the cookie jar, and who is signed in.
        dependencies={
            "jar": Provide(lambda: jar, sync_to_thread=False),
            "avatars": Provide(lambda: avatars, sync_to_thread=False),
            "signed_in": Provide(current_session),
            "account": Provide(current_account, sync_to_thread=False),
        },
        # The API's key check (a before_request hook) takes no dependencies: it finds its use
        # case here; the development outbox finds the public URL (it answers only to its name).
        state=State(
            {
                "authenticate_api_key": container.authenticate_api_key(),
                "public_url": str(settings.public_url).rstrip("/"),
                SESSION_COOKIE_STATE: jar.session_name,  # what error pages look for
            }
        ),
        # Jinja loads with the first page (see PagesTemplateEngine), not at start-up.
        template_config=TemplateConfig(
            instance=PagesTemplateEngine(HERE / "templates", _template_globals(settings))
        ),
        middleware=middleware,
        # Forms are small; a bigger body is refused (413) before it is read. Interactions
        # allow more (their own limit), the JSON API reads no body.
        request_max_body_size=FORM_BODY_LIMIT,
        before_send=[
            before_send_hook(
                security_headers(
                    origin(str(settings.discord_authorize_url)), avatars.origin, https=https
                ),
                api_security_headers(https=https),
            ),
        ],
        exception_handlers={
            errors.DomainError: domain_error_handler,
            HTTPException: http_error_handler,
            Exception: unexpected_error_handler,
        },
        openapi_config=OpenAPIConfig(
            title="taskflow-link",
            version="1",
            path="/schema",
            description="Which TaskFlow account is a Discord id linked to?",
            # The documents only (JSON, also at /schema itself, and YAML). Litestar's viewers
            # (ReDoc, Swagger UI, Elements, RapiDoc) are scripts from other sites' CDNs, which
            # the pages' Content-Security-Policy (no scripts) blocks: each was a blank page,
            # and allowing them would run another site's script with this origin's cookies.
            render_plugins=[JsonRenderPlugin(path=["/openapi.json", "/"]), YamlRenderPlugin()],
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="An API key from `taskflow-link api-key create NAME "
                        "[--scope links:read] [--scope links:write]`. Each operation names "
                        "the scope it needs: links:read to look links up, links:write to "
                        "unlink.",
                    )
                }
            ),
        ),
        lifespan=[lifespan],
        # Logging belongs to the process (the CLI configures it), not to the app factory.
        logging_config=None,
        debug=False,
    )
    if settings.trusted_proxies:
        # The client's address (for limits, the audit and the access log) comes from
        # X-Forwarded-For only when a trusted proxy sent the request. Around everything the
        # app does, not among its middleware, which Litestar runs only for a request it
        # routed: a 404 or a 405 (a scanner's) was logged with the proxy's address.
        app.asgi_handler = forwarded_client(settings.trusted_proxies)(app.asgi_handler)
    return app
