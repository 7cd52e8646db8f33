"""``GET /metrics`` for Prometheus, and the request metrics of Litestar's Prometheus middleware.

Requests are labelled by route template (``/link/{ticket:str}``), never by the path itself:
paths carry tickets, tokens and Discord ids, and one series per value would grow without end
(and put secrets in the metrics). A request that matches no route is not counted at all.

With ``TASKFLOW_LINK_METRICS_TOKEN`` set, ``/metrics`` wants ``Authorization: Bearer <token>``
and answers 401 otherwise; the token is compared in constant time and never logged. Without
one, it answers only a scrape made straight from this machine or a private network (403
otherwise): its counters move with what happens, and a stranger who asked for a password
reset for an address, then read the emails sent (or the email worker's passes, woken by the
queued email), learnt whether an account has it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from typing import Any

from litestar import MediaType, Request, get
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.plugins.prometheus import PrometheusConfig, PrometheusMiddleware
from litestar.response import Response
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import SecretStr

from adapters.metrics import multiprocess_registry
from domain import errors
from entrypoints.web.errors import CLIENT_CLOSED_REQUEST, client_left, status_for

PATH = "/metrics"


def request_metrics() -> PrometheusConfig:
    """``taskflow_link_http_requests_total`` and friends, by method, route and status."""
    return PrometheusConfig(
        app_name="taskflow-link",
        prefix="taskflow_link_http",
        group_path=True,
        middleware_class=RequestMetrics,
    )


class RequestMetrics(PrometheusMiddleware):
    """Litestar's request metrics, the same names, labels and values, with each label set's
    series looked up once. Per request the stock middleware builds a ``Request``, merges label
    dictionaries, wraps ``send`` with ``functools.wraps`` and calls ``labels()`` five times:
    about 40 µs, a tenth of a lookup's CPU. Options this does not handle (excluded methods,
    exemplars, extra labels) fall back to Litestar's own code."""

    def __init__(self, app: ASGIApp, config: PrometheusConfig) -> None:
        super().__init__(app, config)
        # Whether Litestar's own code counts (options this class does not handle).
        self.stock = (
            bool(config.excluded_http_methods or config.exemplars or config.labels)
            or not config.group_path
        )
        self._in_progress: dict[tuple[str, str], Any] = {}
        self._done: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def _labels(self, method: str, path: str, status: int) -> dict[str, str | int | float]:
        return {
            "method": method,
            "path": path,
            "status_code": status,
            "app_name": self._config.app_name,
        }

    def _in_progress_series(self, method: str, path: str) -> Any:
        key = (method, path)
        series = self._in_progress.get(key)
        if series is None:
            labels = self._labels(method, path, 200)
            series = self.requests_in_progress(labels).labels(*labels.values())
            self._in_progress[key] = series
        return series

    def _done_series(self, method: str, path: str, status: int) -> tuple[Any, Any, Any]:
        key = (method, path, status)
        series = self._done.get(key)
        if series is None:
            labels = self._labels(method, path, status)
            values = [*labels.values()]
            error = (
                self.requests_error_count(labels).labels(*values)
                if status >= HTTP_500_INTERNAL_SERVER_ERROR
                else None
            )
            series = (
                self.request_count(labels).labels(*values),
                self.request_time(labels).labels(*values),
                error,
            )
            self._done[key] = series
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.stock:
            await super().__call__(scope, receive, send)
            return
        await self.counting(scope, receive, send)

    async def counting(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request, counted (unless ``stock``). Called directly (see ``front_door``), it
        skips the check of exclusions that Litestar's base class wraps ``__call__`` in: these
        metrics have none (``request_metrics``)."""
        method = scope["method"] if scope["type"] == ScopeType.HTTP else scope["type"]
        path = scope["path_template"]
        started = time.perf_counter()
        status = 200
        answered = False
        duration = 0.0

        async def timed_send(message: Message) -> None:
            nonlocal status, answered, duration
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
            elif message["type"] == "http.response.body":
                duration = time.perf_counter() - started
            await send(message)

        in_progress = self._in_progress_series(method, path)
        in_progress.inc()
        try:
            await self.app(scope, receive, timed_send)
        except Exception as exc:
            # A refusal raised by middleware inside this one (the rate limits' 429, CSRF's
            # 403) is answered further out, by the app's exception handler: counted as what
            # it will answer, not as the 200 nothing sent yet.
            if not answered:
                status = _status_of(exc)
            duration = duration or time.perf_counter() - started
            raise
        finally:
            in_progress.dec()
            count, timing, error = self._done_series(method, path, status)
            if error is not None:
                error.inc()
            count.inc()
            timing.observe(duration)


def _status_of(exc: Exception) -> int:
    """What the app's exception handlers answer for ``exc`` (see ``errors``)."""
    if client_left(exc):
        return CLIENT_CLOSED_REQUEST
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, errors.DomainError):
        return status_for(exc)
    return HTTP_500_INTERNAL_SERVER_ERROR


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


