"""The emulator refuses what Discord refuses, in Discord's words (50035 Invalid Form Body naming
the field): command definitions, interaction responses, webhook edits and follow-ups. A lenient
emulator would hide the bugs that real Discord shows; these tests run it in-process."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import Mock

import hikari
import pytest
from litestar.testing import AsyncTestClient

from entrypoints.emulator import EmulatorState, create_emulator_app
from entrypoints.emulator.bot_api import take_http_answer, with_component_ids
from entrypoints.emulator.state import (
    INTERACTION_TOKEN_LIFETIME,
    TEST_GUILD_ID,
    Guild,
    Interaction,
)
from entrypoints.emulator.validation import (
    chat_input_name_ok,
    check_command_response,
    check_commands,
    check_webhook_message,
)
from entrypoints.web.avatars import Avatars
from tests.web_support import Client

APP_ID = "1200000000000000042"
LINK = {"type": 2, "style": 5, "label": "Open", "url": "https://link.example/link/abc"}


def command(**changes: Any) -> dict[str, Any]:
    """What hikari sends for a slash command, with ``changes`` (``None``: leave it out)."""
    body: dict[str, Any] = {
        "type": 1,
        "name": "link",
        "description": "Link your Discord account",
        "options": [],
        "contexts": [0, 1],
        "integration_types": [0],
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def reply(**data: Any) -> dict[str, Any]:
    return {"type": 4, "data": {"content": "Hello", "flags": 64, **data}}


TEXT = {"type": 10, "content": "Hello"}  # a text display


def v2(**data: Any) -> dict[str, Any]:
    """A reply made of components (IS_COMPONENTS_V2): no content."""
    return {"type": 4, "data": {"flags": 64 | 32768, "components": [TEXT], **data}}


def modal(**data: Any) -> dict[str, Any]:
    label = {"type": 18, "label": "Name", "component": {"type": 4, "custom_id": "n", "style": 1}}
    return {
        "type": 9,
        "data": {"custom_id": "ask", "title": "Your name", "components": [label], **data},
    }


def errors_at(body: dict[str, Any], *path: str | int) -> list[str]:
    """The error codes Discord's 50035 body lists at ``path``."""
    assert body["code"] == 50035, body
    assert body["message"] == "Invalid Form Body"
    node = body["errors"]
    for key in path:
        node = node[str(key)]
    return [e["code"] for e in node["_errors"]]


# -- command names and definitions ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["link", "who-am_i", "l", "x" * 32, "ссылка", "リンク", "वर्तमान", "dont's", "4chan"]
)
def test_slash_command_names_discord_accepts(name: str) -> None:
    assert chat_input_name_ok(name)


@pytest.mark.parametrize(
    "name", ["Link", "LINK", "", "x" * 33, "who am i", "link!", "/link", "Ссылка", "link\n"]
)
def test_slash_command_names_discord_refuses(name: str) -> None:
    assert not chat_input_name_ok(name)
    assert check_commands([command(name=name)], guild=False)


def test_a_refused_definition_names_the_command_and_the_field() -> None:
    body = check_commands([command(), command(name="Whoami")], guild=False).body()
    assert errors_at(body, 1, "name") == ["APPLICATION_COMMAND_INVALID_NAME"]
    assert "0" not in body["errors"]


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"description": ""}, ("description",)),
        ({"description": "d" * 101}, ("description",)),
        (
            {"options": [{"type": 3, "name": f"o{n}", "description": "d"} for n in range(26)]},
            ("options",),
        ),
        ({"options": [{"type": 3, "name": "Opt", "description": "d"}]}, ("options", 0, "name")),
        (
            {
                "options": [
                    {"type": 3, "name": "a", "description": "d"},
                    {"type": 3, "name": "b", "description": "d", "required": True},
                ]
            },
            ("options", 1, "required"),
        ),
        ({"contexts": [0, 3]}, ("contexts", 1)),
        ({"contexts": []}, ("contexts",)),
        ({"integration_types": [2]}, ("integration_types", 0)),
        ({"type": 2, "description": "user commands have none"}, ("description",)),
        ({"name_localizations": {"fr": "Lier"}}, ("name_localizations", "fr")),
        ({"name_localizations": {"fr": "x" * 33}}, ("name_localizations", "fr")),
        ({"name_localizations": {"xx": "lier"}}, ("name_localizations", "xx")),
        ({"description_localizations": {"de": ""}}, ("description_localizations", "de")),
        ({"description_localizations": ["de"]}, ("description_localizations",)),
    ],
    ids=[
        "empty-description",
        "long-description",
        "26-options",
        "upper-case-option",
        "required-after-optional",
        "unknown-context",
        "no-contexts",
        "unknown-install",
        "user-command-description",
        "upper-case-translated-name",
        "long-translated-name",
        "unknown-locale",
        "empty-translated-description",
        "translations-not-a-dictionary",
    ],
)
def test_invalid_definitions_are_refused_where_they_are_wrong(
    changes: dict[str, Any], path: tuple[str | int, ...]
) -> None:
    errors = check_commands([command(**changes)], guild=False)
    assert errors_at(errors.body(), 0, *path)


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"options": 7}, ("options",)),
        (
            {"options": [{"type": 3, "name": "o", "description": "d", "choices": 5}]},
            ("options", 0, "choices"),
        ),
        (
            {"options": [{"type": 1, "name": "s", "description": "d", "options": 7}]},
            ("options", 0, "options"),
        ),
        ({"name": ["link"]}, ("name",)),
        ({"type": [1]}, ("type",)),
    ],
    ids=[
        "options-not-an-array",
        "choices-not-an-array",
        "sub-options-not-an-array",
        "name-an-array",
        "type-an-array",
    ],
)
def test_definitions_of_the_wrong_shape_are_refused_not_a_crash(
    changes: dict[str, Any], path: tuple[str | int, ...]
) -> None:
    """The emulator answered 500 to these (counting the size of options that are not a
    list, or a name that is a list as a duplicate; helper-78's review)."""
    errors = check_commands([command(**changes), command(name="whoami")], guild=False)
    assert errors_at(errors.body(), 0, *path)


def test_context_menu_commands_may_have_spaces_and_capitals() -> None:
    assert not check_commands([{"type": 2, "name": "Show TaskFlow account"}], guild=False)


def test_duplicate_names_and_oversized_commands_are_refused() -> None:
    body = check_commands([command(), command()], guild=False).body()
    assert errors_at(body, 1, "name") == ["APPLICATION_COMMANDS_DUPLICATE_NAME"]
    options = [
        {
            "type": 3,
            "name": f"o{n}",
            "description": "d" * 100,
            "choices": [{"name": "c" * 100, "value": "v" * 100} for _ in range(25)],
        }
        for n in range(25)
    ]
    body = check_commands([command(options=options)], guild=False).body()
    assert "APPLICATION_COMMAND_TOO_LARGE" in errors_at(body, 0)


def test_dm_contexts_are_for_global_commands_only() -> None:
    assert not check_commands([command(contexts=[0, 1])], guild=False)
    body = check_commands([command(contexts=[0, 1])], guild=True).body()
    assert errors_at(body, 0, "contexts") == ["APPLICATION_COMMAND_CONTEXTS_GUILD_ONLY"]
    # Without DMs, a server's command may say GUILD, or nothing (integration_types is ignored).
    assert not check_commands([command(contexts=[0])], guild=True)
    assert not check_commands([command(contexts=None, integration_types=None)], guild=True)


