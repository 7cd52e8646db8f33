"""Where a server of ours listens: whether it can (before starting one, so that a port in use
is said in a sentence, not in uvicorn's start-up and shutdown logs), and its address as a URL
writes it, and the HTTP parser it runs. Standard library only: `serve` and the demo both use
it."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import socket
from typing import Any

# uvicorn's HTTP/1.1 parser for every server we start (`serve`, the demo, the emulator, the
# tests' and the benchmarks' servers): httptools (llhttp, in C), a dependency of ours, named
# rather than left to uvicorn's "auto", which falls back to h11 without a word when httptools
# is missing (about a fifth more CPU per request, and other answers to malformed requests).
HTTP_PARSER = "httptools"


def http_parser_problem() -> str | None:
    """Why uvicorn cannot run ``HTTP_PARSER`` here (``None``: it can): uvicorn itself would
    say it only once the server starts, as a traceback."""
    if importlib.util.find_spec(HTTP_PARSER) is None:
        return (
            f"{HTTP_PARSER} is not installed (uvicorn's HTTP parser, a dependency of "
            "taskflow-link): reinstall taskflow-link with its dependencies"
        )
    return None


def listen_problem(host: str, port: int, *, workers: int = 1) -> str | None:
    """Why a server cannot listen on ``host`` and ``port`` (``None``: it can), bound as
    uvicorn will bind it. ``"in use"`` when another process has the port.

    One process (``workers`` 1, and the demo) serves with asyncio's ``create_server``: every
    address the host resolves to, an IPv6 one for IPv6 only (``::`` leaves IPv4 to others).
    Several share the socket uvicorn binds itself: an IPv6 one for an address with ":",
    taking IPv4 too on ``::`` (as the system's default has it), else an IPv4 one."""
    try:
        if workers > 1:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            _bind_all([(family, (host, port))], ipv6_only=False)
        else:
            found = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            addresses = dict.fromkeys((info[0], info[4]) for info in found)
            _bind_all(list(addresses), ipv6_only=True)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "in use"
        return exc.strerror or str(exc)
    return None


def _bind_all(addresses: list[tuple[int, Any]], *, ipv6_only: bool) -> None:
    """Bind a socket to each address, as the server would (all at once), then let them go.
    An address of a family this machine lacks, or that it cannot assign (``localhost`` as
    ::1 with IPv6 off), is passed over while another one binds: the server then either
    passes it over too (asyncio since Python 3.12) or says so as it starts."""
    passed_over: OSError | None = None
    bound = 0
    with contextlib.ExitStack() as held:
        for family, address in addresses:
            try:
                probe = held.enter_context(socket.socket(family, socket.SOCK_STREAM))
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if ipv6_only and family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise
                passed_over = exc
                continue
            bound += 1
    if passed_over is not None and not bound:
        raise passed_over


def url_host(host: str) -> str:
    """The host as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host
