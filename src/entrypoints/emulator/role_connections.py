"""Linked Roles in the emulator, refusing what Discord refuses:

- ``PUT``/``GET /api/v10/applications/{app}/role-connections/metadata`` (bot token): at most 5
  records; ``key`` a-z, 0-9 and _ (1-50), ``name`` 1-100, ``description`` 1-200, ``type`` 1-8,
  keys unique.
- ``PUT``/``GET /api/v10/users/@me/applications/{app}/role-connection`` (a user's Bearer token
  with ``role_connections.write``): ``platform_name`` up to 50, ``platform_username`` up to
  100 (either may be ``null``), ``metadata`` values strings of 1 to 100 characters (or JSON
  integers, kept as their strings), each key a registered record and each value of its
  record's type (integers in decimal, booleans ``1``/``0``, ISO 8601 datetimes). A field the
  body leaves out keeps its previous value.
- Every push's answer carries the route's rate limit headers, the user's (Discord limits per
  token: ``entrypoints.emulator.limits``); a push past the limit is a 429. A user whose own
  token met Discord's global limit (a user's, per token) is answered its global 429 at both
  of these routes until it resets; the other users' calls go through.
- A test API: ``GET /_emulator/role-connections`` (the records and every user's connection),
  ``PATCH /_emulator/role-connection-limit`` (``{"calls", "window"}``: the push's limit),
  ``POST /_emulator/users/{id}/global-limit`` (``{"seconds"}``: that user's token meets its
  global limit for that long),
  ``POST /_emulator/users/{id}/expire-tokens`` (Discord ends their access tokens: the refresh
  tokens still work) and ``POST /_emulator/users/{id}/deauthorize`` (the user removes the app:
  every token dies, the connection goes).

Shapes follow https://discord.com/developers/docs/resources/application-role-connection-metadata
and .../resources/user#update-current-user-application-role-connection.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from litestar import Request, get, patch, post, put
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody
from litestar.response import Response

from entrypoints.emulator.bodies import json_body
from entrypoints.emulator.limits import (
    Window,
    bucket_of,
    globally_limited,
    limit_asked,
    over,
    rate_limited,
)
from entrypoints.emulator.state import EmulatorState, same_secret
from entrypoints.emulator.validation import FormErrors, check_localizations, length_check

ROLE_CONNECTIONS_SCOPE = "role_connections.write"
MAX_RECORDS = 5
_KEY = re.compile(r"^[a-z0-9_]{1,50}$")
_INTEGER = re.compile(r"^-?[0-9]{1,19}$")
INTEGER_TYPES, DATETIME_TYPES, BOOLEAN_TYPES = {1, 2, 3, 4}, {5, 6}, {7, 8}
_CONNECTION_BUCKET = bucket_of("/users/@me/applications/{app}/role-connection")

Fault = Callable[[EmulatorState, str], Awaitable[Response[Any] | None]]


def _over_global_limit(state: EmulatorState, user: str) -> Response[Any] | None:
    """The global 429 of a user whose own token met Discord's global limit, until it resets."""
    ends = state.globally_limited.get(user)
    if ends is None:
        return None
    left = ends - time.monotonic()
    if left <= 0:
        del state.globally_limited[user]
        return None
    return globally_limited(round(left, 3))


def _seconds_asked(data: dict[str, Any]) -> float | None:
    """A test's ``{"seconds": s}``, 0 to 3600 (``None``: not that)."""
    seconds = data.get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return None
    return float(seconds) if 0 < seconds < 3600 else None  # NaN is not


def _invalid_form(errors: dict[str, Any]) -> Response[Any]:
    """Discord's 50035 with the error tree it sends (``{"field": {"_errors": [...]}}``)."""
    return Response(
        {"code": 50035, "message": "Invalid Form Body", "errors": errors}, status_code=400
    )