# -- messages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("components", "flags", "path"),
    [
        ([{"type": 1, "id": 7, "components": [{**LINK, "id": 7}]}], 64, ("components", 0)),
        (
            [TEXT | {"id": 3}, {"type": 17, "components": [TEXT | {"id": 3}]}],
            64 | 32768,
            ("components", 1, "components", 0),
        ),
        ([{"type": 1, "components": [{**LINK, "id": -1}]}], 64, ("components", 0)),
        ([{"type": 1, "components": [{**LINK, "id": 2**31}]}], 64, ("components", 0)),
        ([{"type": 1, "components": [{**LINK, "id": "2"}]}], 64, ("components", 0)),
        ([{"type": 1, "components": [{**LINK, "id": True}]}], 64, ("components", 0)),
    ],
    ids=["row-and-button", "nested-in-a-container", "negative", "beyond-int32", "text", "bool"],
)
def test_component_ids_must_be_unique_32_bit_integers(
    components: list[Any], flags: int, path: tuple[str | int, ...]
) -> None:
    """A component's ``id`` is a 32-bit integer of 0 or more, unique within the message
    (components reference: "The id must be unique within the message"; the API spec's
    int32, minimum 0); 0 counts as none (Discord numbers it)."""
    body: dict[str, Any] = {"flags": flags, "components": components}
    if not flags & 32768:
        body["content"] = "Hello"
    refused = check_command_response({"type": 4, "data": body})
    assert refused is not None
    assert refused[1]["code"] == 50035
    node = refused[1]["errors"]["data"]
    for key in path:
        node = node[str(key)]
    assert node, refused


def test_component_ids_of_zero_or_unique_are_taken() -> None:
    row = {"type": 1, "id": 0, "components": [{**LINK, "id": 0}, {**LINK, "id": 2**31 - 1}]}
    assert check_command_response(reply(components=[row])) is None


PREMIUM = {"type": 2, "style": 6, "sku_id": "1200000000000000099"}


@pytest.mark.parametrize(
    ("button", "field"),
    [
        (PREMIUM | {"custom_id": "buy"}, "custom_id"),
        (PREMIUM | {"label": "Buy"}, "label"),
        (PREMIUM | {"url": "https://link.example"}, "url"),
        (PREMIUM | {"emoji": {"name": "🛒"}}, "emoji"),
        (LINK | {"sku_id": "1200000000000000099"}, "sku_id"),
        ({"type": 2, "style": 1, "custom_id": "a", "label": "A", "sku_id": "1"}, "sku_id"),
    ],
    ids=["premium-custom-id", "premium-label", "premium-url", "premium-emoji", "link", "primary"],
)
def test_premium_buttons_and_others_keep_to_their_own_fields(
    button: dict[str, Any], field: str
) -> None:
    """Components reference: "Premium buttons must contain a sku_id, and cannot have a
    custom_id, label, url, or emoji"; other buttons cannot have a sku_id."""
    refused = check_command_response(reply(components=[{"type": 1, "components": [button]}]))
    assert refused is not None
    assert errors_at(refused[1], "data", "components", 0, "components", 0, field)
    assert check_command_response(reply(components=[{"type": 1, "components": [PREMIUM]}])) is None


def test_a_valid_reply_is_taken() -> None:
    assert check_command_response(reply(components=[{"type": 1, "components": [LINK]}])) is None
    assert check_command_response({"type": 5, "data": {"flags": 64}}) is None
    assert check_command_response(modal()) is None
    container = {"type": 17, "components": [TEXT, {"type": 14}, {"type": 1, "components": [LINK]}]}
    assert check_command_response(v2(components=[TEXT, container])) is None


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (reply(content="x" * 2001), ("data", "content")),
        (reply(flags=64 | 2), ("data", "flags")),
        ({"type": 5, "data": {"flags": 4}}, ("data", "flags")),
        ({"type": 7, "data": {"content": "x"}}, ("type",)),
        (reply(components=[LINK]), ("data", "components", 0, "type")),
        (
            reply(components=[{"type": 1, "components": []}]),
            ("data", "components", 0, "components"),
        ),
        (
            reply(components=[{"type": 1, "components": [LINK] * 6}]),
            ("data", "components", 0, "components"),
        ),
        (reply(components=[{"type": 1, "components": [LINK]}] * 6), ("data", "components")),
        (
            reply(components=[{"type": 1, "components": [LINK | {"url": "ftp://x.example/"}]}]),
            ("data", "components", 0, "components", 0, "url"),
        ),
        (
            reply(
                components=[
                    {"type": 1, "components": [LINK | {"url": "https://x.example/" + "a" * 500}]}
                ]
            ),
            ("data", "components", 0, "components", 0, "url"),
        ),
        (
            reply(components=[{"type": 1, "components": [LINK | {"label": "l" * 81}]}]),
            ("data", "components", 0, "components", 0, "label"),
        ),
        (
            reply(components=[{"type": 1, "components": [LINK | {"custom_id": "x"}]}]),
            ("data", "components", 0, "components", 0, "custom_id"),
        ),
        (
            reply(components=[{"type": 1, "components": [{"type": 2, "style": 1, "label": "x"}]}]),
            ("data", "components", 0, "components", 0, "custom_id"),
        ),
        (
            reply(
                components=[
                    {
                        "type": 1,
                        "components": [
                            {"type": 2, "style": 1, "label": "x", "custom_id": "c" * 101}
                        ],
                    }
                ]
            ),
            ("data", "components", 0, "components", 0, "custom_id"),
        ),
        (
            reply(
                components=[
                    {
                        "type": 1,
                        "components": [
                            {"type": 2, "style": 1, "label": "a", "custom_id": "same"},
                            {"type": 2, "style": 2, "label": "b", "custom_id": "same"},
                        ],
                    }
                ]
            ),
            ("data", "components", 0, "components", 1, "custom_id"),
        ),
        (
            reply(allowed_mentions={"parse": ["users"], "users": ["1"]}),
            ("data", "allowed_mentions", "parse"),
        ),
        ({"type": 9}, ("data",)),
        ({"type": 9, "data": {}}, ("data", "custom_id")),
        (modal(title="t" * 46), ("data", "title")),
        (modal(title=""), ("data", "title")),
        (modal(custom_id="c" * 101), ("data", "custom_id")),
        (modal(components=[]), ("data", "components")),
        (modal(components=[TEXT] * 6), ("data", "components")),
        (modal(components=[{"type": 2}]), ("data", "components", 0, "type")),
        ({"type": 12}, ("type",)),
        (v2(content="Hello"), ("data", "content")),
        (v2(embeds=[{"title": "t"}]), ("data", "embeds")),
        (v2(components=[{"type": 999}]), ("data", "components", 0, "type")),
        (v2(components=[{"type": 2, "style": 1}]), ("data", "components", 0, "type")),
        (
            v2(components=[{"type": 17, "components": [{"type": 17, "components": [TEXT]}]}]),
            ("data", "components", 0, "components", 0, "type"),
        ),
        (
            v2(components=[{"type": 1, "components": [LINK] * 6}]),
            ("data", "components", 0, "components"),
        ),
        (
            v2(components=[{"type": 17, "components": [{"type": 1, "components": []}]}]),
            ("data", "components", 0, "components", 0, "components"),
        ),
        (v2(components=[TEXT] * 41), ("data", "components")),
    ],
    ids=[
        "content-2001",
        "flag-not-allowed",
        "deferred-flag",
        "component-only-type",
        "button-outside-row",
        "empty-row",
        "6-buttons",
        "6-rows",
        "ftp-url",
        "513-char-url",
        "81-char-label",
        "link-with-custom-id",
        "button-without-custom-id",
        "101-char-custom-id",
        "duplicate-custom-id",
        "mentions-both-ways",
        "modal-without-data",
        "modal-empty",
        "modal-46-char-title",
        "modal-empty-title",
        "modal-101-char-custom-id",
        "modal-no-components",
        "modal-6-components",
        "modal-button",
        "activity-without-activities",
        "v2-with-content",
        "v2-with-embeds",
        "v2-unknown-type",
        "v2-top-level-button",
        "v2-container-in-container",
        "v2-6-buttons",
        "v2-empty-row-in-container",
        "v2-41-components",
    ],
)
def test_malformed_replies_are_refused_naming_the_field(
    body: dict[str, Any], path: tuple[str | int, ...]
) -> None:
    refused = check_command_response(body)
    assert refused is not None
    status, error = refused
    assert status == 400
    assert errors_at(error, *path)


