"""Whether a host is this machine: plain http is allowed to it, and no proxy ever stands
between it and us (a proxy's ``localhost`` is the proxy's machine, not ours)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): this machine only."""
    if not host:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
