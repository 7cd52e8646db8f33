"""Keys for services that call the JSON API. Shown once, stored as a digest."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from domain import errors
from domain.model import ApiKey, AuditEvent, AuditKind
from domain.ports import ApiKeyLookup, Clock, TokenIssuer, UnitOfWorkFactory
from domain.use_cases._shared import plausible_token

# A recognisable prefix lets secret scanners and people spot a leaked key.
API_KEY_PREFIX = "tfl_"


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    key: ApiKey
    token: str  # shown once, never stored


class CreateApiKey:
    def __init__(self, uow: UnitOfWorkFactory, tokens: TokenIssuer, clock: Clock) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock

    async def execute(self, name: str) -> CreatedApiKey:
        name = name.strip()
        if not 1 <= len(name) <= 64 or not name.isprintable():
            raise errors.InvalidInput("An API key name is 1 to 64 printable characters.")
        secret = self._tokens.issue()
        token = API_KEY_PREFIX + secret.token
        now = self._clock.now()
        key = ApiKey(uuid.uuid4(), name, self._tokens.digest(token), now)
        async with self._uow() as uow:
            if any(k.name == name and k.revoked_at is None for k in await uow.api_keys.list()):
                raise errors.InvalidInput(f"An active API key is already named {name!r}.")
            await uow.api_keys.add(key)
            await uow.audit.record(
                AuditEvent(AuditKind.API_KEY_CREATED, now, detail={"name": name})
            )
            await uow.commit()
        return CreatedApiKey(key, token)


class AuthenticateApiKey:
    """Who is calling the JSON API. The hot path: keys come from a short-lived cache."""

    def __init__(self, keys: ApiKeyLookup, tokens: TokenIssuer) -> None:
        self._keys, self._tokens = keys, tokens

    async def execute(self, token: str | None) -> ApiKey | None:
        if token is None or not token.startswith(API_KEY_PREFIX):
            return None
        if not plausible_token(token.removeprefix(API_KEY_PREFIX)):
            return None
        key = await self._keys.by_digest(self._tokens.digest(token))
        return key if key is not None and key.revoked_at is None else None


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
