"""gunicorn's worker for the app, the README's ``-k entrypoints.gunicorn_worker.UvicornWorker``:
uvicorn-worker's ``UvicornWorker`` serving with the protocol ``taskflow-link serve`` does
(``entrypoints.http11``: httptools, a request's head bounded, trailer fields dropped), where
uvicorn-worker's own takes uvicorn's httptools code, which does neither.

Imported only by gunicorn: ``gunicorn`` and ``uvicorn-worker`` come with the ``gunicorn``
extra, not with taskflow-link itself. gunicorn's ``-k`` takes a dotted path, not
``module:Class``."""

from __future__ import annotations

from typing import Any

import uvicorn_worker

from entrypoints.http11 import BoundedHttpToolsProtocol


class UvicornWorker(uvicorn_worker.UvicornWorker):  # type: ignore[misc]  # untyped package
    CONFIG_KWARGS: dict[str, Any] = {
        **uvicorn_worker.UvicornWorker.CONFIG_KWARGS,
        "http": BoundedHttpToolsProtocol,
        "ws": "none",  # as ``serve``: the app has no WebSocket route
    }
