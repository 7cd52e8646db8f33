"""The emulator's reading of message bodies, against Discord's documented rules
(https://discord.com/developers/docs/resources/message, .../interactions/receiving-and-
responding): what it refused nowhere."""

from __future__ import annotations

from typing import Any

import pytest

from entrypoints.emulator.validation import check_command_response, check_interaction_response


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


# -- the answers each kind of interaction takes ------------------------------------------------

COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 3, 4, 5
ANSWERS = {
    1: {"type": 1},
    4: reply(),
    5: {"type": 5, "data": {"flags": 64}},
    6: {"type": 6},
    7: {"type": 7, "data": {"content": "Updated"}},
    8: {"type": 8, "data": {"choices": [{"name": "Alice", "value": "al"}]}},
    9: {
        "type": 9,
        "data": {
            "custom_id": "form",
            "title": "A form",
            "components": [
                {
                    "type": 1,
                    "components": [{"type": 4, "custom_id": "name", "label": "Name", "style": 1}],
                }
            ],
        },
    },
    10: {"type": 10},
}
TAKEN = {
    (COMPONENT, False): {4, 5, 6, 7, 9},
    (MODAL_SUBMIT, False): {4, 5},
    (MODAL_SUBMIT, True): {4, 5, 6, 7},  # a modal a component opened: its message can update
    (AUTOCOMPLETE, False): {8},
}


@pytest.mark.parametrize(
    ("interaction", "on_message", "answer"),
    [(i, m, a) for (i, m), taken in TAKEN.items() for a in sorted(taken)],
)
def test_each_kind_of_interaction_takes_its_own_answers(
    interaction: int, on_message: bool, answer: int
) -> None:
    assert check_interaction_response(ANSWERS[answer], interaction, on_message=on_message) is None


@pytest.mark.parametrize(
    ("interaction", "on_message", "answer"),
    [(i, m, a) for (i, m), taken in TAKEN.items() for a in sorted(set(ANSWERS) - taken)],
)
def test_an_answer_of_a_type_discord_does_not_take_there_is_refused(
    interaction: int, on_message: bool, answer: int
) -> None:
    """The emulator judged every answer as a slash command's: a button answered with an
    autocomplete's choices, or an autocomplete with a message (what Discord refuses), went
    through; an update of the button's message (type 7) was refused."""
    refused = check_interaction_response(ANSWERS[answer], interaction, on_message=on_message)
    assert refused is not None
    assert refused[0] == 400
    assert errors_at(refused[1], "type") == ["BASE_TYPE_CHOICES"]


def test_a_slash_command_still_takes_only_its_own_answers() -> None:
    for answer in (4, 5, 9):
        assert check_command_response(ANSWERS[answer]) is None
    for answer in (1, 6, 7, 8, 10):
        assert check_command_response(ANSWERS[answer]) is not None


@pytest.mark.parametrize(
    "data", [None, {}, {"choices": None}, {"choices": [{"name": "x", "value": "x"}] * 26}]
)
def test_an_autocomplete_answer_needs_a_list_of_at_most_25_choices(data: Any) -> None:
    refused = check_interaction_response({"type": 8, "data": data}, AUTOCOMPLETE)
    assert refused is not None
    assert errors_at(refused[1], "data", "choices")
