"""The JSON API for other services (bots, the TaskFlow backend). API keys as Bearer tokens,
each allowed what its scopes say. The OpenAPI schema documents every answer a route gives,
errors included (a test runs schemathesis against it with every check)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final, cast

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import URL
from litestar.di import Provide
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    SerializationException,
    ValidationException,
)
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    Example,
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Schema,
)
from litestar.params import JSONBody, KwargDefinition, Parameter
from msgspec import Meta, Struct

from domain import errors
from domain import use_cases as uc
from domain.model import MAX_SNOWFLAKE, AccountId, ApiKey, ApiScope, DiscordId, Link
from domain.use_cases.links import MAX_BULK_LOOKUP
from entrypoints.web.deps import Use

# Discord ids (snowflakes) as the API takes them: decimal digits. Some such numbers cannot be
# anyone's id (0, or more than a signed 64-bit column holds): they are simply not linked.
# As the schema shows them, for every regex engine. Python's "$" also matches before a last
# line break (and int() ignores it): what Python checks refuses that too, apart (a look-ahead
# in the schema would break the clients whose engines have none: RE2, Rust's regex).
SNOWFLAKE_PATTERN: Final = r"^[0-9]{1,20}$"
SNOWFLAKE_CHECKED: Final = r"^[0-9]{1,20}(?!\n)$"
UUID_PATTERN: Final = (
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
# What a refused id is told (msgspec's words quote the regular expression, which says it to a
# program, not to the person reading the refusal), by msgspec's words.
DISCORD_ID_WORDS: Final = "a Discord id is 1 to 20 digits (0-9), and nothing else"
ACCOUNT_ID_WORDS: Final = (
    "an account id is a UUID (8-4-4-4-12 hexadecimal digits), and nothing else"
)
PATTERN_WORDS: Final = {
    **{
        f"Expected `str` matching regex {pattern!r}": words
        for pattern, words in (
            (SNOWFLAKE_PATTERN, DISCORD_ID_WORDS),
            (SNOWFLAKE_CHECKED, DISCORD_ID_WORDS),
            (UUID_PATTERN, ACCOUNT_ID_WORDS),
        )
    },
    # A number in a bulk lookup with a fraction or an exponent (read as a Decimal).
    "Expected `int | str`, got `decimal`": "a Discord id is 1 to 20 digits (0-9) in a "
    "string, or a positive whole number below 2^63",
}
# The ids the schema shows as examples (the conformance test links them, so that the
# examples reach a 200).
DISCORD_ID_EXAMPLE: Final = "80351110224678912"
ACCOUNT_ID_EXAMPLE: Final = "5f0c2b6e-8d1a-4c39-9f4e-2a7b3c1d0e9f"
# The handler option naming the scope a route needs (read when not given).
SCOPE_OPTION: Final = "api_scope"
# Each scope by its value (a member is its value as a key too).
_SCOPES: Final = {scope.value: scope for scope in ApiScope}
# Where the key check leaves the request's key, in the request's state.
_KEY_STATE: Final = "api_key"


class LinkOut(Struct, gc=False):
    """A link; ids are strings (Discord ids exceed JavaScript's safe integers).

    Not tracked by the garbage collector (its fields, strings, a UUID and a datetime, can
    hold no cycle): a bulk answer makes a thousand, which set off collections of its own."""

    discord_id: str
    # A UUID as str() writes it (a bulk answer's rows hold it so: a UUID object for each cost
    # more to make and to write), documented as one.
    taskflow_user_id: Annotated[str, KwargDefinition(format=OpenAPIFormat.UUID)]
    # RFC 3339 (msgspec writes a UTC time with "Z", the microseconds only when not zero, as
    # isoformat() did, in a twentieth of the time: a bulk answer writes a thousand).
    linked_at: datetime
    discord_username: str
    discord_global_name: str | None


def link_out(link: Link) -> LinkOut:
    # By position: a bulk answer makes a thousand of these.
    return LinkOut(
        str(link.discord_id.value),
        str(link.account_id.value),
        link.linked_at,
        link.discord_username,
        link.discord_global_name,
    )


class ApiErrorDetail(Struct):
    code: str  # stable, for programs: "not_found", "missing_scope", "http_401", …
    message: str  # for people: what happened and what to do


class ApiError(Struct):
    """Every refusal of the JSON API has this body (``/interactions`` answers Discord with
    ``{"detail": …}``)."""

    error: ApiErrorDetail


# A Discord id in a bulk lookup: digits in a string (as everywhere), or a JSON number. Each
# constraint is said twice: msgspec checks it (_CheckedIds), Litestar documents it (the bound
# as it is: Litestar would print 2^63 - 1 as a float, which rounds it up past the column).
IdString = Annotated[
    str,
    Parameter(pattern=SNOWFLAKE_PATTERN, description="A Discord id: 1 to 20 digits"),
]
IdNumber = Annotated[
    int,
    Parameter(schema_extra={"minimum": 1, "maximum": MAX_SNOWFLAKE}),
]
_BulkIds = Annotated[list[IdString | IdNumber], Meta(min_length=1, max_length=MAX_BULK_LOOKUP)]


class LookupIn(Struct):
    """1 to 1000 Discord ids (strings of digits; whole numbers are accepted too).

    Litestar checks the list and each id's type; what each id holds is checked by
    ``bulk_discord_ids`` (the pattern checked one id at a time was a seventh of a 1000-id
    lookup's CPU)."""

    discord_ids: _BulkIds


class _CheckedIds(Struct):
    """``LookupIn`` with each id checked as msgspec checks it, for the ids the quick check
    of ``bulk_discord_ids`` did not take: its refusal names the first one refused."""

    discord_ids: Annotated[
        list[
            Annotated[str, Meta(pattern=SNOWFLAKE_CHECKED)]
            | Annotated[int, Meta(ge=1, le=MAX_SNOWFLAKE)]
        ],
        Meta(min_length=1, max_length=MAX_BULK_LOOKUP),
    ]


def bulk_discord_ids(request: Request[Any, Any, Any], ids: list[str | int]) -> list[int]:
    """The ids of a bulk lookup as numbers ("007" is 7), in the order given. Strings of 1 to
    20 ASCII digits, all of them (what clients send), are checked at once; any other list
    (numbers among them, or something refused) is checked id by id, as msgspec checks a
    ``_CheckedIds``, and refused as Litestar refuses a body msgspec refuses (400, the first
    id refused named with msgspec's words)."""
    try:
        text = "".join(ids)  # type: ignore[arg-type] # a number among them: TypeError
    except TypeError:
        pass
    else:
        strings = cast("list[str]", ids)
        # ASCII and digits: 0-9 only ("\u0661", "\u00b2" and "\n" are not), each 1 to 20.
        shortest, longest = min(map(len, strings)), max(map(len, strings))
        if text.isascii() and text.isdigit() and shortest > 0 and longest <= 20:
            return list(map(int, strings))
    try:
        msgspec.convert({"discord_ids": ids}, _CheckedIds, strict=False)
    except msgspec.ValidationError as exc:
        # As Litestar's signature model says it (litestar/_signature/model.py).
        words = str(exc)
        where = re.search(r"`\$\.(.+)`$", words)
        url = URL.from_components(path=request.url.path, query=request.url.query)
        raise ValidationException(
            detail=f"Validation failed for {request.method} {url}",
            extra=[
                {
                    "message": words.split(" - ", maxsplit=1)[0],
                    "key": where.group(1) if where else "discord_ids",
                    "source": "body",
                }
            ],
        ) from exc
    return [int(raw) for raw in ids]


class LookupOut(Struct):
    links: list[LinkOut]  # in the order asked, duplicates once
    missing: list[str]  # asked for, not linked


DiscordIdPath = Annotated[
    str,
    Parameter(
        pattern=SNOWFLAKE_PATTERN,
        description="A Discord id (snowflake): 1 to 20 digits.",
        examples=[Example(value=DISCORD_ID_EXAMPLE)],
    ),
]
AccountIdPath = Annotated[
    str,
    Parameter(
        pattern=UUID_PATTERN,
        description="A TaskFlow account id: a UUID (8-4-4-4-12 hexadecimal digits).",
        examples=[Example(value=ACCOUNT_ID_EXAMPLE)],
    ),
]


def _header(
    description: str, *, required: bool = True, pattern: str | None = None
) -> OpenAPIHeader:
    return OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING, pattern=pattern),
        description=description,
        required=required,
    )


