"""The outgoing proxy the environment names for a URL, read once, at start-up.

``https_proxy`` / ``http_proxy`` (by the URL's scheme), else ``all_proxy``, unless the host is
this machine (``localhost``, 127.0.0.0/8, ``::1``: a proxy would reach its own machine, and
read a plain-http request on its way; as Go's ``ProxyFromEnvironment``) or ``no_proxy`` lists
it; each variable lower-case first, then upper-case, and an empty one counts as
unset (as curl reads them: ``https_proxy=`` left blank by a compose file does not hide
``HTTPS_PROXY``). Resolved here rather than by aiohttp's ``trust_env``, which ignores
``ALL_PROXY``, quietly connects directly when the proxy is an ``https://`` URL (a filtering
proxy, skipped without a word), and reads ``~/.netrc`` in a thread before every call (its
credentials would be sent to the endpoint).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from adapters.loopback import is_loopback


def proxy_for(url: str) -> str | None:
    """The ``http://`` proxy to send requests for ``url`` through, or ``None`` for none
    (always for a loopback host).

    ``ValueError`` (naming the variable, never its value: a proxy URL may hold a password)
    for a proxy these calls cannot use (``https://``, ``socks5://``, not a URL): better no
    start than calls that go around it.
    """
    parts = urlsplit(url)
    if is_loopback(parts.hostname):
        return None
    if _bypassed(parts.hostname or "", parts.port, _variable("no_proxy")[1]):
        return None
    scheme = parts.scheme.lower()
    variable, proxy = _variable(f"{scheme}_proxy")
    if not proxy:
        variable, proxy = _variable("all_proxy")
    if not proxy:
        return None
    if "://" not in proxy:
        proxy = f"http://{proxy}"  # "proxy:3128", as curl and httpx read it
    refused = ValueError(
        f"{variable} must be an http:// proxy URL: these calls support no other kind, and "
        "would otherwise go around it"
    )
    try:
        parts = urlsplit(proxy)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
        usable = parts.scheme.lower() == "http" and parts.hostname
    except ValueError:  # its message could quote the proxy's netloc (and any password)
        raise refused from None
    if not usable:
        raise refused
    return proxy


def _variable(name: str) -> tuple[str, str]:
    """The variable's name and value, lower-case first; blank counts as unset."""
    for key in (name.lower(), name.upper()):
        value = os.environ.get(key, "").strip()
        if value:
            return key, value
    return name.upper(), ""


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``no_proxy`` names the host: ``*`` alone for every host; else each entry, a
    leading dot or not, matches that host and its subdomains (``host:port`` only that port).
    Anything else (address ranges, say) matches nothing: the proxy is used."""
    if no_proxy == "*":
        return True
    host = host.lower().rstrip(".")
    for entry in no_proxy.lower().split(","):
        name = entry.strip().lstrip(".")
        if not name:
            continue
        name, _, wanted_port = name.partition(":") if name.count(":") == 1 else (name, "", "")
        name = name.strip("[]")
        if wanted_port and wanted_port != str(port):
            continue
        if host == name or host.endswith("." + name):
            return True
    return False
