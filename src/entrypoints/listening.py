"""Where a server of ours listens: whether it can (before starting one, so that a port in use
is said in a sentence, not in uvicorn's start-up and shutdown logs), and its address as a URL
writes it. Standard library only: `serve` and the demo both use it."""

from __future__ import annotations

import errno
import socket


def listen_problem(host: str, port: int) -> str | None:
    """Why a server cannot listen on ``host`` and ``port`` (``None``: it can), as uvicorn
    binds it: an IPv6 address (``::1``) with an IPv6 socket. ``"in use"`` when another
    process has the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "in use"
            return exc.strerror or str(exc)
    return None


def url_host(host: str) -> str:
    """The host as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host
