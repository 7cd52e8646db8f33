"""Whether a host is this machine: plain http is allowed to it, and no proxy ever stands
between it and us (a proxy's ``localhost`` is the proxy's machine, not ours)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): this machine only.

    ``localhost.`` (the fully qualified spelling) is not: glibc finds ``localhost`` in
    ``/etc/hosts`` but asks the network's DNS server for ``localhost.``, whose answer may be
    any address; a URL taken for this machine would send its plain-http request (a signed
    webhook, Discord's client secret, the SMTP password), past any proxy, wherever that
    answer points."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
