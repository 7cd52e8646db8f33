from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argon2 import PasswordHasher as _Argon2


class Argon2PasswordHasher:
    """argon2id via argon2-cffi, run in a worker thread so the event loop never stalls.

    The defaults are argon2-cffi's (RFC 9106 low-memory profile). Tests pass cheaper
    parameters; the algorithm and code path stay the same.

    argon2-cffi (and its cffi bindings) loads at the first password, not at start-up: a
    serving process that only answers lookups, /link and Sign in with Discord never needs it.
    """

    def __init__(self, *, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 4):
        self._parameters = (time_cost, memory_cost, parallelism)
        self._lock = threading.Lock()
        self._loaded: _Argon2 | None = None
        self._dummy: str | None = None

    @property
    def _argon2(self) -> _Argon2:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    from argon2 import PasswordHasher  # noqa: PLC0415 - see the class

                    time_cost, memory_cost, parallelism = self._parameters
                    self._loaded = PasswordHasher(
                        time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism
                    )
        return self._loaded

    def _dummy_hash(self) -> str:
        """A hash to verify against when there is no account (same work as a real one)."""
        if self._dummy is None:
            dummy = self._argon2.hash("not-a-real-password")
            with self._lock:
                if self._dummy is None:
                    self._dummy = dummy
        return self._dummy

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(lambda: self._argon2.hash(password))

    async def verify(self, password_hash: str, password: str) -> bool:
        return await asyncio.to_thread(self._verify, password_hash, password)

    async def burn(self, password: str) -> None:
        await asyncio.to_thread(lambda: self._verify(self._dummy_hash(), password))

    def needs_rehash(self, password_hash: str) -> bool:
        from argon2.exceptions import InvalidHashError  # noqa: PLC0415 - see the class

        try:
            return self._argon2.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _verify(self, password_hash: str, password: str) -> bool:
        from argon2.exceptions import (  # noqa: PLC0415 - see the class
            InvalidHashError,
            VerificationError,
            VerifyMismatchError,
        )

        try:
            return self._argon2.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


class ZxcvbnPasswordPolicy:
    """Dropbox's zxcvbn estimates how many guesses a password takes, from dictionaries,
    keyboard patterns, dates, repeats and what is related to the account. Score 3 ("safely
    unguessable") is the floor; its feedback tells the person what to change.

    It judges the first ``JUDGED`` characters: zxcvbn refuses longer ones (a ValueError, not a
    truncation) and its matching grows with the square of the length. A longer password is
    at least as strong as its start, so a strong start passes; a weak start is refused
    whatever follows ("a" * 1024 is as weak as "a" * 100)."""

    MIN_SCORE = 3
    JUDGED = 100

    def weakness(self, password: str, *, related: Sequence[str] = ()) -> str | None:
        from zxcvbn import zxcvbn  # noqa: PLC0415 - its dictionaries (14 MB) when first needed

        judged = password[: self.JUDGED]
        result = zxcvbn(judged, user_inputs=[r for r in related if r], max_length=self.JUDGED)
        if result["score"] >= self.MIN_SCORE:
            return None
        feedback = result["feedback"]
        hints = " ".join([feedback.get("warning") or "", *feedback.get("suggestions", [])])
        return f"This password is too easy to guess. {hints}".strip()
