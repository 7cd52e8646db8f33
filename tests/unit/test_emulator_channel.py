"""The emulator's channel page on its own (the demo's browser test drives it with the service)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from entrypoints.emulator import EmulatorState, channel, create_emulator_app
from entrypoints.emulator.channel import _markdown


def _state() -> EmulatorState:
    return EmulatorState("1200000000000000042", "secret", {"http://127.0.0.1:1/cb"})


async def test_creating_a_test_user_and_typing_a_command() -> None:
    state = _state()
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        home = await client.get("/", follow_redirects=True)
        assert "Pick who you are on the left" in home.text
        created = await client.post(
            "/channel/users",
            data={"username": "carol", "email": "<script>@x.io", "verified": "yes"},
        )
        assert created.status_code == 200  # followed to the channel as carol
        assert "You are <strong>carol</strong>" in created.text
        assert "<script>" not in created.text
        assert "&lt;script&gt;@x.io · verified" in created.text
        [carol] = state.users.values()

        chat = await client.post("/channel/send", data={"user_id": carol.id, "text": "hello"})
        assert "only runs the TaskFlow bot&#x27;s commands" in chat.text
        # No service behind this emulator: the failure is shown in the channel, not a 500.
        linked = await client.post("/channel/send", data={"user_id": carol.id, "text": "/link"})
        assert linked.status_code == 200
        assert "no bot is connected" in linked.text


async def test_bad_test_user_names_are_refused() -> None:
    state = _state()
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        refused = await client.post("/channel/users", data={"username": "Not OK!"})
        assert refused.status_code == 400
        assert "2 to 32 characters" in refused.text
    assert state.users == {}


def test_the_bots_markdown_is_rendered_safely() -> None:
    assert _markdown("**bold** `code` \\_x\\_ <b>") == (
        "<strong>bold</strong> <code>code</code> _x_ &lt;b&gt;"
    )


async def test_the_channel_shows_a_users_role_connection() -> None:
    state = _state()
    user = state.add_user("dana")
    state.role_connections_verification_url = "http://127.0.0.1:1/discord/linked-role"
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        before = await client.get(f"/channel?user={user.id}")
        assert 'href="http://127.0.0.1:1/discord/linked-role"' in before.text
        state.role_connections[user.id] = {
            "platform_name": "TaskFlow",
            "platform_username": "<dana>",
            "metadata": {"linked": "1", "linked_days": "3"},
        }
        after = await client.get(f"/channel?user={user.id}")
    assert "Connection: TaskFlow @&lt;dana&gt; (linked: 1, linked_days: 3)" in after.text


async def test_a_test_user_without_a_username_is_refused_with_400() -> None:
    """Found by helper-63's review: the test API answered 201 with {"error": ...}."""
    state = _state()
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        for body in ({}, {"username": "  "}, {"email": "c@example.com"}):
            refused = await client.post("/_emulator/users", json=body)
            assert refused.status_code == 400, body
            assert refused.json() == {"error": "username is required"}
        assert state.users == {}
        created = await client.post("/_emulator/users", json={"username": "carol"})
        assert created.status_code == 201
        assert created.json()["username"] == "carol"


async def test_a_reply_the_application_deleted_is_said_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not "did not respond": the application answered, then deleted its reply."""
    state = _state()
    user = state.add_user("erin")

    async def deleted_reply(*_: object, **__: object) -> tuple[int, dict[str, Any]]:
        return 200, {"reply": None, "deleted": True, "errors": []}

    monkeypatch.setattr(channel, "run_slash_command", deleted_reply)
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        page = await client.post("/channel/send", data={"user_id": user.id, "text": "/link"})
    assert "The application deleted its reply." in page.text
    assert "did not respond" not in page.text


async def test_a_taken_test_user_name_is_refused_on_the_channel_page_with_the_form_kept() -> None:
    """A review: a name already taken (which the browser's own check lets through) answered
    a plain-text "Go back and choose another name": no page, no link back, and what was
    typed to be found again with the browser's Back button."""
    state = _state()
    state.add_user("carol")
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        refused = await client.post(
            "/channel/users",
            data={"username": "carol", "email": "carol2@example.com", "verified": "yes"},
        )
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("text/html")
    assert "There is already a test user @carol" in refused.text
    assert 'name="username" value="carol"' in refused.text
    assert 'name="email" value="carol2@example.com"' in refused.text
    assert 'name="verified" value="yes" checked' in refused.text
    assert '<nav aria-label="Test users">' in refused.text  # the channel, its links with it
    assert len(state.users) == 1


async def test_the_emulators_pages_refuse_to_be_framed() -> None:
    """Discord's pages refuse to show in another site's frame, and so do the emulator's: a
    page of another site could frame the channel (which runs /unlink in one click) or the
    consent screen under something else to click (clickjacking)."""
    state = _state()
    state.add_user("carol")
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        pages = [
            await client.get("/channel"),
            await client.get("/oauth2/authorize", params={"client_id": "1"}),  # refused
            await client.post("/channel/users", data={"username": "!"}),  # refused
        ]
        for page in pages:
            assert page.headers["content-type"].startswith("text/html")
            assert page.headers["x-frame-options"] == "DENY"
            assert page.headers["content-security-policy"] == "frame-ancestors 'none'"
        api = await client.get("/api/v10/users/@me")  # data, not a page: as it was
        assert "x-frame-options" not in api.headers


async def test_the_channels_name_and_topic_read_apart() -> None:
    """A review with a screen reader: the channel's header read "# taskflow-testYou are
    carol." (the topic's space between them was a margin, which a screen reader does not
    read, nor copied text)."""
    state = _state()
    user = state.add_user("carol")
    async with AsyncTestClient(app=create_emulator_app(state)) as client:
        page = await client.get(f"/channel?user={user.id}")
    found = re.search(r"<main>\s*<header>(.*?)</header>", page.text, re.DOTALL)
    assert found is not None, page.text
    read = re.sub(r"<[^>]+>", "", found.group(1))
    assert read.startswith(f"# {channel.CHANNEL} You are carol."), read
