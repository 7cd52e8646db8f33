from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from domain.ports import IssuedSecret

TOKEN_BYTES = 32  # 256 bits


class SecretsTokenIssuer:
    """Random URL-safe tokens from ``secrets``; only their SHA-256 digest is ever stored.

    A fast unkeyed hash is enough here: the tokens carry 256 bits of entropy, so a leaked
    digest cannot be reversed by guessing (unlike passwords, which use argon2). Derived values
    are HMAC-SHA256 under the server's key, so a database dump does not yield them.
    """

    def __init__(self, key: str) -> None:
        # A key of its own, separate from what else the secret key signs (CSRF tokens).
        self._key = hmac.new(key.encode(), b"taskflow-link derive", hashlib.sha256).digest()

    def issue(self) -> IssuedSecret:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        return IssuedSecret(token, self.digest(token))

    def digest(self, token: str) -> str:
        return hashlib.sha256(token.encode("utf-8")).hexdigest()

    def derive(self, token: str, purpose: str) -> str:
        mac = hmac.new(self._key, f"{purpose}\n{token}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")
