"""The unit suite keeps each function's parsed signature from one Litestar app to the next
(tests.litestar_signatures): every app must still see what Litestar would have parsed for
it, whichever app came first and whatever its settings."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from litestar import Litestar
from litestar.handlers import BaseRouteHandler
from litestar.routes import HTTPRoute
from litestar.utils.helpers import unwrap_partial

from entrypoints.web import create_app
from tests.fakes.role_connections import role_harness
from tests.harness import Harness
from tests.litestar_signatures import fresh_parse


def _handlers(app: Litestar) -> list[BaseRouteHandler]:
    handlers: list[BaseRouteHandler] = []
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            handlers += route.route_handlers
        else:
            handlers.append(route.route_handler)
    return handlers


def _parses_as_litestar_would(app: Litestar) -> int:
    """How many signatures it compared: each handler's, and each of its dependencies'."""
    compared = 0
    for handler in _handlers(app):
        namespace: dict[str, Any] = handler.resolve_signature_namespace()
        assert handler.parsed_fn_signature == fresh_parse(unwrap_partial(handler.fn), namespace)
        compared += 1
        for provide in handler.resolve_dependencies().values():
            dependency = unwrap_partial(provide.dependency)
            assert provide.parsed_fn_signature == fresh_parse(dependency, namespace)
            compared += 1
    return compared


def test_two_apps_of_different_settings_each_parse_as_litestar_would() -> None:
    plain = Harness.build()
    rich = role_harness(
        metrics=True,
        metrics_token="metrics-token-that-is-long-enough-1234",
        api_rate_limit_per_second=5,
        email_outbox_page=True,
    )
    try:
        first = create_app(plain.container)
        second = create_app(rich.container)
        again = create_app(plain.container)
        # The second app has routes the first has not (Linked Roles, /metrics, the outbox).
        assert len(_handlers(second)) > len(_handlers(first))
        for app in (first, second, again):
            assert _parses_as_litestar_would(app) > len(_handlers(app))
    finally:
        plain.container.unwire()
        rich.container.unwire()


def test_the_next_app_gets_the_kept_parse_which_no_one_can_change() -> None:
    """Shared between apps, a parse is frozen: Litestar assigns a handler's, and changes
    none in place."""
    h = Harness.build()
    try:
        first, second = _handlers(create_app(h.container)), _handlers(create_app(h.container))
        healthz = [handler for handler in first if handler.handler_name == "healthz"]
        again = [handler for handler in second if handler.handler_name == "healthz"]
        assert len(healthz) == len(again) == 1
        assert healthz[0] is not again[0]
        parsed = healthz[0].parsed_fn_signature
        assert parsed is again[0].parsed_fn_signature
        with pytest.raises(dataclasses.FrozenInstanceError):
            parsed.return_type = parsed.return_type  # type: ignore[misc]
    finally:
        h.container.unwire()
