"""The emulator's reading of message bodies, against Discord's documented rules
(https://discord.com/developers/docs/resources/message, .../interactions/receiving-and-
responding): what it refused nowhere."""

from __future__ import annotations

from typing import Any

import pytest

from entrypoints.emulator.validation import check_command_response


def reply(**data: Any) -> dict[str, Any]:
    return {"type": 4, "data": {"content": "Hello <@1234>", "flags": 64, **data}}


def errors_at(body: dict[str, Any], *path: str | int) -> list[str]:
    assert body["code"] == 50035, body
    node = body["errors"]
    for key in path:
        node = node[str(key)]
    return [e["code"] for e in node["_errors"]]


@pytest.mark.parametrize(
    ("mentions", "path"),
    [
        ({"users": ["alice"]}, ("users", 0)),
        ({"roles": ["1234", "<@&5678>"]}, ("roles", 1)),
        ({"users": [None]}, ("users", 0)),
        ({"users": [-5]}, ("users", 0)),
        ({"parse": [], "replied_user": "yes"}, ("replied_user",)),
        ({"parse": "users"}, ("parse",)),
        ({"parse": ""}, ("parse",)),
        ({"parse": 0}, ("parse",)),
        ({"parse": False}, ("parse",)),
        ({"parse": {}}, ("parse",)),
    ],
    ids=[
        "user-name",
        "role-mention",
        "null-user",
        "negative-id",
        "replied-user-text",
        "parse-text",
        "parse-empty-text",
        "parse-zero",
        "parse-false",
        "parse-object",
    ],
)
def test_allowed_mentions_of_the_wrong_kind_are_refused(
    mentions: dict[str, Any], path: tuple[str | int, ...]
) -> None:
    """``users`` and ``roles`` are "array of snowflakes", ``parse`` an array of mention
    types, ``replied_user`` a boolean: the emulator took anything in them (a ``parse`` that
    was falsy, as ``""``, ``0``, ``false`` or ``{}``, read as none), where Discord answers
    50035."""
    refused = check_command_response(reply(allowed_mentions=mentions))
    assert refused is not None
    assert errors_at(refused[1], "data", "allowed_mentions", *path)


@pytest.mark.parametrize(
    "mentions",
    [
        {"parse": []},
        {"parse": None},  # nullable in Discord's OpenAPI spec: as if left out
        {"users": ["1234", 5678], "roles": []},
        {"parse": ["users", "roles"], "users": []},
        {"parse": ["everyone"], "users": None, "replied_user": False},
    ],
)
def test_allowed_mentions_discord_takes_are_taken(mentions: dict[str, Any]) -> None:
    assert check_command_response(reply(allowed_mentions=mentions)) is None
