"""Keys for services that call the JSON API. Shown once, stored as a digest; each key has
scopes (what it may do), maybe an expiry, and a "last used" time kept to the minute."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeGuard

from domain import errors
from domain.model import (
    DEFAULT_API_SCOPES,
    MAX_API_KEY_LIFETIME,
    ApiKey,
    ApiScope,
    AuditEvent,
    AuditKind,
    scopes_to_text,
)
from domain.policies import require_scope
from domain.ports import ApiKeyLookup, ApiKeyUsage, Clock, TokenIssuer, UnitOfWorkFactory
from domain.use_cases._shared import plausible_token

# A recognisable prefix lets secret scanners and people spot a leaked key.
API_KEY_PREFIX = "tfl_"
# A key ends with a seal: the first characters of an HMAC of its random part under the
# server's key (128 bits). The per-key API limit tells a key this service issued from a made-up
# token without asking the database; nothing else relies on it (a key is checked by its
# digest, as before). Keys made before seals existed have none and still work.
_SEAL_LENGTH = 22
_SEAL_PURPOSE = "api-key-seal"
# The name of a key's budget under the per-key API limit (128 bits, see ``IdentifyApiKey``).
_BUDGET_PURPOSE = "api-key-budget"
_BUDGET_LENGTH = 22


def _seal(tokens: TokenIssuer, random_part: str) -> str:
    return tokens.derive(random_part, _SEAL_PURPOSE)[:_SEAL_LENGTH]


def sealed_by_us(tokens: TokenIssuer, token: str) -> bool:
    """Whether ``token`` (a plausible key) carries a seal made with this server's key."""
    body = token.removeprefix(API_KEY_PREFIX)
    random_part, seal = body[:-_SEAL_LENGTH], body[-_SEAL_LENGTH:]
    if len(random_part) < _SEAL_LENGTH:
        return False
    return hmac.compare_digest(seal.encode(), _seal(tokens, random_part).encode())


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    key: ApiKey
    token: str  # shown once, never stored


def parse_scopes(names: Iterable[str]) -> frozenset[ApiScope]:
    """Scopes by name; none named: the default (read only). An unknown name is refused."""
    known = {scope.value: scope for scope in ApiScope}
    scopes: set[ApiScope] = set()
    for name in names:
        if name not in known:
            choices = ", ".join(sorted(known))
            raise errors.InvalidInput(f"Unknown API key scope {name!r}: choose from {choices}.")
        scopes.add(known[name])
    return frozenset(scopes) if scopes else DEFAULT_API_SCOPES


def api_key_name(name: str) -> str:
    """A key's name as stored (stripped); ``InvalidInput`` when it is no name."""
    name = name.strip()
    if not 1 <= len(name) <= 64 or not name.isprintable():
        raise errors.InvalidInput("An API key name is 1 to 64 printable characters.")
    return name


class CreateApiKey:
    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(
        self, name: str, scopes: Iterable[str] = (), expires_in: timedelta | None = None
    ) -> CreatedApiKey:
        name = api_key_name(name)
        granted = parse_scopes(scopes)
        if expires_in is not None and not timedelta(0) < expires_in <= MAX_API_KEY_LIFETIME:
            raise errors.InvalidInput(
                f"An API key expires after 1 to {MAX_API_KEY_LIFETIME.days} days (or never)."
            )
        random_part = self._tokens.issue().token
        token = API_KEY_PREFIX + random_part + _seal(self._tokens, random_part)
        now = self._clock.now()
        expires_at = now + expires_in if expires_in is not None else None
        key = ApiKey(
            uuid.uuid4(),
            name,
            self._tokens.digest(token),
            now,
            scopes=granted,
            expires_at=expires_at,
        )
        async with self._uow() as uow:
            if any(k.name == name and k.revoked_at is None for k in await uow.api_keys.list()):
                raise errors.InvalidInput(f"An active API key is already named {name!r}.")
            await uow.api_keys.add(key)
            detail = {"name": name, "scopes": scopes_to_text(granted)}
            if expires_at is not None:
                detail["expires_at"] = expires_at.isoformat()
            await uow.audit.record(AuditEvent(AuditKind.API_KEY_CREATED, now, detail=detail))
            await uow.commit()
        return CreatedApiKey(key, token)