FIELD = {"name": "n", "value": "v"}


@pytest.mark.parametrize(
    ("embeds", "path", "code"),
    [
        ([{"title": "t" * 257}], ("data", "embeds", 0, "title"), "BASE_TYPE_MAX_LENGTH"),
        ([{"description": "d" * 4097}], ("data", "embeds", 0, "description"), None),
        ([{"fields": [FIELD] * 26}], ("data", "embeds", 0, "fields"), "BASE_TYPE_MAX_LENGTH"),
        (
            [{"fields": [FIELD, {"name": "n" * 257, "value": "v"}]}],
            ("data", "embeds", 0, "fields", 1, "name"),
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            [{"fields": [{"name": "n", "value": "v" * 1025}]}],
            ("data", "embeds", 0, "fields", 0, "value"),
            "BASE_TYPE_MAX_LENGTH",
        ),
        ([{"fields": [{"name": "n"}]}], ("data", "embeds", 0, "fields", 0, "value"), None),
        ([{"fields": [{"value": "v"}]}], ("data", "embeds", 0, "fields", 0, "name"), None),
        ([{"footer": {"text": "f" * 2049}}], ("data", "embeds", 0, "footer", "text"), None),
        (
            [{"footer": {"icon_url": "https://x.example/a.png"}}],
            ("data", "embeds", 0, "footer", "text"),
            None,
        ),
        ([{"author": {"name": "a" * 257}}], ("data", "embeds", 0, "author", "name"), None),
        (
            [{"author": {"url": "https://x.example/"}}],
            ("data", "embeds", 0, "author", "name"),
            None,
        ),
        (
            [{"title": "ok"}, {"description": "d" * 4000}, {"description": "d" * 1999}],
            ("data", "embeds"),
            "MAX_EMBED_SIZE_EXCEEDED",
        ),
        (
            [{"fields": [{"name": "n" * 250, "value": "v" * 1000}] * 5}],
            ("data", "embeds"),
            "MAX_EMBED_SIZE_EXCEEDED",
        ),
        (["not an embed"], ("data", "embeds", 0), "MODEL_TYPE_CONVERT"),
        ([{"fields": "n"}], ("data", "embeds", 0, "fields"), None),
        ([{"fields": ["n"]}], ("data", "embeds", 0, "fields", 0), "MODEL_TYPE_CONVERT"),
        ([{"footer": "f"}], ("data", "embeds", 0, "footer"), "MODEL_TYPE_CONVERT"),
    ],
    ids=[
        "title-257",
        "description-4097",
        "26-fields",
        "field-name-257",
        "field-value-1025",
        "field-without-value",
        "field-without-name",
        "footer-2049",
        "footer-without-text",
        "author-name-257",
        "author-without-name",
        "6000-in-all-embeds",
        "6000-in-one-embed",
        "embed-not-an-object",
        "fields-not-a-list",
        "field-not-an-object",
        "footer-not-an-object",
    ],
)
def test_embeds_beyond_discords_limits_are_refused_naming_the_field(
    embeds: list[Any], path: tuple[str | int, ...], code: str | None
) -> None:
    """An embed's limits (https://discord.com/developers/docs/resources/message#embed-object-
    embed-limits): title 256, description 4096, 25 fields of name 256 and value 1024, footer
    2048, author name 256, and 6000 characters over all of those in all the message's embeds
    (Discord's MAX_EMBED_SIZE_EXCEEDED on ``embeds``). The emulator only counted embeds."""
    refused = check_command_response(reply(embeds=embeds))
    assert refused is not None
    assert refused[0] == 400
    codes = errors_at(refused[1], *path)
    assert code is None or code in codes, codes
    follow_up = check_webhook_message({"embeds": embeds})
    assert follow_up is not None
    assert errors_at(follow_up[1], *path[1:]) == codes


def test_embeds_at_discords_limits_are_taken() -> None:
    full = {
        "title": "t" * 256,
        "description": "d" * 1000,
        "fields": [{"name": "n" * 10, "value": "v" * 10, "inline": True}] * 25,
        "footer": {"text": "f" * 2048, "icon_url": "https://x.example/f.png"},
        "author": {"name": "a" * 256},
        "color": 0x5865F2,
    }
    assert sum(map(len, ("t" * 256, "d" * 1000, "f" * 2048, "a" * 256))) + 25 * 20 == 4060
    second = {"description": "d" * 1940}  # 6000 characters in all: the limit, not beyond
    assert check_command_response(reply(embeds=[full, second])) is None
    assert check_webhook_message({"embeds": [full, second]}, current={"content": "Hi"}) is None


def test_a_custom_id_is_unique_within_a_modal_too() -> None:
    """Discord refuses a modal whose text inputs (or selects) share a custom_id, as it does a
    message's buttons; the emulator did not look inside a modal's labels and rows."""

    def text_input(custom_id: str) -> dict[str, Any]:
        return {"type": 4, "custom_id": custom_id, "style": 1}

    labelled = [
        {"type": 18, "label": "First", "component": text_input("name")},
        {"type": 18, "label": "Second", "component": text_input("name")},
    ]
    refused = check_command_response(modal(components=labelled))
    assert refused is not None
    assert errors_at(refused[1], "data", "components", 1, "component", "custom_id") == [
        "COMPONENT_CUSTOM_ID_DUPLICATED"
    ]
    in_rows = [
        {"type": 1, "components": [text_input("name")]},
        {"type": 18, "label": "Again", "component": text_input("name")},
    ]
    refused = check_command_response(modal(components=in_rows))
    assert refused is not None
    assert errors_at(refused[1], "data", "components", 1, "component", "custom_id") == [
        "COMPONENT_CUSTOM_ID_DUPLICATED"
    ]
    distinct = [
        {"type": 18, "label": "First", "component": text_input("first")},
        {"type": 1, "components": [text_input("second")]},
        {"type": 18, "label": "Modal's own", "component": text_input("ask")},
    ]
    assert check_command_response(modal(components=distinct)) is None  # the modal's id apart


