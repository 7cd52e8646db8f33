"""The emulator's reading of slash command options, against Discord's documented rules
(https://discord.com/developers/docs/interactions/application-commands): what a subcommand
group and a subcommand may hold, and the option fields that go with ``choices``."""

from __future__ import annotations

from typing import Any

import pytest

from entrypoints.emulator.validation import check_commands


def slash(*options: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": 1, "name": "tasks", "description": "d", "options": list(options)}]


def sub(name: str, *options: dict[str, Any]) -> dict[str, Any]:
    return {"type": 1, "name": name, "description": "d", "options": list(options)}


def group(name: str, *options: dict[str, Any]) -> dict[str, Any]:
    return {"type": 2, "name": name, "description": "d", "options": list(options)}


def text(name: str, **fields: Any) -> dict[str, Any]:
    return {"type": 3, "name": name, "description": "d", **fields}


def refused_at(body: list[dict[str, Any]], *path: str | int) -> list[str]:
    tree = check_commands(body, guild=False).tree
    node = tree.get("0", {})
    for key in path:
        node = node.get(str(key), {})
    return [e["code"] for e in node.get("_errors", [])]


@pytest.mark.parametrize(
    "body",
    [
        slash(sub("add", text("title")), sub("list")),
        slash(group("user", sub("get", text("who")), sub("edit")), group("role", sub("get"))),
        slash(group("user", sub("get")), sub("list")),
        slash(text("title", required=True), text("note")),
    ],
    ids=["subcommands", "groups-of-subcommands", "a-group-and-a-subcommand", "parameters"],
)
def test_the_nestings_discord_documents_as_valid_are_taken(body: list[dict[str, Any]]) -> None:
    assert not check_commands(body, guild=False)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (slash(sub("add", sub("inner"))), ("options", 0, "options", 0, "type")),
        (slash(sub("add", group("inner", sub("x")))), ("options", 0, "options", 0, "type")),
        (slash(group("user", text("who"))), ("options", 0, "options", 0, "type")),
        (slash(group("user", group("inner", sub("x")))), ("options", 0, "options", 0, "type")),
        (slash(sub("add"), text("title")), ("options", 1, "type")),
        (slash(text("title"), group("user", sub("get"))), ("options", 1, "type")),
    ],
    ids=[
        "subcommand-in-a-subcommand",
        "group-in-a-subcommand",
        "parameter-in-a-group",
        "group-in-a-group",
        "parameter-next-to-a-subcommand",
        "group-next-to-a-parameter",
    ],
)
def test_nestings_discord_refuses_are_refused_naming_the_option(
    body: list[dict[str, Any]], path: tuple[str | int, ...]
) -> None:
    """ "A group's nested options are its subcommands, a subcommand's its parameters" and
    "that is the only kind of nesting supported": the emulator took a subcommand inside a
    subcommand, a parameter inside a group, and parameters next to subcommands."""
    assert refused_at(body, *path)


AUTOCOMPLETE, VALUE = ("autocomplete",), ("choices", 0, "value")


def choice(value: object) -> dict[str, Any]:
    return {"name": "a choice", "value": value}


@pytest.mark.parametrize(
    ("option", "path"),
    [
        (text("title", autocomplete=True, choices=[choice("a")]), AUTOCOMPLETE),
        ({"type": 5, "name": "flag", "description": "d", "autocomplete": True}, AUTOCOMPLETE),
        (text("title", choices=[choice(1)]), VALUE),
        ({"type": 4, "name": "n", "description": "d", "choices": [choice("1")]}, VALUE),
        ({"type": 4, "name": "n", "description": "d", "choices": [choice(1.5)]}, VALUE),
        ({"type": 4, "name": "n", "description": "d", "choices": [choice(True)]}, VALUE),
        ({"type": 4, "name": "n", "description": "d", "choices": [choice(2**53)]}, VALUE),
        ({"type": 10, "name": "n", "description": "d", "choices": [choice("1.5")]}, VALUE),
    ],
    ids=[
        "autocomplete-with-choices",
        "autocomplete-on-a-boolean",
        "number-choice-of-a-string-option",
        "string-choice-of-an-integer-option",
        "fraction-choice-of-an-integer-option",
        "boolean-choice-of-an-integer-option",
        "integer-choice-beyond-2-53",
        "string-choice-of-a-number-option",
    ],
)
def test_choices_and_autocomplete_discord_refuses_are_refused(
    option: dict[str, Any], path: tuple[str | int, ...]
) -> None:
    """ "autocomplete may not be set to true if choices are present", autocomplete is for
    STRING, INTEGER and NUMBER options, and a choice's value is of its option's type."""
    assert refused_at(slash(option), "options", 0, *path)


@pytest.mark.parametrize(
    "option",
    [
        text("title", autocomplete=True),
        text("title", choices=[choice("a")]),
        {"type": 4, "name": "n", "description": "d", "choices": [choice(-(2**53) + 1)]},
        {"type": 10, "name": "n", "description": "d", "choices": [choice(1), choice(0.5)]},
        {"type": 10, "name": "n", "description": "d", "autocomplete": True},
    ],
    ids=["autocomplete", "string-choice", "lowest-integer", "numbers", "number-autocomplete"],
)
def test_choices_and_autocomplete_discord_takes_are_taken(option: dict[str, Any]) -> None:
    assert not check_commands(slash(option), guild=False)
