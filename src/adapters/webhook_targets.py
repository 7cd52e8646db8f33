"""Webhook endpoints as the settings name them: each URL's endpoint in the outbox, and the
keys of its ``whsec_`` secrets. Apart from the sender (``adapters.webhooks``) so that the
settings, which every command loads, do not load the sender's HTTP client (aiohttp)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from domain.webhooks import WebhookEndpoint

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every such secret, not one
# The Standard Webhooks range for a symmetric signing secret.
SECRET_BYTES = (24, 64)


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where one endpoint's webhooks go and the keys they are signed with (its own secret's,
    the current one first). Neither is ever shown: the URL may carry a token."""

    url: str = field(repr=False)
    keys: tuple[bytes, ...] = field(repr=False)


def endpoint_for(url: str) -> WebhookEndpoint:
    """The endpoint a URL names in the outbox: the URL's SHA-256, and for people its host
    (with the port, when the URL names one; never a user name or password)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return WebhookEndpoint(
        hashlib.sha256(url.encode()).hexdigest(),
        f"{host}:{parts.port}" if parts.port else host,
    )


def decode_secret(text: str) -> bytes:
    """The key of a ``whsec_…`` secret. ``ValueError`` (saying what is expected, never the
    value) for anything else."""
    body = text.strip()
    if not body.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX}")
    encoded = body.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {SECRET_PREFIX} followed by base64") from None
    low, high = SECRET_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"must hold {low} to {high} random bytes (base64 after {SECRET_PREFIX})")
    return key
