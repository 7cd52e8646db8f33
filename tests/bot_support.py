"""Driving the bot through the Discord emulator: run a slash command as a test user and read
the reply the service sent back through Discord's callback endpoint."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from entrypoints.emulator import EmulatorState

EPHEMERAL = 64
LINK_BUTTON = 5


@dataclass(frozen=True)
class BotReply:
    status: int  # what the service answered to the interaction POST
    content: str
    flags: int
    buttons: list[dict[str, Any]]
    raw: dict[str, Any]

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def button(self) -> dict[str, Any]:
        assert len(self.buttons) == 1, self.buttons
        return self.buttons[0]


async def run_command(
    emulator_url: str, user_id: str, command: str, *, where: str = "guild"
) -> BotReply:
    async with httpx.AsyncClient(base_url=emulator_url, timeout=15) as client:
        answer = await client.post(
            "/_emulator/interactions", json={"user_id": user_id, "command": command, "where": where}
        )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["reply"] is not None, f"the service sent no reply: {result}"
    reply = result["reply"]
    assert reply["type"] == 4, reply  # CHANNEL_MESSAGE_WITH_SOURCE
    data = reply["data"]
    buttons = [c for row in data.get("components", []) for c in row["components"]]
    return BotReply(result["status"], data["content"], data.get("flags", 0), buttons, result)


def signed_request(
    emulator: EmulatorState, payload: dict[str, Any], *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """A request as Discord would sign it (optionally with a chosen timestamp)."""
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return body, {
        "content-type": "application/json",
        "x-signature-ed25519": emulator.sign(body, stamp),
        "x-signature-timestamp": stamp,
    }