_WITHOUT_CHARSET = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")
# What a proxy adds: a request with any of them came through one, from anywhere. Not only
# the client's address: a proxy that names it nowhere (HAProxy without `option forwardedfor`)
# may still say the scheme or itself, and CDNs name the client in headers of their own.
_FORWARDING_HEADERS = frozenset(
    (
        b"forwarded",
        b"x-forwarded-for",
        b"x-real-ip",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-server",
        b"via",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
        b"x-client-ip",
        b"x-cluster-client-ip",
    )
)
_NO_TOKEN = (
    b"Without TASKFLOW_LINK_METRICS_TOKEN, /metrics answers only a scrape made straight from "
    b"this machine or a private network, never one a proxy forwarded: set a token to scrape "
    b"it from elsewhere.\n"
)


# Loopback, private, shared (RFC 6598) and link-local networks, named rather than taken as
# "not ipaddress's is_global": that also holds for Teredo (2001:0::/32, a client anywhere on
# the internet tunnelled over IPv4) and, in newer Pythons, a local-use NAT64 prefix
# (64:ff9b:1::/48) that may carry any IPv4 address, a public one too.
_NEARBY: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(network)
    for network in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)


def _scraped_nearby(scope: Scope) -> bool:
    """Whether a request came straight from a loopback or private address (or one that is no
    IP address: a Unix socket, a test client), through no proxy. The client is the one the
    trusted proxies name, when there are some (``forwarded``)."""
    if any(name in _FORWARDING_HEADERS for name, _ in scope["headers"]):
        return False
    client = scope.get("client")
    if not client:
        return True
    try:
        address = ipaddress.ip_address(client[0].partition("%")[0])
    except ValueError:
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _NEARBY)


def metrics_route(token: SecretStr | None) -> HTTPRouteHandler:
    expected = _digest(token.get_secret_value()) if token is not None else None

    def authorized(request: Request[Any, Any, Any]) -> bool:
        if expected is None:
            return True
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        # Digests of equal length: the comparison says nothing about the token's length either.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            _digest(presented.strip()), expected
        )

    @get(PATH, include_in_schema=False, sync_to_thread=True)
    def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        """The Prometheus text format: every worker's values in multiprocess mode."""
        if expected is None and not _scraped_nearby(request.scope):
            return Response(_NO_TOKEN, status_code=403, media_type=MediaType.TEXT)
        if not authorized(request):
            return Response(
                b"Send the metrics token: Authorization: Bearer <token>\n",
                status_code=401,
                media_type=MediaType.TEXT,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        registry = multiprocess_registry() or REGISTRY
        # Litestar adds "; charset=utf-8" to a text/ media type: given without it, the
        # answer says it once (prometheus_client's type said it already, and it came twice).
        return Response(generate_latest(registry), media_type=_WITHOUT_CHARSET)

    return metrics