_WHOLE_SECONDS = r"^[0-9]+$"
# The headers each refusal carries, for the schema (Litestar's ResponseSpec takes none).
_REFUSAL_HEADERS: Final = {
    "401": {"WWW-Authenticate": _header("Bearer: send the key as Authorization: Bearer <key>")},
    "429": {
        "Retry-After": _header("Seconds until the key may ask again", pattern=_WHOLE_SECONDS),
        **{
            f"RateLimit-{name}": _header(description, required=False, pattern=pattern)
            for name, description, pattern in (
                ("Policy", "Requests allowed per window, and the window: 10; w=1", None),
                ("Limit", "Requests allowed per window", _WHOLE_SECONDS),
                ("Remaining", "Requests left in this window", _WHOLE_SECONDS),
                ("Reset", "Seconds until the window ends", _WHOLE_SECONDS),
            )
        },
    },
    "503": {"Retry-After": _header("Seconds to wait before trying again", pattern=_WHOLE_SECONDS)},
}


@dataclass
class ApiOperation(Operation):
    """An operation of the JSON API, in the schema with the headers its refusals carry."""

    def __post_init__(self) -> None:
        for status, headers in _REFUSAL_HEADERS.items():
            response = (self.responses or {}).get(status)
            if isinstance(response, OpenAPIResponse):
                response.headers = {**(response.headers or {}), **headers}


