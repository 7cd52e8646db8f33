"""The web app for any ASGI server, configured from ``TASKFLOW_LINK_*`` settings:

    uvicorn --factory entrypoints.asgi:make_app --host 0.0.0.0 --port 8000 --no-proxy-headers \
        --ws none --http entrypoints.http11:BoundedHttpToolsProtocol
    gunicorn -k entrypoints.gunicorn_worker.UvicornWorker --forwarded-allow-ips= \
        'entrypoints.asgi:make_app()'
    granian --interface asgi --factory entrypoints.asgi:make_app

(uvicorn's and gunicorn's options leave whose X-Forwarded-For to believe to
``TASKFLOW_LINK_FORWARDED_ALLOW_IPS``: by default they believe this machine's. Their protocol
is ``serve``'s, ``entrypoints.http11``: a request's head bounded, trailer fields dropped.)

``taskflow-link serve`` runs the same factory under uvicorn (``--workers N`` for several
processes). Each process builds its own container: the database pool, the Discord client and
the Redis connections belong to it."""

from __future__ import annotations

import logging

from litestar import Litestar

from entrypoints.container import build_container
from entrypoints.heap import settle_start_up_objects
from entrypoints.logs import configure_logging
from entrypoints.settings import load_settings
from entrypoints.web import create_app


def make_app(*, worker: bool = False) -> Litestar:
    """``worker``: see ``make_worker_app``."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    # The app writes its own access log (secrets in paths redacted, no query strings); the
    # server's would print /password/reset/<token> and the callback's ?code=&state=. uvicorn's
    # is on unless --no-access-log, and gunicorn's uvicorn worker writes through it too.
    logging.getLogger("uvicorn.access").disabled = True
    container = build_container(settings)
    container.discord_oauth()  # fail now, naming the setting, rather than at first sign-in
    if settings.token_keys:
        container.secret_box()  # loads cryptography (only then): a broken install shows now
    app = create_app(container, worker=worker)
    settle_start_up_objects()
    return app


def make_worker_app() -> Litestar:
    """The app of one of ``taskflow-link serve --workers N``'s processes: ``serve`` logs the
    settings' warnings and what it finds of the schema once, for every worker, instead of
    each worker saying them again."""
    return make_app(worker=True)