def _problem(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


def _text_problem(value: Any, low: int, high: int) -> dict[str, Any] | None:
    if not isinstance(value, str):
        return _problem("MODEL_TYPE_CONVERT", "Could not interpret the value as string.")
    if not low <= len(value) <= high:
        return _problem("BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")
    return None


def _record_problems(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        return _problem("MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
    found: dict[str, Any] = {}
    kind = record.get("type")
    if type(kind) is not int or not 1 <= kind <= 8:
        found["type"] = _problem(
            "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5, 6, 7, 8}."
        )
    key = record.get("key")
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        found["key"] = _problem(
            "APPLICATION_ROLE_CONNECTIONS_METADATA_KEY_INVALID",
            "Key must be 1-50 characters of a-z, 0-9 or _.",
        )
    for field, high in (("name", 100), ("description", 200)):
        if (problem := _text_problem(record.get(field), 1, high)) is not None:
            found[field] = problem
    for field, high in (("name_localizations", 100), ("description_localizations", 200)):
        # Keys among Discord's locales, values (or null) of the translated field's lengths.
        errors = FormErrors()
        check_localizations(errors, (), record.get(field), length_check(1, high))
        if errors:
            found[field] = errors.tree
    return found


def metadata_problems(body: Any) -> dict[str, Any] | None:
    """What Discord would say about a metadata records body, or ``None`` when it takes it."""
    if not isinstance(body, list):
        return _problem("MODEL_TYPE_CONVERT", "Only iterables may be used in a ListType")
    if len(body) > MAX_RECORDS:
        return _problem("BASE_TYPE_MAX_LENGTH", f"Must be {MAX_RECORDS} or fewer in length.")
    found: dict[str, Any] = {}
    seen: set[str] = set()
    for index, record in enumerate(body):
        problems = _record_problems(record)
        key = record.get("key") if isinstance(record, dict) else None
        if not problems and key in seen:
            problems = {
                "key": _problem(
                    "APPLICATION_ROLE_CONNECTIONS_METADATA_DUPLICATE_KEY", "Keys must be unique."
                )
            }
        if isinstance(key, str):
            seen.add(key)
        if problems:
            found[str(index)] = problems
    return found or None


def _as_value(value: Any) -> Any:
    """A metadata value as Discord reads it: a JSON integer is taken as its decimal string
    (Discord's own Linked Roles sample pushes ``{"cookieseaten": 1483, "allergictonuts": 0}``
    and Discord answers the values as strings); anything else stays as sent."""
    return str(value) if type(value) is int else value


def _value_problem(kind: int, value: Any) -> dict[str, Any] | None:
    value = _as_value(value)
    if not isinstance(value, str):
        return _problem("MODEL_TYPE_CONVERT", "Could not interpret the value as string.")
    if not 1 <= len(value) <= 100:  # Discord's spec: minLength 1, maxLength 100
        return _problem("BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    if kind in INTEGER_TYPES and not (_INTEGER.fullmatch(value) and abs(int(value)) < 2**63):
        return _problem("NUMBER_TYPE_COERCE", f"Value {value!r} is not int.")
    if kind in BOOLEAN_TYPES and value not in ("0", "1"):
        return _problem("NUMBER_TYPE_COERCE", f"Value {value!r} is not a boolean (1 or 0).")
    if kind in DATETIME_TYPES:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return _problem("DATE_TYPE_PARSE", f"Could not parse {value!r}. Should be ISO8601.")
    return None


def connection_problems(state: EmulatorState, body: Any) -> dict[str, Any] | None:
    """What Discord would say about a role connection body (checked against the records the
    application registered), or ``None``."""
    if not isinstance(body, dict):
        return _problem("MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
    found: dict[str, Any] = {}
    for field, high in (("platform_name", 50), ("platform_username", 100)):
        value = body.get(field)
        if value is not None and (problem := _text_problem(value, 0, high)) is not None:
            found[field] = problem
    metadata = body.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        found["metadata"] = _problem("MODEL_TYPE_CONVERT", "Must be a dictionary.")
        return found
    types = {r["key"]: r["type"] for r in state.role_metadata}
    wrong: dict[str, Any] = {}
    for key, value in metadata.items():
        if key not in types:
            wrong[key] = _problem(
                "APPLICATION_ROLE_CONNECTIONS_METADATA_KEY_UNKNOWN",
                f"Unknown metadata key {key!r}: it is not one of the application's records.",
            )
        elif (problem := _value_problem(types[key], value)) is not None:
            wrong[key] = problem
    if wrong:
        found["metadata"] = wrong
    return found or None


def _stored_record(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": record["type"],
        "key": record["key"],
        "name": record["name"],
        "name_localizations": record.get("name_localizations"),
        "description": record["description"],
        "description_localizations": record.get("description_localizations"),
    }


def _empty_connection() -> dict[str, Any]:
    return {"platform_name": None, "platform_username": None, "metadata": {}}


def updated_connection(previous: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The connection after a PUT of ``body``: a field it sends (``null`` too: nothing to
    show) takes the new value, a field it leaves out keeps the one it had. Discord lists
    every field as optional without saying that leaving one out clears it, so the emulator
    takes the reading under which a client that relies on omission clearing is caught."""
    updated = dict(previous)
    for field in ("platform_name", "platform_username"):
        if field in body:
            updated[field] = body[field]
    if "metadata" in body:
        metadata = body["metadata"] or {}
        updated["metadata"] = {key: _as_value(value) for key, value in metadata.items()}
    return updated


def role_connection_routes(  # noqa: PLR0915 - one route table
    state: EmulatorState, fault: Fault
) -> list[HTTPRouteHandler]:
    def is_bot(request: Request[Any, Any, Any]) -> bool:
        header = request.headers.get("authorization", "")
        return header.startswith("Bot ") and same_secret(header[4:], state.bot_token)

    def user_of(request: Request[Any, Any, Any]) -> str | Response[Any]:
        """The user whose live token (with role_connections.write) is presented, or the
        answer Discord gives instead."""
        header = request.headers.get("authorization", "")
        grant = state.grant_of(header[7:]) if header.startswith("Bearer ") else None
        if grant is None:
            return Response({"message": "401: Unauthorized", "code": 0}, status_code=401)
        if ROLE_CONNECTIONS_SCOPE not in grant.scopes:
            return Response({"message": "Missing Access", "code": 50001}, status_code=403)
        return grant.user_id

    def unknown_application() -> Response[Any]:
        return Response({"message": "Unknown Application", "code": 10002}, status_code=404)

    @get("/api/v10/applications/{app_id:str}/role-connections/metadata", sync_to_thread=False)
    def get_metadata(request: Request[Any, Any, Any], app_id: FromPath[str]) -> Response[Any]:
        if not is_bot(request):
            return Response({"message": "401: Unauthorized", "code": 0}, status_code=401)
        if app_id != state.client_id:
            return unknown_application()
        return Response(state.role_metadata)

    @put("/api/v10/applications/{app_id:str}/role-connections/metadata")
    async def put_metadata(request: Request[Any, Any, Any], app_id: FromPath[str]) -> Response[Any]:
        data = await json_body(request)
        if not is_bot(request):
            return Response({"message": "401: Unauthorized", "code": 0}, status_code=401)
        if app_id != state.client_id:
            return unknown_application()
        if (problems := metadata_problems(data)) is not None:
            return _invalid_form(problems)
        state.role_metadata = [_stored_record(r) for r in data]
        return Response(state.role_metadata)

    @get("/api/v10/users/@me/applications/{app_id:str}/role-connection", sync_to_thread=False)
    def get_connection(request: Request[Any, Any, Any], app_id: FromPath[str]) -> Response[Any]:
        user = user_of(request)
        if isinstance(user, Response):
            return user
        if (limited := _over_global_limit(state, user)) is not None:
            return limited
        if app_id != state.client_id:
            return unknown_application()
        return Response(state.role_connections.get(user, _empty_connection()))

    @put("/api/v10/users/@me/applications/{app_id:str}/role-connection")
    async def put_connection(
        request: Request[Any, Any, Any], app_id: FromPath[str]
    ) -> Response[Any]:
        if (failure := await fault(state, "role_connection")) is not None:
            return failure
        user = user_of(request)
        if isinstance(user, Response):
            return user
        if (limited := _over_global_limit(state, user)) is not None:
            return limited
        window = Window(
            state.role_connection_limit,
            state.role_connection_limit_window,
            *state.role_connection_windows.get(user, (0.0, 0)),
        )
        limits = window.take(_CONNECTION_BUCKET)  # the user's: Discord limits per token
        state.role_connection_windows[user] = (window.ends, window.made)
        if over(limits):
            return rate_limited(limits)
        if app_id != state.client_id:
            return unknown_application()
        data = await json_body(request)
        if (problems := connection_problems(state, data)) is not None:
            answer = _invalid_form(problems)
            answer.headers.update(limits)
            return answer
        state.role_connections[user] = updated_connection(
            state.role_connections.get(user, _empty_connection()), data
        )
        return Response(state.role_connections[user], headers=limits)

    # -- test API ------------------------------------------------------------------------------

    @get("/_emulator/role-connections", sync_to_thread=False)
    def show_role_connections() -> dict[str, Any]:
        return {"metadata": state.role_metadata, "connections": state.role_connections}

    @patch("/_emulator/role-connection-limit", sync_to_thread=False)
    def role_connection_limit(data: JSONBody[dict[str, Any]]) -> Response[Any]:
        """``{"calls": int, "window": seconds}``: the push's rate limit, per user (a new
        window starts with each user's next call)."""
        asked = limit_asked(data)
        if isinstance(asked, Response):
            return asked
        calls, window = asked
        state.role_connection_limit, state.role_connection_limit_window = calls, window
        state.role_connection_windows.clear()
        return Response({"calls": calls, "window": window})

    @post("/_emulator/users/{user_id:str}/global-limit", status_code=200, sync_to_thread=False)
    def global_limit(user_id: FromPath[str], data: JSONBody[dict[str, Any]]) -> Response[Any]:
        """``{"seconds": s}``: the user's own token meets Discord's global limit for ``s``
        seconds (0 to 3600): their role connection calls are answered its 429 until then."""
        seconds = _seconds_asked(data)
        if seconds is None:
            return Response({"error": "seconds must be 0 to 3600"}, status_code=400)
        state.globally_limited[user_id] = time.monotonic() + seconds
        return Response({"seconds": seconds})

    @post("/_emulator/users/{user_id:str}/expire-tokens", status_code=200, sync_to_thread=False)
    def expire_tokens(user_id: FromPath[str]) -> dict[str, int]:
        return {"expired": state.expire_tokens(user_id)}

    @post("/_emulator/users/{user_id:str}/deauthorize", status_code=200, sync_to_thread=False)
    def deauthorize(user_id: FromPath[str]) -> dict[str, str]:
        state.deauthorize(user_id)
        return {}

    return [
        get_metadata,
        put_metadata,
        get_connection,
        put_connection,
        show_role_connections,
        role_connection_limit,
        global_limit,
        expire_tokens,
        deauthorize,
    ]