def _errors(described: dict[int, str]) -> dict[int, ResponseSpec]:
    """The error answers of a route (status: why), each with the error body."""
    return {
        status: ResponseSpec(data_container=ApiError, description=why, generate_examples=False)
        for status, why in sorted(described.items())
    }


# What every route of the API may answer besides its own refusals.
_COMMON = {
    401: "No API key, or a key that is unknown, revoked or expired (the message says which)",
    429: "This key made too many requests (with TASKFLOW_LINK_API_RATE_LIMIT_PER_SECOND); "
    "see Retry-After",
    503: "The database cannot be reached; try again shortly",
}
_READ = {**_COMMON, 403: "The key lacks the scope links:read"}


def _refused_path(name: str, message: str) -> ValidationException:
    """A path id the pattern let through but that is not one, refused as the pattern refuses
    (400 ``http_400``, the message naming the part)."""
    return ValidationException(extra=[{"key": name, "source": "path", "message": message}])


def _snowflake(raw: str) -> DiscordId | None:
    """The id in a request that passed the pattern, or ``None`` when no Discord account can
    have it (0, beyond a signed 64-bit number): such an id is linked to nothing. Read as a
    number, as a bulk lookup reads it: ``00000000000000000123`` is 123 (taken for a 20-digit
    number, it was "not linked", and a DELETE answered ``not_linked`` leaving the link)."""
    if raw.endswith("\n"):  # the pattern's "$" let it through
        raise _refused_path("discord_id", DISCORD_ID_WORDS)
    value = int(raw)  # ASCII digits only: the pattern says so
    return DiscordId(value) if 0 < value <= MAX_SNOWFLAKE else None


async def require_api_key(request: Request[Any, Any, Any]) -> None:
    """A valid key with the scope the route needs (``opt["api_scope"]``, else read). The
    key is kept for the handler (the audit names it).

    The API's ``before_request`` hook rather than a guard: Litestar copies the route handler
    for every guard it calls, a sixteenth of a lookup's CPU. It runs where a guard runs, before
    any parameter or body is read, and its refusals are answered the same way."""
    if request.scope["method"] == "OPTIONS":
        return  # which methods a path allows is public (and in the schema)
    authenticate: uc.AuthenticateApiKey = request.app.state.authenticate_api_key
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("Send an API key as 'Authorization: Bearer <key>'.")
    wanted = request.route_handler.opt.get(SCOPE_OPTION, ApiScope.LINKS_READ)
    scope = _SCOPES.get(wanted) or ApiScope(wanted)  # the dict: a call of ApiScope costs more
    key = await authenticate.execute(token.strip(), scope)  # expired, lacks the scope: raises
    if key is None:
        raise NotAuthorizedException("This API key is not valid (unknown or revoked).")
    # In the request's state (what request.state reads), written to directly: request.state
    # makes a State (and its lock) at every access.
    request.scope.setdefault("state", {})[_KEY_STATE] = key


def _authenticated_key(request: Request[Any, Any, Any]) -> ApiKey:
    key: ApiKey = request.scope["state"][_KEY_STATE]
    return key


