"""Secrets at rest (the Discord tokens kept for Linked Roles), with AES-256-GCM.

A sealed value is ``v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>``: a fresh 96-bit random
nonce per value, and the context (the Discord id the tokens belong to) as associated data, so
a value copied into another row does not open. The key id is a short fingerprint of the key
(SHA-256 of a label and the key, 48 bits): it says which configured key opens a value without
trying each one (or that none configured here does: during a rotation's rollout, another
instance may have it), and it tells nothing about the key.

Keys come newest first: the first seals, every one opens. Rotating is adding a new key in
front, then re-sealing what the older keys sealed (``taskflow-link tokens rotate``; every
refresh re-seals too), then removing the old key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence

from domain import errors

KEY_BYTES = 32
NONCE_BYTES = 12
_VERSION = "v1"
# 32 random bytes hold fewer different values than this about once in 3·10^16 draws; a
# placeholder (zeros: "AAAA…") or a word repeated holds fewer.
_FEWEST_BYTE_VALUES = 16
_MAKE_ONE = (
    "make one with: python3 -c "
    '"import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'
)


def key_id(key: bytes) -> str:
    digest = hashlib.sha256(b"taskflow-link token key id\x00" + key).digest()
    return base64.urlsafe_b64encode(digest[:6]).decode()


def parse_keys(text: str) -> list[bytes]:
    """``TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY``: comma-separated keys, newest first, each 32
    random bytes in URL-safe base64. ``ValueError`` says what is wrong, never with the key.
    Only the newest, which seals, must look random (``not_random``): an older one only opens
    what it sealed, and refusing it left a deployment that had a placeholder key no way to
    move its tokens to a random one (``tokens rotate`` needs it to open them)."""
    keys: list[bytes] = []
    for number, part in enumerate(text.split(","), start=1):
        item = part.strip()
        try:
            key = base64.urlsafe_b64decode(item + "=" * (-len(item) % 4))
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise ValueError(f"key {number} is not 32 bytes in URL-safe base64 ({_MAKE_ONE})")
        if number == 1 and not_random(key):
            raise ValueError(f"key {number} is not random (zeros, a word repeated: {_MAKE_ONE})")
        if key in keys:
            raise ValueError(f"key {number} is listed twice")
        keys.append(key)
    return keys


def not_random(key: bytes) -> bool:
    """Whether no random generator would make the key: too few different byte values."""
    return len(set(key)) < _FEWEST_BYTE_VALUES


class AesGcmSecretBox:
    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or any(len(k) != KEY_BYTES for k in keys):
            raise ValueError("at least one key of 32 bytes is needed")
        # Loaded here, not at import: cryptography brings its own OpenSSL (about 6 MB resident),
        # which only a deployment that keeps Discord tokens (Linked Roles) needs.
        from cryptography.exceptions import InvalidTag  # noqa: PLC0415
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

        self._invalid_tag = InvalidTag
        self._sealing_id = key_id(keys[0])
        self._sealing = AESGCM(keys[0])
        self._opening = {key_id(k): AESGCM(k) for k in keys}

    def seal(self, plaintext: str, *, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._sealing.encrypt(nonce, plaintext.encode(), context.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_VERSION}.{self._sealing_id}.{body}"

    def open(self, sealed: str, *, context: str) -> str:
        kid, body = _parts(sealed)
        cipher = self._opening.get(kid)
        if cipher is None:
            raise errors.SecretUnreadable()
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plaintext = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
            return plaintext.decode()
        except (binascii.Error, ValueError, self._invalid_tag):
            raise errors.SecretUnreadable() from None

    def is_current(self, sealed: str) -> bool:
        return sealed.startswith(f"{_VERSION}.{self._sealing_id}.")

    def has_key(self, sealed: str) -> bool:
        return _parts(sealed)[0] in self._opening


def _parts(sealed: str) -> tuple[str, str]:
    """The key id and the body of a sealed value (an empty key id: not a value of this
    format)."""
    version, _, rest = sealed.partition(".")
    kid, _, body = rest.partition(".")
    return (kid, body) if version == _VERSION else ("", body)
