"""The ids of a bulk lookup are checked all at once when they are all strings of digits (the
common case), and one by one, as msgspec checks them, otherwise: a refusal names the first
id msgspec refuses, with msgspec's words, as before the quick check."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Harness
from tests.web_support import Client

_WORDS = "a Discord id is 1 to 20 digits (0-9), and nothing else"


def _refused(key: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": "http_400",
            "message": f"The request was not valid: discord_ids[{key}] (body): {message}",
        }
    }


@pytest.mark.parametrize(
    ("ids", "answer"),
    [
        (["12", "+5"], _refused("1", _WORDS)),
        (["12", " 12"], _refused("1", _WORDS)),
        (["1_0"], _refused("0", _WORDS)),
        (["\u0661\u0662"], _refused("0", _WORDS)),  # Arabic-Indic digits: int() reads them
        (["\u00b2"], _refused("0", _WORDS)),  # a superscript two: str.isdigit() says yes
        ([""], _refused("0", _WORDS)),
        (["1", "0" * 21], _refused("1", _WORDS)),
        (["7", "8x"], _refused("1", _WORDS)),
        # The first id refused is named, a string or a number.
        (["abc", 0], _refused("0", _WORDS)),
        ([0, "abc"], _refused("0", "Expected `int` >= 1")),
        ([5, "12\n"], _refused("1", _WORDS)),
        (["7", 9223372036854775808], _refused("1", "Expected `int` <= 9223372036854775807")),
        (["7", -1], _refused("1", "Expected `int` >= 1")),
        (["7", True], _refused("1", "Expected `int | str`, got `bool`")),
        (["7", None], _refused("1", "Expected `int | str`, got `null`")),
        (["7", ["8"]], _refused("1", "Expected `int | str`, got `array`")),
    ],
)
async def test_a_bulk_id_refused_is_named_as_msgspec_names_it(
    client: Client, h: Harness, ids: list[Any], answer: dict[str, Any]
) -> None:
    key = (await h.container.create_api_key().execute("bulk")).token
    refused = await client.post(
        "/api/v1/links/lookup",
        json={"discord_ids": ids},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert refused.status_code == 400, refused.text
    assert refused.json() == answer


async def test_bulk_ids_of_twenty_digits_strings_and_numbers_are_read_as_numbers(
    client: Client, h: Harness
) -> None:
    key = (await h.container.create_api_key().execute("bulk")).token
    alice = (await h.sign_up("alice", "alice@example.com")).account
    await h.discord_link(alice.id, h.discord_user(6001))
    answer = await client.post(
        "/api/v1/links/lookup",
        json={"discord_ids": ["00000000000000006001", "0", "18446744073709551616", 7, "007"]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 200, answer.text
    assert [link["discord_id"] for link in answer.json()["links"]] == ["6001"]
    assert answer.json()["missing"] == ["0", "18446744073709551616", "7"]
