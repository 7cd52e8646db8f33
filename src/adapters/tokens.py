from __future__ import annotations

import hashlib
import secrets

from domain.ports import IssuedSecret

TOKEN_BYTES = 32  # 256 bits


class SecretsTokenIssuer:
    """Random URL-safe tokens from ``secrets``; only their SHA-256 digest is ever stored.

    A fast unkeyed hash is enough here: the tokens carry 256 bits of entropy, so a leaked
    digest cannot be reversed by guessing (unlike passwords, which use argon2).
    """

    def issue(self) -> IssuedSecret:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        return IssuedSecret(token, self.digest(token))

    def digest(self, token: str) -> str:
        return hashlib.sha256(token.encode("utf-8")).hexdigest()
