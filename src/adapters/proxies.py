"""The outgoing proxy the environment names for a URL, read once, at start-up.

``HTTPS_PROXY`` / ``HTTP_PROXY`` (by the URL's scheme), else ``ALL_PROXY``, unless ``NO_PROXY``
lists the host: what curl and httpx read. Resolved here rather than by aiohttp's
``trust_env``, which ignores ``ALL_PROXY``, quietly connects directly when the proxy is an
``https://`` URL (a filtering proxy, skipped without a word), and reads ``~/.netrc`` in a
thread before every call (its credentials would be sent to the endpoint).
"""

from __future__ import annotations

import urllib.request
from urllib.parse import urlsplit


def proxy_for(url: str) -> str | None:
    """The ``http://`` proxy to send requests for ``url`` through, or ``None`` for none.

    ``ValueError`` (naming the variable, never its value: a proxy URL may hold a password)
    for a proxy these calls cannot use (``https://``, ``socks5://``): better no start than
    calls that go around it.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    proxies = urllib.request.getproxies_environment()  # lower-case scheme -> URL
    where = f"{host}:{parts.port}" if parts.port else host
    if not proxies or urllib.request.proxy_bypass(where):
        return None
    scheme = parts.scheme.lower()
    variable, proxy = f"{scheme.upper()}_PROXY", proxies.get(scheme)
    if not proxy:
        variable, proxy = "ALL_PROXY", proxies.get("all")
    if not proxy:
        return None
    if "://" not in proxy:
        proxy = f"http://{proxy}"  # "proxy:3128", as curl and httpx read it
    if urlsplit(proxy).scheme.lower() != "http":
        raise ValueError(
            f"{variable} (or its lower-case form) must be an http:// proxy: these calls "
            "support no other kind, and would otherwise go around it"
        )
    return proxy
