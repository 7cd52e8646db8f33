"""``GET /metrics`` for Prometheus, and the request metrics of Litestar's Prometheus middleware.

Requests are labelled by route template (``/link/{ticket:str}``), never by the path itself:
paths carry tickets, tokens and Discord ids, and one series per value would grow without end
(and put secrets in the metrics). A request that matches no route is not counted at all.

With ``TASKFLOW_LINK_METRICS_TOKEN`` set, ``/metrics`` wants ``Authorization: Bearer <token>``
and answers 401 otherwise; the token is compared in constant time and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from litestar import MediaType, Request, get
from litestar.handlers import HTTPRouteHandler
from litestar.plugins.prometheus import PrometheusConfig
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import SecretStr

from adapters.metrics import multiprocess_registry

PATH = "/metrics"


def request_metrics() -> PrometheusConfig:
    """``taskflow_link_http_requests_total`` and friends, by method, route and status."""
    return PrometheusConfig(app_name="taskflow-link", prefix="taskflow_link_http", group_path=True)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


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
        if not authorized(request):
            return Response(
                b"Send the metrics token: Authorization: Bearer <token>\n",
                status_code=401,
                media_type=MediaType.TEXT,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        registry = multiprocess_registry() or REGISTRY
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
