"""Sending webhooks over HTTP, signed as Standard Webhooks want (symmetric, ``v1``).

Each attempt is a POST of the event's exact body with ``webhook-id``, ``webhook-timestamp``
(the attempt's Unix time) and ``webhook-signature``: ``v1,`` + base64 of
HMAC-SHA256(secret, ``id.timestamp.body``), once per secret, space-separated (the current
secret first; during a rotation the previous one too, so a receiver that still has the old
secret keeps verifying). Each endpoint is signed with its own secrets: a receiver holds the
secret it verifies with, and with a secret shared by two URLs it could sign events the
other one accepts.

Only the URLs of the settings are ever called (deliveries name an endpoint by the digest of
its URL), redirects are never followed, the answer's body is never read, and neither a URL
nor a secret appears in an error or a log line: only the host and a short code.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import math
from collections.abc import Sequence

import aiohttp
from yarl import URL

from adapters import tracebacks
from adapters.proxies import proxy_for
from adapters.webhook_targets import (
    SECRET_BYTES,
    SECRET_PREFIX,
    WebhookTarget,
    decode_secret,
    endpoint_for,
)
from domain import errors
from domain.ports import WebhookMessage
from domain.webhooks import WebhookEndpoint

log = logging.getLogger("taskflow_link.webhooks")

# What is in adapters.webhook_targets is named here too, where it was.
__all__ = [
    "SECRET_BYTES",
    "SECRET_PREFIX",
    "HttpWebhookSender",
    "WebhookTarget",
    "decode_secret",
    "endpoint_for",
    "sign",
    "signature_header",
]


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(keys: Sequence[bytes], message_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(key, message_id, timestamp, body) for key in keys)


class HttpWebhookSender:
    """``WebhookSender`` over one shared aiohttp session (made at the first send)."""

    def __init__(
        self,
        targets: Sequence[WebhookTarget],
        *,
        timeout: float,
        user_agent: str,
    ) -> None:
        # Each endpoint's URL and keys (the same secret twice signs once).
        self._targets = {
            endpoint_for(t.url).key: (t.url, list(dict.fromkeys(t.keys))) for t in targets
        }
        # Each URL's proxy from the environment, once (ValueError: one these calls cannot use).
        self._proxies = {t.url: proxy_for(t.url) for t in targets}
        self._timeout, self._user_agent = timeout, user_agent
        self._client: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                cookie_jar=aiohttp.DummyCookieJar(),  # an endpoint's cookies are never sent back
                trust_env=False,  # the proxies are resolved once (adapters.proxies)
            )
        return self._client

    async def send(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> int:
        """The endpoint's HTTP status, or ``WebhookNotDelivered`` with a short code. A failure
        no code names (a bug, a library's surprise) was recorded as ``unexpected_error`` with
        no trace anywhere: it is logged, with its type and its traceback's frames, but never
        its message (a library's may quote the URL, a header, the body) nor the URL's path or
        query: only the host."""
        try:
            return await self._send(endpoint, message)
        except errors.WebhookNotDelivered:
            raise
        except Exception as exc:
            log.error(  # the traceback below, without any message (see the docstring)
                "webhook %s to %s failed unexpectedly (%s); will retry\n%s",
                message.message_id,
                endpoint.host,
                tracebacks.types(exc),
                tracebacks.frames(exc),
            )
            raise errors.WebhookNotDelivered("unexpected_error") from None

    async def _send(self, endpoint: WebhookEndpoint, message: WebhookMessage) -> int:
        url, keys = self._targets.get(endpoint.key, ("", []))
        if not url or not keys:
            raise errors.WebhookNotDelivered("not_configured")
        body = message.body.encode()
        timestamp = math.floor(message.timestamp.timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": self._user_agent,
            "webhook-id": message.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(keys, message.message_id, timestamp, body),
        }
        try:
            # Closed unread: whatever the endpoint answers, only its status counts. The timeout
            # bounds the whole attempt (an endpoint that trickles its answer a byte at a time
            # must not hold the worker). A 3xx is a failure, never followed: fix the URL
            # instead (and no redirect can point the signed body elsewhere).
            async with (
                asyncio.timeout(self._timeout),
                self._http().post(
                    URL(url, encoded=True),
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    proxy=self._proxies[url],
                ) as answer,
            ):
                return answer.status
        except TimeoutError:  # asyncio's or aiohttp's (also an OSError)
            raise errors.WebhookNotDelivered("timeout") from None
        except (aiohttp.ClientError, OSError, ValueError):  # ValueError: a header or URL
            raise errors.WebhookNotDelivered("connection") from None  # aiohttp refused

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