def test_a_sections_button_shares_the_messages_custom_ids() -> None:
    """In an IS_COMPONENTS_V2 message a section's accessory button is one of the message's
    components: its custom_id is unique with the rows' (the emulator did not look at it),
    and it is a button as any other (a custom_id, a label or an emoji)."""
    button = {"type": 2, "style": 1, "label": "Go", "custom_id": "same"}
    section = {"type": 9, "components": [TEXT], "accessory": button}
    for components, where in (
        ([section, {"type": 1, "components": [button]}], (1, "components", 0)),
        ([section, section], (1, "accessory")),
        ([{"type": 17, "components": [section]}, section], (1, "accessory")),
    ):
        refused = check_command_response(v2(components=components))
        assert refused is not None, components
        assert errors_at(refused[1], "data", "components", *where, "custom_id") == [
            "COMPONENT_CUSTOM_ID_DUPLICATED"
        ]
    unlabelled = section | {"accessory": {"type": 2, "style": 1, "custom_id": "go"}}
    assert check_command_response(v2(components=[unlabelled])) is not None
    other = section | {"accessory": button | {"custom_id": "other"}}
    thumbnail = {"type": 9, "components": [TEXT], "accessory": {"type": 11, "media": {}}}
    assert check_command_response(v2(components=[section, other, thumbnail])) is None


def test_an_empty_message_is_refused_with_50006() -> None:
    assert check_command_response({"type": 4, "data": {"flags": 64}}) == (
        400,
        {"code": 50006, "message": "Cannot send an empty message"},
    )
    assert check_webhook_message({"components": []}) is not None


@pytest.mark.parametrize("content", [" ", "\n", " \t\n "])
def test_content_of_whitespace_only_is_an_empty_message(content: str) -> None:
    """Discord trims the content: whitespace alone is "Cannot send an empty message" (the
    emulator took it). A zero-width space is not whitespace: that message is sent."""
    empty = (400, {"code": 50006, "message": "Cannot send an empty message"})
    assert check_command_response({"type": 4, "data": {"content": content}}) == empty
    assert check_webhook_message({"content": content}) == empty
    assert check_webhook_message({"content": content}, current={"content": "Hi"}) == empty
    assert check_command_response({"type": 4, "data": {"content": "\u200b"}}) is None


@pytest.mark.parametrize(
    ("current", "edit", "empty"),
    [
        ({"flags": 64}, {"content": "", "components": []}, True),  # "thinking…" completed empty
        ({"flags": 64}, {}, True),
        ({"flags": 64}, {"content": "Done"}, False),
        ({"content": "Hello", "flags": 64}, {"components": []}, False),  # the content stays
        ({"content": "Hello", "components": [{"type": 1}]}, {"content": ""}, False),
        ({"content": "Hello", "flags": 64}, {"content": None}, True),  # null clears it
        ({"content": "Hello"}, {"content": "", "embeds": [{"title": "t"}]}, False),
    ],
)
def test_an_edit_is_judged_by_the_message_it_leaves(
    current: dict[str, Any], edit: dict[str, Any], empty: bool
) -> None:
    """PATCH semantics: fields not sent keep their value; an edit that leaves nothing to
    show is Discord's 50006."""
    refused = check_webhook_message(edit, current=current)
    assert refused == (
        (400, {"code": 50006, "message": "Cannot send an empty message"}) if empty else None
    )


def test_a_discord_url_is_a_link_buttons_scheme() -> None:
    button = LINK | {"url": "discord://-/channels/@me"}
    assert check_command_response(reply(components=[{"type": 1, "components": [button]}])) is None


@pytest.mark.parametrize("url", ["http://[abc", "https://[::1/link", "https://]x["])
def test_a_link_url_that_cannot_be_read_is_refused_not_a_crash(url: str) -> None:
    """Python's URL parser raises on an unclosed IPv6 bracket: the emulator answered 500
    there, where Discord names the field (helper-78's review)."""
    button = LINK | {"url": url}
    refused = check_command_response(reply(components=[{"type": 1, "components": [button]}]))
    assert refused is not None
    assert errors_at(refused[1], "data", "components", 0, "components", 0, "url") == [
        "URL_TYPE_INVALID_URL"
    ]


def test_a_components_v2_message_stays_one_and_keeps_no_content() -> None:
    """The flag cannot be removed from a message: an edit without it is still judged as
    v2; turning it on, the old reply's content must be cleared (null)."""
    made_of_components = {"flags": 32768, "components": [TEXT]}
    refused = check_webhook_message({"content": "Hi"}, current=made_of_components)
    assert refused is not None
    assert errors_at(refused[1], "content") == [
        "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2"
    ]
    garbage = check_webhook_message({"components": [{"type": 999}]}, current=made_of_components)
    assert garbage is not None
    assert errors_at(garbage[1], "components", 0, "type")
    upgrade = {"flags": 32768, "components": [TEXT]}
    assert check_webhook_message(upgrade, current={"content": "Hello"}) is not None
    assert check_webhook_message(upgrade | {"content": None}, current={"content": "Hello"}) is None


def test_an_edit_ignores_the_flags_it_cannot_change_but_not_a_flags_value_of_another_kind() -> None:
    """Edit Message: "unsupported flag changes are currently ignored without error"; the
    emulator refused an edit sending EPHEMERAL, which Discord takes (and ignores)."""
    assert check_webhook_message({"content": "x", "flags": 64}, current={"content": "x"}) is None
    assert check_webhook_message({"flags": 64 | 4096 | 1}, current={"content": "x"}) is None
    refused = check_webhook_message({"flags": "64"}, current={"content": "x"})
    assert refused is not None
    assert errors_at(refused[1], "flags") == ["NUMBER_TYPE_COERCE"]
    refused = check_command_response({"type": 5, "data": {"flags": 4096}})
    assert refused is not None  # creating a message is another matter
    assert errors_at(refused[1], "data", "flags") == ["MESSAGE_FLAGS_INVALID"]


# -- over HTTP -------------------------------------------------------------------------------


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[EmulatorState, Client]]:
    state = EmulatorState(APP_ID, "secret", set(), response_deadline=60.0)
    state.interactions_url = "http://127.0.0.1:9/interactions"  # never reached here
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        client.headers["authorization"] = f"Bot {state.bot_token}"
        yield state, client


async def test_registering_an_invalid_command_gets_400_and_changes_nothing(
    emulator: tuple[EmulatorState, Client],
) -> None:
    state, client = emulator
    ok = await client.put(f"/api/v10/applications/{APP_ID}/commands", json=[command()])
    assert ok.status_code == 200
    refused = await client.put(
        f"/api/v10/applications/{APP_ID}/guilds/{TEST_GUILD_ID}/commands", json=[command()]
    )
    assert refused.status_code == 400
    assert errors_at(refused.json(), 0, "contexts")
    assert TEST_GUILD_ID not in state.commands
    assert [c["name"] for c in state.commands["global"]] == ["link"]
    assert state.refused_commands == [refused.json()]