def _json_number(text: str) -> int | Decimal:
    """A JSON number with a fraction or an exponent, read exactly, never as a float: Litestar's
    conversion took a float with a whole value for an int after the float had rounded it to 53
    bits (9007199254740993.0 was the id 9007199254740992, another person's). A whole one
    (``6001.0``, ``6.001e3``) is that integer, as JSON Schema counts it; any other stays a
    Decimal, refused where an id is asked ("got `decimal`"). Past 20 digits no id is whole
    enough to matter, and ``int()`` of ``1e999999999`` would take the CPU for minutes. An
    exponent past what a Decimal holds (10^18, either way: ``1e1000000000000000000``), which
    ``Decimal()`` refuses with an ``InvalidOperation`` (a 500 it was), is no id either: NaN,
    refused as the others."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        return Decimal("NaN")
    if number.adjusted() < 20 and number == number.to_integral_value():
        return int(number)
    return number


_API_JSON: Final = msgspec.json.Decoder(float_hook=_json_number)


class _RepeatedKey(ValueError):
    pass


def _once_each(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise _RepeatedKey(name)
        seen.add(name)


# Only names matter: numbers and constants are not converted (a 20000-digit number would
# be a ValueError past Python's int digits, and a float is never needed).
_PAIRS_JSON: Final = json.JSONDecoder(
    object_pairs_hook=_once_each,
    parse_int=lambda _: None,
    parse_float=lambda _: None,
    parse_constant=lambda _: None,
)


def refuse_repeated_keys(body: bytes) -> None:
    """``SerializationException`` (a 400) naming a key given twice in one JSON object, which
    msgspec reads as the last one says (``{"discord_ids": [A], "discord_ids": [B]}`` looked
    up B, where a proxy or a log reading the first saw A). For a body msgspec has read: valid
    UTF-8 JSON. Two keys take two colons: a body with at most one (a bulk lookup's) is not
    read again, so the lookup pays two ``bytes.find`` for it (a microsecond for a thousand
    ids, where ``bytes.count`` took 13)."""
    first = body.find(b":")
    if first < 0 or body.find(b":", first + 1) < 0:  # one colon: one key at most
        return
    try:
        _PAIRS_JSON.decode(body.decode())
    except _RepeatedKey as repeated:
        shown = json.dumps(repeated.args[0][:64])  # quoted, escaped, short
        raise SerializationException(
            f"JSON is malformed: the key {shown} appears more than once in one object"
        ) from None
    except RecursionError as exc:
        raise SerializationException("JSON is malformed: nested too deeply") from exc
    except ValueError as exc:  # read by msgspec, not by the standard library: not checked
        raise SerializationException("JSON is malformed: " + str(exc)) from exc


class ApiRequest(Request[Any, Any, Any]):
    """The body read as ``_API_JSON`` reads it. A body msgspec cannot read is a 400 like any
    malformed JSON: Litestar turns msgspec's ``DecodeError`` into one, but not invalid UTF-8
    in a string nor nesting too deep to follow, which would be a 500 (and a logged traceback
    per request)."""

    async def json(self) -> Any:
        body = await self.body()
        media_type = self.content_type[0]  # "" without the header: taken as JSON
        is_json = media_type == "application/json" or media_type.endswith("+json")
        if body and media_type and not is_json:
            # A form or text (what `curl -d` sends) was read as JSON all the same.
            raise HTTPException(
                status_code=415,
                detail="Send the body as JSON, with 'Content-Type: application/json'.",
            )
        try:
            decoded = _API_JSON.decode(body or b"null")
        except msgspec.DecodeError as exc:  # as Litestar's decode_json says it
            raise SerializationException(str(exc)) from exc
        except UnicodeDecodeError as exc:
            raise SerializationException("JSON is malformed: a string is not UTF-8") from exc
        except RecursionError as exc:
            raise SerializationException("JSON is malformed: nested too deeply") from exc
        refuse_repeated_keys(body)
        return decoded


class LinksApi(Controller):
    path = "/api/v1"
    request_class = ApiRequest
    # In place of the app's hook (control characters in queries and forms): the API reads
    # neither, and its ids and bodies are checked against their patterns.
    before_request = staticmethod(require_api_key)
    dependencies = {"api_key": Provide(_authenticated_key, sync_to_thread=False)}
    tags = ["links"]

    @get(
        "/links/{discord_id:str}",
        summary="Which TaskFlow account is this Discord id?",
        operation_class=ApiOperation,
        security=[{"apiKey": [ApiScope.LINKS_READ.value]}],
        responses=_errors(
            {
                400: "The id is not 1 to 20 digits",
                404: "No TaskFlow account is linked to this Discord id",
                **_READ,
            }
        ),
    )
    async def by_discord_id(
        self, discord_id: DiscordIdPath, look_up_link: Use[uc.LookUpLink]
    ) -> LinkOut:
        parsed = _snowflake(discord_id)
        if parsed is None:
            raise errors.NotFound(f"Discord id {discord_id} is not linked to a TaskFlow account.")
        return link_out(await look_up_link.execute(parsed))

    @post(
        "/links/lookup",
        summary="Which TaskFlow accounts are these Discord ids? (up to 1000, one query)",
        status_code=200,
        operation_class=ApiOperation,
        security=[{"apiKey": [ApiScope.LINKS_READ.value]}],
        responses=_errors(
            {
                400: "The body is not JSON (or gives a key twice in one object), or not 1 to "
                "1000 ids each 1 to 20 digits (or a positive whole number below 2^63)",
                413: "The body is larger than 64 KB",
                415: "The body is sent as another type than JSON (Content-Type)",
                **_READ,
            }
        ),
    )
    async def bulk(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[LookupIn],
        look_up_links: Use[uc.LookUpLinks],
    ) -> LookupOut:
        # As numbers ("007" is 7), each once, in the order asked.
        asked = list(dict.fromkeys(bulk_discord_ids(request, data.discord_ids)))
        # 0, or beyond a signed 64-bit number: no Discord account has it, so it is missing.
        possible = [n for n in asked if 0 < n <= MAX_SNOWFLAKE]
        rows = (await look_up_links.execute(possible)).links if possible else []
        linked = {row[0] for row in rows}
        missing = [str(n) for n in asked if n not in linked]
        # By position, from the rows as they are (a thousand LinkOut).
        return LookupOut([LinkOut(str(d), a, t, u, g) for d, a, t, u, g in rows], missing)

    @get(
        "/accounts/{account_id:str}/link",
        summary="The Discord link of a TaskFlow account",
        operation_class=ApiOperation,
        security=[{"apiKey": [ApiScope.LINKS_READ.value]}],
        responses=_errors(
            {
                400: "The account id is not a UUID",
                404: "The account has no Discord link (or there is no such account)",
                **_READ,
            }
        ),
    )
    async def by_account(
        self, account_id: AccountIdPath, link_of_account: Use[uc.LinkOfAccount]
    ) -> LinkOut:
        if account_id.endswith("\n"):  # the pattern's "$" let it through
            raise _refused_path("account_id", ACCOUNT_ID_WORDS)
        link = await link_of_account.execute(AccountId.parse(account_id))
        if link is None:
            raise errors.NotFound(f"TaskFlow account {account_id} has no Discord link.")
        return link_out(link)

    @delete(
        "/links/{discord_id:str}",
        summary="Unlink (admin; needs links:write)",
        description="Removes the link and ends the account's sessions; the audit trail "
        "records the key's name. Refused while Discord is the account's only way to sign in.",
        status_code=200,
        opt={SCOPE_OPTION: ApiScope.LINKS_WRITE.value},
        operation_class=ApiOperation,
        security=[{"apiKey": [ApiScope.LINKS_WRITE.value]}],
        responses=_errors(
            {
                400: "The id is not 1 to 20 digits",
                403: "The key lacks the scope links:write",
                409: "Not linked, or Discord is the account's only way to sign in (one "
                "refusal for both, nothing_unlinked, to a key without links:read)",
                **_COMMON,
            }
        ),
    )
    async def unlink(
        self,
        discord_id: DiscordIdPath,
        api_key: Use[ApiKey],
        unlink_with_api_key: Use[uc.UnlinkWithApiKey],
    ) -> LinkOut:
        parsed = _snowflake(discord_id)
        if parsed is None:  # 0, or past 64 bits: linked to nothing
            raise uc.UnlinkWithApiKey.not_linked(api_key)
        removed = await unlink_with_api_key.execute(parsed, api_key)
        return link_out(removed.link)