class AuthenticateApiKey:
    """Who is calling the JSON API, and may they do this? The hot path: keys come from a
    short-lived cache, and their use is noted in memory (written at most once a minute per
    key, off the request path). Expiry is checked against the clock at every request, so a
    cached key stops working at its expiry, not up to a cache lifetime later."""

    def __init__(
        self, keys: ApiKeyLookup, tokens: TokenIssuer, clock: Clock, usage: ApiKeyUsage
    ) -> None:
        self._keys, self._tokens, self._clock, self._usage = keys, tokens, clock, usage

    async def execute(self, token: str | None, scope: ApiScope | None = None) -> ApiKey | None:
        """The key, or ``None`` for an unknown or revoked one. ``ApiKeyExpired`` past its
        expiry; ``MissingScope`` when ``scope`` is given and the key lacks it."""
        if not _key_shaped(token):  # not looked up
            return None
        key = await self._keys.by_digest(self._tokens.digest(token))
        if key is None or key.revoked_at is not None:
            return None
        now = self._clock.now()
        if key.expired(now):
            assert key.expires_at is not None  # noqa: S101 - expired() says so
            raise errors.ApiKeyExpired(
                f"This API key ({key.name!r}) expired on "
                f"{key.expires_at:%Y-%m-%d %H:%M} UTC. Ask for a new one "
                "(taskflow-link api-key create)."
            )
        # A key refused for its scope was still used: someone holds it and sends it.
        self._usage.used(key, now)
        if scope is not None:
            require_scope(key, scope)
        return key


class IdentifyApiKey:
    """Whose budget does a request spend under the per-key API limit? The name of the key's
    budget, or ``None`` for its client's (by address). Notes no use and checks no scope: that
    is ``AuthenticateApiKey``'s, for the same request. The name is an HMAC of the key's
    digest, not the digest the database keeps: the shared store of the limits (Redis) holds
    nothing that finds a key's row.

    A key this service issued carries a seal (an HMAC under the server's key): it gets its own
    budget from its first request, and nothing is read to know it. A made-up token has no
    valid seal, so inventing tokens buys no fresh budgets, and costs no query before the limit
    counts it. A key made before seals existed gets its own budget once the process knows it
    (``ApiKeyLookup.known``: a cache entry, even lapsed, no read); until then, its client's.
    Without seals, anyone sharing a client's address could keep such a key refused with
    made-up tokens: refused requests never got it into the cache. A sealed key the process
    knows to be revoked or expired spends its client's budget (a leaked key, once revoked,
    buys whoever found it no budget of its own); one it does not know yet keeps its own until
    it does."""

    def __init__(self, keys: ApiKeyLookup, tokens: TokenIssuer, clock: Clock) -> None:
        self._keys, self._tokens, self._clock = keys, tokens, clock

    async def execute(self, token: str | None) -> str | None:
        if not _key_shaped(token):
            return None
        digest = self._tokens.digest(token)
        key = await self._keys.known(digest)
        if key is None:
            usable = sealed_by_us(self._tokens, token)
        else:
            usable = key.revoked_at is None and not key.expired(self._clock.now())
        return self._tokens.derive(digest, _BUDGET_PURPOSE)[:_BUDGET_LENGTH] if usable else None


def _key_shaped(token: str | None) -> TypeGuard[str]:
    """Whether ``token`` could be a key we issued (else nothing is hashed or looked up)."""
    return (
        token is not None
        and token.startswith(API_KEY_PREFIX)
        and plausible_token(token.removeprefix(API_KEY_PREFIX))
    )


class ListApiKeys:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def execute(self) -> Sequence[ApiKey]:
        async with self._uow(read_only=True) as uow:
            return await uow.api_keys.list()


class RevokeApiKey:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def execute(self, name: str) -> ApiKey:
        name = name.strip()  # as CreateApiKey stores it: " bot" names the key made as " bot"
        now = self._clock.now()
        async with self._uow() as uow:
            active = [k for k in await uow.api_keys.list() if k.name == name and not k.revoked_at]
            if not active:
                raise errors.NotFound(f"No active API key is named {name!r}.")
            await uow.api_keys.revoke(active[0].id, now)
            await uow.audit.record(
                AuditEvent(AuditKind.API_KEY_REVOKED, now, detail={"name": name})
            )
            await uow.commit()
        return active[0]