async def test_a_bulk_overwrite_keeps_each_commands_id_by_type_and_name(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """A slash command and a user command may share a name: each keeps its own id when the
    commands are overwritten again (both took the id of the last one of that name)."""
    _, client = emulator
    url = f"/api/v10/applications/{APP_ID}/commands"
    both = [command(), {"type": 2, "name": "link"}]
    first = await client.put(url, json=both)
    again = await client.put(url, json=both)
    assert first.status_code == again.status_code == 200, again.text
    ids = [c["id"] for c in first.json()]
    assert len(set(ids)) == 2
    assert [c["id"] for c in again.json()] == ids


async def test_a_server_command_is_offered_in_that_server_only(
    emulator: tuple[EmulatorState, Client],
) -> None:
    state, client = emulator
    placed = await client.put(
        f"/api/v10/applications/{APP_ID}/guilds/{TEST_GUILD_ID}/commands",
        json=[command(contexts=None, integration_types=None)],
    )
    assert placed.status_code == 200
    [stored] = placed.json()
    assert (stored["guild_id"], stored["contexts"]) == (TEST_GUILD_ID, None)
    user = state.add_user("gwen")
    in_dm = await client.post(
        "/_emulator/interactions", json={"user_id": user.id, "command": "link", "where": "dm"}
    )
    assert in_dm.status_code == 409
    assert "not registered here" in in_dm.json()["error"]


@pytest.mark.parametrize(
    ("guild", "status", "code"),
    [("1399999999999999999", 403, 50001), ("not-a-server", 400, 50035), ("-1", 400, 50035)],
)
async def test_commands_of_a_server_the_app_is_not_in_are_refused(
    emulator: tuple[EmulatorState, Client], guild: str, status: int, code: int
) -> None:
    """Discord answers 403 Missing Access for a server the app was not added to, and 400
    ("is not snowflake") for an id that is not one, when listing or replacing its commands."""
    state, client = emulator
    path = f"/api/v10/applications/{APP_ID}/guilds/{guild}/commands"
    for answer in (await client.put(path, json=[command(contexts=None)]), await client.get(path)):
        assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert state.commands == {}
    assert state.refused_commands == []  # refused for where, not for what


async def test_a_global_command_without_dms_is_not_offered_there(
    emulator: tuple[EmulatorState, Client],
) -> None:
    state, client = emulator
    await client.put(f"/api/v10/applications/{APP_ID}/commands", json=[command(contexts=[0])])
    user = state.add_user("hal")
    in_dm = await client.post(
        "/_emulator/interactions", json={"user_id": user.id, "command": "link", "where": "dm"}
    )
    assert in_dm.status_code == 409
    assert "not offered in DMs" in in_dm.json()["error"]


async def test_a_command_runs_only_in_a_server_the_app_is_in_and_for_its_members(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """Discord sends an interaction only from a server the application was added to (its
    commands are offered nowhere else), and only a member of that server can use them: a
    global command run "in" any other server id reached the service as if it could be."""
    state, client = emulator
    await client.put(f"/api/v10/applications/{APP_ID}/commands", json=[command()])
    user = state.add_user("ike")
    other = "1399999999999999999"
    run = {"user_id": user.id, "command": "link", "guild_id": other}

    elsewhere = await client.post("/_emulator/interactions", json=run)
    assert elsewhere.status_code == 409
    assert f"not in server {other}" in elsewhere.json()["error"]

    state.guilds[other] = Guild(other, "Another server")  # the app is added there
    not_member = await client.post("/_emulator/interactions", json=run)
    assert not_member.status_code == 409
    assert "not a member of server" in not_member.json()["error"]
    assert state.interactions == {}  # nothing was sent

    state.guilds[other].members[user.id] = set()  # they join: Discord sends it
    sent = await client.post("/_emulator/interactions", json=run)
    assert sent.status_code == 502  # to a service that is not there in this test
    [interaction] = state.interactions.values()
    assert interaction.guild_id == other


async def test_a_dm_command_needs_a_server_shared_with_the_app(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """A server-installed application is reached in DMs only by someone who shares a server
    with its bot (Discord opens no DM with a bot otherwise): the emulator sent a DM
    interaction for any test user."""
    state, client = emulator
    await client.put(f"/api/v10/applications/{APP_ID}/commands", json=[command()])
    stranger = state.add_user("jo", member=False)
    run = {"user_id": stranger.id, "command": "link", "where": "dm"}
    refused = await client.post("/_emulator/interactions", json=run)
    assert refused.status_code == 409
    assert "shares no server with the application" in refused.json()["error"]
    assert state.interactions == {}
    state.test_guild.members[stranger.id] = set()
    sent = await client.post("/_emulator/interactions", json=run)
    assert sent.status_code == 502  # sent, to a service that is not there in this test
    [interaction] = state.interactions.values()
    assert interaction.guild_id is None


async def test_a_server_the_bot_was_removed_from_sends_no_interactions(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """Removed from a server (the test API's ``member: false``), the application is no
    longer there: Discord sends no interaction from it, opens no DM through it, and answers
    its server commands with 403 Missing Access; the emulator still ran commands there."""
    state, client = emulator
    await client.put(f"/api/v10/applications/{APP_ID}/commands", json=[command()])
    user = state.add_user("kim")  # a member of the test server, and only of it
    removed = await client.patch(f"/_emulator/guilds/{TEST_GUILD_ID}/bot", json={"member": False})
    assert removed.status_code == 200

    in_server = await client.post(
        "/_emulator/interactions", json={"user_id": user.id, "command": "link"}
    )
    assert in_server.status_code == 409
    assert f"not in server {TEST_GUILD_ID}" in in_server.json()["error"]
    in_dm = await client.post(
        "/_emulator/interactions", json={"user_id": user.id, "command": "link", "where": "dm"}
    )
    assert in_dm.status_code == 409
    assert "shares no server with the application" in in_dm.json()["error"]
    assert state.interactions == {}  # nothing was sent
    path = f"/api/v10/applications/{APP_ID}/guilds/{TEST_GUILD_ID}/commands"
    for answer in (await client.put(path, json=[command(contexts=None)]), await client.get(path)):
        assert (answer.status_code, answer.json()["code"]) == (403, 50001)

    await client.patch(f"/_emulator/guilds/{TEST_GUILD_ID}/bot", json={"member": True})
    sent = await client.post(
        "/_emulator/interactions", json={"user_id": user.id, "command": "link"}
    )
    assert sent.status_code == 502  # added again: sent, to a service not there in this test


def _pending(state: EmulatorState) -> Interaction:
    user = state.add_user("ivy")
    interaction = Interaction(
        id=state.snowflake(),
        token=secrets.token_urlsafe(48),
        user_id=user.id,
        command="link",
        guild_id=TEST_GUILD_ID,
        sent_at=time.monotonic(),
    )
    state.interactions[interaction.id] = interaction
    return interaction


async def test_the_callback_refuses_a_malformed_reply_and_takes_a_good_one_after(
    emulator: tuple[EmulatorState, Client],
) -> None:
    state, client = emulator
    interaction = _pending(state)
    url = f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback"

    refused = await client.post(url, json=reply(content="x" * 2001))
    assert refused.status_code == 400
    assert errors_at(refused.json(), "data", "content") == ["BASE_TYPE_MAX_LENGTH"]
    assert interaction.response is None  # nothing shown: the reply can still come
    assert interaction.errors == [refused.json()]

    taken = await client.post(url, json=reply())
    assert taken.status_code == 204  # Discord's answer without ?with_response=true
    assert taken.content == b""
    assert interaction.response == reply()


@pytest.mark.parametrize(
    ("status", "body", "taken"),
    [(202, "", True), (202, None, True), (204, "", False), (200, {"type": 1}, False)],
)
async def test_after_a_callback_reply_the_http_answer_must_be_202_without_a_body(
    emulator: tuple[EmulatorState, Client], status: int, body: Any, taken: bool
) -> None:
    """ "Respond to the original HTTP request with a 202 and no body": anything else (a 204
    too) is a failure the test API reports with the interaction."""
    state, client = emulator
    interaction = _pending(state)
    await client.post(
        f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback", json=reply()
    )
    await take_http_answer(state, interaction, status, body)
    assert [e["code"] for e in interaction.errors] == ([] if taken else [40060])
    assert interaction.response is not None
    assert interaction.response["data"]["content"] == "Hello"  # the callback's reply stands


@pytest.mark.parametrize(
    ("kind", "on_message", "refused", "taken"),
    [
        (3, True, {"type": 8, "data": {"choices": []}}, {"type": 6}),  # a button
        (4, False, reply(), {"type": 8, "data": {"choices": []}}),  # an autocomplete
        (5, False, {"type": 7, "data": {"content": "Updated"}}, reply()),  # a modal's submit
    ],
    ids=["component", "autocomplete", "modal-submit"],
)
async def test_the_callback_and_the_http_answer_take_only_the_types_of_the_interaction(
    emulator: tuple[EmulatorState, Client],
    kind: int,
    on_message: bool,
    refused: dict[str, Any],
    taken: dict[str, Any],
) -> None:
    """Every answer was judged as a slash command's: an autocomplete answered with a
    message was taken (Discord refuses it), a button's deferred update refused."""
    state, client = emulator
    interaction = _pending(state)
    interaction.kind, interaction.on_message = kind, on_message
    url = f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback"

    answer = await client.post(url, json=refused)
    assert answer.status_code == 400
    assert errors_at(answer.json(), "type") == ["BASE_TYPE_CHOICES"]
    assert interaction.response is None

    other = _pending(state)
    other.kind, other.on_message = kind, on_message
    await take_http_answer(state, other, 200, refused)
    assert other.response is None
    assert [e["code"] for e in other.errors] == [50035]

    answer = await client.post(url, params={"with_response": "true"}, json=taken)
    assert answer.status_code == 200
    assert answer.json()["interaction"]["id"] == interaction.id
    assert answer.json()["interaction"]["type"] == kind  # the interaction's, not always 2
    assert interaction.response is not None


async def test_with_response_returns_the_interaction_callback_response(
    emulator: tuple[EmulatorState, Client],
) -> None:
    state, client = emulator
    interaction = _pending(state)
    url = f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback"
    answer = await client.post(url, params={"with_response": "true"}, json=reply())
    assert answer.status_code == 200
    body = answer.json()
    assert body["interaction"]["id"] == interaction.id
    assert body["interaction"]["type"] == 2
    assert body["interaction"]["response_message_ephemeral"] is True
    assert body["interaction"]["response_message_loading"] is False
    assert body["resource"]["type"] == 4
    assert body["resource"]["message"]["content"] == "Hello"
    assert body["resource"]["message"]["id"] == body["interaction"]["response_message_id"]


async def test_webhook_edits_and_follow_ups_are_checked_too(
    emulator: tuple[EmulatorState, Client],
) -> None:
    state, client = emulator
    interaction = _pending(state)
    webhook = f"/api/v10/webhooks/{APP_ID}/{interaction.token}"
    early = await client.post(webhook, json={"content": "too early"})
    assert early.status_code == 404  # no webhook before the interaction is answered
    await client.post(
        f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback",
        json={"type": 5, "data": {"flags": 64}},
    )
    bad_edit = await client.patch(f"{webhook}/messages/@original", json={"content": "x" * 2001})
    assert bad_edit.status_code == 400
    assert errors_at(bad_edit.json(), "content")
    empty_edit = await client.patch(
        f"{webhook}/messages/@original", json={"content": "", "components": []}
    )
    assert (empty_edit.status_code, empty_edit.json()["code"]) == (400, 50006)
    assert interaction.response == {"type": 5, "data": {"flags": 64}}  # still "thinking…"
    good_edit = await client.patch(f"{webhook}/messages/@original", json={"content": "Done"})
    assert good_edit.status_code == 200
    cleared = await client.patch(f"{webhook}/messages/@original", json={"components": []})
    assert cleared.status_code == 200  # the content stays
    assert interaction.response["data"]["content"] == "Done"
    empty = await client.post(webhook, json={"content": ""})
    assert empty.json()["code"] == 50006
    assert interaction.followups == []


async def test_an_edited_reply_carries_its_edit_time_and_keeps_its_creation_time(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """Discord's message object: ``timestamp`` is when the message was sent, the same in every
    answer about it, and ``edited_timestamp`` null until an edit, then the last edit's time.
    The emulator answered every edit with ``edited_timestamp`` null, and a new ``timestamp``
    at each read."""
    state, client = emulator
    interaction = _pending(state)
    made = await client.post(
        f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback",
        json=reply(),
        params={"with_response": "true"},
    )
    sent = made.json()["resource"]["message"]
    assert sent["edited_timestamp"] is None
    original = f"/api/v10/webhooks/{APP_ID}/{interaction.token}/messages/@original"
    read = (await client.get(original)).json()
    assert (read["timestamp"], read["edited_timestamp"]) == (sent["timestamp"], None)

    edited = (await client.patch(original, json={"content": "Edited"})).json()
    assert edited["timestamp"] == sent["timestamp"]
    assert edited["edited_timestamp"] is not None
    at = datetime.fromisoformat(edited["edited_timestamp"])
    assert at.tzinfo is not None
    assert at >= datetime.fromisoformat(sent["timestamp"])
    again = (await client.get(original)).json()
    assert (again["timestamp"], again["edited_timestamp"]) == (
        sent["timestamp"],
        edited["edited_timestamp"],
    )
    follow_up = await client.post(
        f"/api/v10/webhooks/{APP_ID}/{interaction.token}", json={"content": "More"}
    )
    assert follow_up.json()["edited_timestamp"] is None  # a new message, never edited

    answered = _pending(state)  # answered in the HTTP response: sent then, not when read
    await take_http_answer(state, answered, 200, reply())
    sent_at = answered.message_sent_at
    assert sent_at is not None
    later = f"/api/v10/webhooks/{APP_ID}/{answered.token}/messages/@original"
    assert (await client.get(later)).json()["timestamp"] == sent_at


async def test_an_edit_whose_body_is_null_edits_nothing(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """The body ``null`` is read as ``{}`` (nothing changes, as for ``{}``); the emulator
    answered 500 there (helper-78's review)."""
    state, client = emulator
    interaction = _pending(state)
    await client.post(
        f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback", json=reply()
    )
    original = f"/api/v10/webhooks/{APP_ID}/{interaction.token}/messages/@original"
    answer = await client.patch(
        original, content=b"null", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"] == "Hello"
    assert interaction.response is not None
    assert interaction.response["data"]["content"] == "Hello"


async def test_an_edit_keeps_the_flags_a_message_cannot_lose(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """An edit sending ``flags: 0`` leaves an ephemeral reply ephemeral ("an existing
    message's ephemeral state cannot be changed") and a components one with
    IS_COMPONENTS_V2 ("can only be set"), so content is still refused on it after."""
    state, client = emulator
    for first, kept in ((reply(content="hi", flags=64), 64), (v2(flags=64 | 32768), 64 | 32768)):
        interaction = _pending(state)
        await client.post(
            f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback", json=first
        )
        original = f"/api/v10/webhooks/{APP_ID}/{interaction.token}/messages/@original"
        assert (await client.patch(original, json={"flags": 0})).status_code == 200
        assert interaction.response is not None
        assert interaction.response["data"]["flags"] == kept
        content = await client.patch(original, json={"content": "now with content"})
        assert content.status_code == (400 if kept & 32768 else 200)


@pytest.mark.parametrize(
    ("first_flags", "edit_flags", "after"),
    [
        (0, 64, 0),  # not made ephemeral
        (64, 0, 64),  # nor made public
        (0, 64 | 4096 | 1 | 4, 4),  # only SUPPRESS_EMBEDS comes
        (64 | 4, 64, 64),  # and goes
        (4096, 0, 4096),  # what a message was created with stays
    ],
)
async def test_an_edit_of_the_original_ignores_the_flags_it_cannot_change(
    emulator: tuple[EmulatorState, Client], first_flags: int, edit_flags: int, after: int
) -> None:
    state, client = emulator
    interaction = _pending(state)
    await client.post(
        f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback",
        json=reply(flags=first_flags),
    )
    original = f"/api/v10/webhooks/{APP_ID}/{interaction.token}/messages/@original"
    edited = await client.patch(original, json={"content": "Edited", "flags": edit_flags})
    assert edited.status_code == 200, edited.text
    assert edited.json()["flags"] == after
    assert interaction.response is not None
    assert interaction.response["data"]["flags"] == after
    assert interaction.response["data"]["content"] == "Edited"
    kept = await client.patch(original, json={"content": "Again"})  # no flags: they stay
    assert kept.json()["flags"] == after


@pytest.mark.parametrize(("deferred_flags", "follow_up_flags"), [(64, 0), (0, 64)])
async def test_the_first_follow_up_after_a_deferral_edits_the_thinking_message(
    emulator: tuple[EmulatorState, Client], deferred_flags: int, follow_up_flags: int
) -> None:
    """Discord: after a deferred response "the first followup message will edit the loading
    message ... no new message will be created ... The ephemeral flag will be ignored". The
    deferral decided who sees the reply; a later follow-up is a new message."""
    state, client = emulator
    interaction = _pending(state)
    webhook = f"/api/v10/webhooks/{APP_ID}/{interaction.token}"
    await client.post(
        f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback",
        json={"type": 5, "data": {"flags": deferred_flags}},
    )
    first = await client.post(webhook, json={"content": "Done", "flags": follow_up_flags})
    assert first.status_code == 200, first.text
    assert interaction.followups == []  # no new message
    assert interaction.edited.is_set()
    assert interaction.response is not None
    assert interaction.response["type"] == 4  # no longer "thinking…"
    assert interaction.response["data"] == {"content": "Done", "flags": deferred_flags}
    original = await client.patch(f"{webhook}/messages/@original", json={"content": "Done!"})
    assert (first.json()["id"], first.json()["flags"]) == (original.json()["id"], deferred_flags)

    second = await client.post(webhook, json={"content": "More", "flags": follow_up_flags})
    assert second.status_code == 200, second.text
    assert second.json()["id"] != first.json()["id"]
    assert second.json()["flags"] == follow_up_flags
    assert interaction.followups == [{"content": "More", "flags": follow_up_flags}]
    assert interaction.response["data"]["content"] == "Done!"


async def test_a_components_v2_follow_up_after_a_deferral_keeps_its_flag(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """Only the ephemeral flag is the deferral's: IS_COMPONENTS_V2 (which an edit may set)
    stays, or the edited message's components could not be read."""
    state, client = emulator
    interaction = _pending(state)
    await client.post(
        f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback",
        json={"type": 5, "data": {"flags": 64}},
    )
    body = {"flags": 32768 | 4096, "components": [TEXT]}  # not ephemeral, silent
    answer = await client.post(f"/api/v10/webhooks/{APP_ID}/{interaction.token}", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["flags"] == 64 | 32768
    assert interaction.followups == []


async def test_an_expired_interaction_token_is_an_invalid_webhook_token(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """After its 15 minutes the token is refused 401 50027 Invalid Webhook Token; a token
    Discord never gave is 404 10015 Unknown Webhook."""
    state, client = emulator
    interaction = _pending(state)
    interaction.response = {"type": 5, "data": {"flags": 64}}
    interaction.sent_at -= INTERACTION_TOKEN_LIFETIME + 1
    webhook = f"/api/v10/webhooks/{APP_ID}/{interaction.token}"
    for late in (
        await client.patch(f"{webhook}/messages/@original", json={"content": "late"}),
        await client.post(webhook, json={"content": "late"}),
    ):
        assert (late.status_code, late.json()) == (
            401,
            {"message": "Invalid Webhook Token", "code": 50027},
        )
    assert [e["code"] for e in interaction.errors] == [50027, 50027]
    assert interaction.response == {"type": 5, "data": {"flags": 64}}
    unknown = await client.post(f"/api/v10/webhooks/{APP_ID}/never-given", json={"content": "x"})
    assert (unknown.status_code, unknown.json()["code"]) == (404, 10015)


# -- the CDN ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/avatars/{id}/{hash}.png?size=128", 200),
        ("/avatars/{id}/{hash}.png", 200),
        ("/avatars/{id}/{hash}.webp?size=4096", 200),
        ("/avatars/{id}/{hash}.png?size=96", 400),
        ("/avatars/{id}/{hash}.png?size=8", 400),
        ("/avatars/{id}/{hash}.png?size=8192", 400),
        ("/avatars/{id}/{hash}.gif?size=64", 400),  # not an animated (a_) avatar
        ("/avatars/{id}/0123456789abcdef0123456789abcdef.png", 404),  # not the current hash
    ],
)
async def test_the_cdn_serves_avatars_in_the_sizes_discord_does(
    emulator: tuple[EmulatorState, Client], path: str, status: int
) -> None:
    state, client = emulator
    user = state.add_user("jo")
    assert user.avatar is not None
    assert len(user.avatar) == 32  # Discord's hash: 32 hex digits
    answer = await client.get(path.format(id=user.id, hash=user.avatar))
    assert answer.status_code == status
    if status == 200:
        assert answer.content.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("size", [0, 96, 100, 8192])
def test_the_app_builds_avatar_urls_only_in_sizes_discord_serves(size: int) -> None:
    with pytest.raises(ValueError, match="powers of two"):
        Avatars("https://cdn.discordapp.com", size=size)
    assert Avatars("https://cdn.discordapp.com").url(5, "a_1f") == (
        "https://cdn.discordapp.com/avatars/5/a_1f.png?size=128"
    )


# -- what the emulator answers is what Discord answers -------------------------------------------


async def test_hikari_reads_the_messages_and_callback_responses_the_emulator_returns(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """hikari is written against Discord's answers: a message whose components lack their
    ``id`` (Discord numbers them) made every reply with a button fail in hikari after it
    was sent. Each endpoint that answers with a message is read here as hikari reads it."""
    state, client = emulator
    entities = hikari.impl.EntityFactoryImpl(Mock(spec=hikari.RESTAware))
    with_button = {"components": [{"type": 1, "components": [LINK]}]}

    def button_of(message: hikari.Message) -> tuple[str | None, int, int]:
        [row] = message.components
        assert isinstance(row, hikari.ActionRowComponent)
        [button] = row.components
        assert isinstance(button, hikari.ButtonComponent)
        return button.url, row.id, button.id

    interaction = _pending(state)
    answer = await client.post(
        f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback",
        params={"with_response": "true"},
        json=reply(**with_button),
    )
    assert answer.status_code == 200, answer.text
    response = entities.deserialize_interaction_callback_response(answer.json())
    assert isinstance(response.resource, hikari.InteractionCallbackResource)
    assert isinstance(response.resource.message, hikari.Message)
    assert button_of(response.resource.message) == (LINK["url"], 1, 2)
    assert interaction.response is not None  # what the channel shows has the ids too
    assert interaction.response["data"]["components"][0]["components"][0]["id"] == 2

    webhook = f"/api/v10/webhooks/{APP_ID}/{interaction.token}"
    edited = await client.patch(f"{webhook}/messages/@original", json=with_button)
    assert edited.status_code == 200, edited.text
    assert button_of(entities.deserialize_message(edited.json())) == (LINK["url"], 1, 2)
    followed = await client.post(webhook, json={"content": "Also", **with_button})
    assert followed.status_code == 200, followed.text
    assert button_of(entities.deserialize_message(followed.json())) == (LINK["url"], 1, 2)


def test_component_ids_are_numbered_around_those_given() -> None:
    rows: list[dict[str, Any]] = [
        {"type": 1, "components": [{"type": 2, "id": 2}, {"type": 2}]},
        {"type": 1, "id": 0},
    ]
    numbered = with_component_ids(rows)
    assert [numbered[0]["id"], *(c["id"] for c in numbered[0]["components"])] == [1, 2, 3]
    assert numbered[1]["id"] == 4  # 0 is "empty"
    assert "id" not in rows[0]  # the caller's copy is left alone


# -- the original response: read, delete ---------------------------------------------------------


async def test_the_original_response_is_read_edited_and_deleted_as_one_message(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """GET and DELETE ``@original`` exist (the emulator answered 405); the message keeps the
    id the callback response gave it; once deleted it is Unknown Message (10008) to reads,
    edits and deletes, the interaction stays answered and follow-ups still work."""
    state, client = emulator
    entities = hikari.impl.EntityFactoryImpl(Mock(spec=hikari.RESTAware))
    interaction = _pending(state)
    callback = f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback"
    made = await client.post(callback, params={"with_response": "true"}, json=reply())
    message_id = made.json()["interaction"]["response_message_id"]
    webhook = f"/api/v10/webhooks/{APP_ID}/{interaction.token}"
    original = f"{webhook}/messages/@original"

    read = await client.get(original)
    assert read.status_code == 200, read.text
    message = entities.deserialize_message(read.json())
    assert (str(message.id), message.content, message.flags) == (
        message_id,
        "Hello",
        hikari.MessageFlag.EPHEMERAL,
    )
    edited = await client.patch(original, json={"content": "Edited"})
    assert edited.json()["id"] == message_id
    assert (await client.get(original)).json()["content"] == "Edited"

    deleted = await client.delete(original)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert interaction.deleted
    for gone in (
        await client.get(original),
        await client.patch(original, json={"content": "Back"}),
        await client.delete(original),
    ):
        assert (gone.status_code, gone.json()) == (
            404,
            {"message": "Unknown Message", "code": 10008},
        )
    again = await client.post(callback, json=reply(content="Again"))
    assert (again.status_code, again.json()["code"]) == (400, 40060)
    followed = await client.post(webhook, json={"content": "More"})
    assert followed.status_code == 200, followed.text
    assert followed.json()["id"] != message_id
    assert interaction.followups == [{"content": "More"}]


async def test_a_deferred_original_reads_as_thinking_and_once_deleted_follow_ups_are_new(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """A deferred response's message is "thinking…" (LOADING, 128) until edited; deleted, it
    is not there for the first follow-up to complete: that one is a new message."""
    state, client = emulator
    interaction = _pending(state)
    await client.post(
        f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback",
        json={"type": 5, "data": {"flags": 64}},
    )
    webhook = f"/api/v10/webhooks/{APP_ID}/{interaction.token}"
    thinking = await client.get(f"{webhook}/messages/@original")
    assert thinking.status_code == 200, thinking.text
    assert (thinking.json()["content"], thinking.json()["flags"]) == ("", 64 | 128)
    assert (await client.delete(f"{webhook}/messages/@original")).status_code == 204
    assert interaction.edited.is_set()  # the test API stops waiting for the edit
    followed = await client.post(webhook, json={"content": "Done"})
    assert followed.status_code == 200, followed.text
    assert interaction.followups == [{"content": "Done"}]


async def test_there_is_no_original_message_before_an_answer_or_after_a_modal(
    emulator: tuple[EmulatorState, Client],
) -> None:
    """Before any answer the interaction has no webhook yet: Unknown Webhook (10015) to
    reads, edits and deletes of ``@original``, as for a token never given (discord.js met
    it deleting the reply of an interaction not yet acknowledged, discordjs/discord.js#10587);
    after a modal, which makes no message, Unknown Message (10008) (an edit turned the modal
    into one); Invalid Webhook Token (50027) once the token expired."""
    state, client = emulator
    interaction = _pending(state)
    original = f"/api/v10/webhooks/{APP_ID}/{interaction.token}/messages/@original"
    unknown_webhook = (404, {"message": "Unknown Webhook", "code": 10015})
    unknown_message = (404, {"message": "Unknown Message", "code": 10008})
    for method, body in (("GET", None), ("PATCH", {"content": "x"}), ("DELETE", None)):
        early = await client.request(method, original, json=body)
        assert (early.status_code, early.json()) == unknown_webhook
    assert interaction.response is None
    await client.post(
        f"/api/v10/interactions/{interaction.id}/{interaction.token}/callback", json=modal()
    )
    for answer in (
        await client.get(original),
        await client.patch(original, json={"content": "x"}),
        await client.delete(original),
    ):
        assert (answer.status_code, answer.json()) == unknown_message
    assert not interaction.deleted
    never = f"/api/v10/webhooks/{APP_ID}/never-given/messages/@original"
    for method in ("GET", "DELETE"):
        assert (await client.request(method, never)).json()["code"] == 10015
    interaction.sent_at -= INTERACTION_TOKEN_LIFETIME + 1
    for method in ("GET", "DELETE"):
        assert (await client.request(method, original)).json()["code"] == 50027


def test_ids_carry_the_time_they_were_made_as_discords_do() -> None:
    """A snowflake's upper bits are the milliseconds since 2015-01-01 when Discord made it:
    the service reads an interaction's age from its id (hikari's ``created_at`` does the
    same). The emulator's ids were a counter from 2023's range, every one "years old"."""
    state = EmulatorState(APP_ID, "secret", set())
    before = datetime.now(UTC)
    ids = [hikari.Snowflake(state.snowflake()) for _ in range(50)]
    after = datetime.now(UTC)

    assert ids == sorted(set(ids))  # each new, each after the one before
    # created_at counts whole milliseconds
    assert before - timedelta(milliseconds=1) < ids[0].created_at <= ids[-1].created_at <= after
