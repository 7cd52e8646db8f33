"""Scoped API keys on the in-memory adapters: scopes, expiry, "last used" written at most once
a minute per key and never on the request's path, and the JSON API's answers for each."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import pytest
from click.testing import CliRunner
from litestar.testing import AsyncTestClient
from pydantic import StringConstraints, TypeAdapter

from adapters.api_key_cache import CachedApiKeyLookup
from adapters.api_key_usage import ThrottledApiKeyUsage
from adapters.memory import MemoryDatabase
from adapters.memory.store import MemoryApiKeys
from domain import errors
from domain.model import ApiKey, ApiScope, AuditKind
from domain.use_cases import AuthOutcome
from entrypoints.cli import cli
from entrypoints.web import create_app
from tests.harness import TEST_SECRET_KEY, Harness

BOTH = ["links:read", "links:write"]


@pytest.fixture
def usage(h: Harness) -> ThrottledApiKeyUsage:
    """No cache in front of the keys, so each call sees what is stored."""
    h.container.api_keys.override(CachedApiKeyLookup(h.container.directory(), ttl_seconds=0))
    found: ThrottledApiKeyUsage = h.container.api_key_usage()
    return found


async def test_a_key_reads_by_default_and_gets_only_the_scopes_named(
    h: Harness, db: MemoryDatabase
) -> None:
    default = await h.container.create_api_key().execute("reader")
    writer = await h.container.create_api_key().execute("writer", ["links:write"])
    both = await h.container.create_api_key().execute("both", BOTH)
    assert default.key.scopes == {ApiScope.LINKS_READ}
    assert writer.key.scopes == {ApiScope.LINKS_WRITE}
    assert both.key.scopes == {ApiScope.LINKS_READ, ApiScope.LINKS_WRITE}
    with pytest.raises(errors.InvalidInput, match="Unknown API key scope 'links:admin'"):
        await h.container.create_api_key().execute("admin", ["links:read", "links:admin"])
    listed = {k.name: k.scopes for k in await h.container.list_api_keys().execute()}
    assert listed == {
        "reader": default.key.scopes,
        "writer": writer.key.scopes,
        "both": both.key.scopes,
    }
    created = [e for e in db.tables.audit if e.kind is AuditKind.API_KEY_CREATED]
    assert created[-1].detail == {"name": "both", "scopes": "links:read links:write"}


async def test_a_key_without_the_scope_is_refused_naming_it(
    h: Harness, usage: ThrottledApiKeyUsage
) -> None:
    reader = await h.container.create_api_key().execute("reader")
    auth = h.container.authenticate_api_key()
    assert await auth.execute(reader.token, ApiScope.LINKS_READ) == reader.key
    with pytest.raises(errors.MissingScope) as refused:
        await auth.execute(reader.token, ApiScope.LINKS_WRITE)
    assert "lacks the scope links:write" in refused.value.message
    assert "it has: links:read" in refused.value.message


async def test_an_expired_key_is_refused_saying_so_from_its_expiry_on(
    h: Harness, usage: ThrottledApiKeyUsage
) -> None:
    created = await h.container.create_api_key().execute("temp", expires_in=timedelta(days=30))
    assert created.key.expires_at == h.clock.now() + timedelta(days=30)
    auth = h.container.authenticate_api_key()
    h.clock.advance(timedelta(days=30) - timedelta(microseconds=1))
    assert await auth.execute(created.token) == created.key
    h.clock.advance(timedelta(microseconds=1))  # at the expiry itself: expired
    with pytest.raises(errors.ApiKeyExpired, match="expired on"):
        await auth.execute(created.token)
    # Revoked beats expired: the operator's act is what the caller is told.
    await h.container.revoke_api_key().execute("temp")
    assert await auth.execute(created.token) is None
    for bad in (timedelta(0), timedelta(days=-1), timedelta(days=3651)):
        with pytest.raises(errors.InvalidInput, match="1 to 3650 days"):
            await h.container.create_api_key().execute("bad", expires_in=bad)


async def test_an_expiry_takes_effect_at_once_through_the_cache(h: Harness) -> None:
    """The cache keeps a key for seconds; the expiry is checked against the clock at every
    request, so a cached key stops at its expiry, not a cache lifetime later."""
    h.container.api_keys.override(CachedApiKeyLookup(h.container.directory(), ttl_seconds=3600))
    created = await h.container.create_api_key().execute("temp", expires_in=timedelta(days=1))
    auth = h.container.authenticate_api_key()
    assert await auth.execute(created.token) == created.key  # now cached for an hour
    h.clock.advance(timedelta(days=1))
    with pytest.raises(errors.ApiKeyExpired):
        await auth.execute(created.token)


def _last_used(db: MemoryDatabase, key: ApiKey) -> object:
    return db.tables.api_keys[key.id].last_used_at


async def test_last_use_is_written_once_a_minute_however_many_requests(
    h: Harness, db: MemoryDatabase, usage: ThrottledApiKeyUsage
) -> None:
    created = await h.container.create_api_key().execute("busy")
    other = await h.container.create_api_key().execute("other")
    auth = h.container.authenticate_api_key()
    first_use = h.clock.now()
    commits = db.commits
    for _ in range(200):
        await auth.execute(created.token)
        h.clock.advance(timedelta(milliseconds=250))  # 200 requests over 50 s
    await usage.idle()
    assert db.commits - commits == 1
    assert _last_used(db, created.key) == first_use
    assert _last_used(db, other.key) is None

    h.clock.set(first_use + timedelta(seconds=59, microseconds=999_999))
    await auth.execute(created.token)
    await usage.idle()
    assert db.commits - commits == 1  # still within the minute
    h.clock.set(first_use + timedelta(minutes=1))
    for _ in range(50):
        await auth.execute(created.token)
        await auth.execute(other.token)
    await usage.idle()
    assert db.commits - commits == 2  # one write for both keys' first use this minute
    assert _last_used(db, created.key) == first_use + timedelta(minutes=1)
    assert _last_used(db, other.key) == first_use + timedelta(minutes=1)


async def test_last_use_is_never_written_on_the_request_path(
    h: Harness, db: MemoryDatabase, usage: ThrottledApiKeyUsage
) -> None:
    """While the storage is busy (its lock held by a long transaction), requests still get
    their answer; the use is written once the storage is free."""
    created = await h.container.create_api_key().execute("bot")
    auth = h.container.authenticate_api_key()
    await db.lock.acquire()
    try:
        for _ in range(20):
            assert await asyncio.wait_for(auth.execute(created.token), timeout=30) == created.key
        assert _last_used(db, created.key) is None
    finally:
        db.lock.release()
    await usage.idle()
    assert _last_used(db, created.key) == h.clock.now()


async def test_a_failed_write_is_tried_again_at_the_next_use(
    h: Harness, db: MemoryDatabase, usage: ThrottledApiKeyUsage, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await h.container.create_api_key().execute("bot")
    auth = h.container.authenticate_api_key()

    async def unreachable(*_: object, **__: object) -> bool:
        raise errors.StorageError()

    monkeypatch.setattr(MemoryApiKeys, "record_use", unreachable)
    assert await auth.execute(created.token) == created.key  # the request is answered
    await usage.idle()
    assert _last_used(db, created.key) is None
    monkeypatch.undo()
    h.clock.advance(timedelta(seconds=1))
    await auth.execute(created.token)
    await usage.idle()
    assert _last_used(db, created.key) == h.clock.now()


async def test_another_instance_recent_write_is_not_repeated(
    h: Harness, db: MemoryDatabase
) -> None:
    """Instances that saw a key in the same minute change its row once between them."""
    created = await h.container.create_api_key().execute("bot")
    now = h.clock.now()
    first, second = ThrottledApiKeyUsage(h.uow), ThrottledApiKeyUsage(h.uow)
    first.used(created.key, now)
    await first.idle()
    second.used(created.key, now + timedelta(seconds=30))  # knew nothing of the first write
    await second.idle()
    assert _last_used(db, created.key) == now


async def test_unlinking_through_the_api_needs_write_and_names_the_key(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    await h.discord_link(alice.id, h.discord_user(4242))
    reader = await h.container.create_api_key().execute("reader")
    admin = await h.container.create_api_key().execute("offboarding", BOTH)
    unlink = h.container.unlink_with_api_key()
    with pytest.raises(errors.MissingScope):
        await unlink.execute(h.discord_user(4242).id, reader.key)
    removed = await unlink.execute(h.discord_user(4242).id, admin.key)
    assert removed.account.id == alice.id
    unlinked = [e for e in db.tables.audit if e.kind is AuditKind.UNLINKED]
    assert unlinked[-1].detail == {
        "via": "api",
        "api_key": "offboarding",
        "api_key_id": str(admin.key.id),
    }


# -- over HTTP (Litestar's test client) -------------------------------------------------------


async def test_the_api_refuses_each_case_with_its_status_and_message(
    h: Harness, db: MemoryDatabase
) -> None:
    alice = (await h.sign_up("alice", "alice@example.com")).account
    await h.discord_link(alice.id, h.discord_user(5150))
    reader = (await h.container.create_api_key().execute("reader")).token
    writer = (await h.container.create_api_key().execute("writer", BOTH)).token
    write_only = (await h.container.create_api_key().execute("wo", ["links:write"])).token
    temp = (await h.container.create_api_key().execute("temp", expires_in=timedelta(days=1))).token
    async with AsyncTestClient(app=create_app(h.container)) as client:
        missing = await client.get("/api/v1/links/5150")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json() == {
            "error": {
                "code": "http_401",
                "message": "Send an API key as 'Authorization: Bearer <key>'.",
            }
        }
        unknown = await client.get("/api/v1/links/5150", headers=_bearer("tfl_" + "x" * 43))
        assert unknown.json()["error"]["message"] == (
            "This API key is not valid (unknown or revoked)."
        )

        refused = await client.delete("/api/v1/links/5150", headers=_bearer(reader))
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "missing_scope"
        assert "links:write" in refused.json()["error"]["message"]
        assert (await client.get("/api/v1/links/5150", headers=_bearer(reader))).status_code == 200
        # links:write alone unlinks but does not look links up: each route names its scope.
        for lookup in (
            client.get("/api/v1/links/5150", headers=_bearer(write_only)),
            client.post(
                "/api/v1/links/lookup", json={"discord_ids": ["5150"]}, headers=_bearer(write_only)
            ),
            client.get(f"/api/v1/accounts/{alice.id}/link", headers=_bearer(write_only)),
        ):
            not_allowed = await lookup
            assert not_allowed.status_code == 403
            assert not_allowed.json()["error"]["message"] == (
                "This API key ('wo') lacks the scope links:read; it has: links:write. "
                "Create a key with --scope links:read for this."
            )

        h.clock.advance(timedelta(days=1))
        expired = await client.get("/api/v1/links/5150", headers=_bearer(temp))
        assert expired.status_code == 401
        assert expired.json()["error"]["code"] == "api_key_expired"
        assert "expired on" in expired.json()["error"]["message"]

        removed = await client.delete("/api/v1/links/5150", headers=_bearer(writer))
        assert removed.status_code == 200
        assert removed.json()["discord_id"] == "5150"
        # links:write alone is refused alike whatever the refusal: the id is not linked (any
        # more), or Discord is its account's only way in. Told apart, a refusal that changes
        # nothing would say who has a Discord-only account.
        only_discord = await h.discord_login(h.discord_user(5151, username="d_only"))
        assert only_discord.outcome is AuthOutcome.CREATED
        for discord_id in ("5150", "5151", "0"):
            refused = await client.delete(
                f"/api/v1/links/{discord_id}", headers=_bearer(write_only)
            )
            assert refused.status_code == 409
            assert refused.json()["error"]["code"] == "nothing_unlinked"
        told = await client.delete("/api/v1/links/5151", headers=_bearer(writer))
        assert told.json()["error"]["code"] == "unlink_would_lock_out"
        # Said to the service that asked, not to the account's owner ("your account page").
        assert told.json()["error"]["message"] == (
            "Discord is the only way to sign in to this account: unlinking it would lock its "
            "owner out. Once they have set a password (on their account page), it can be "
            "unlinked."
        )
        told = await client.delete("/api/v1/links/5150", headers=_bearer(writer))
        assert told.json()["error"]["code"] == "not_linked"
    unlinked = [e for e in db.tables.audit if e.kind is AuditKind.UNLINKED][-1]
    assert unlinked.detail["via"] == "api"
    assert unlinked.detail["api_key"] == "writer"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_ids_that_match_the_pattern_but_no_one_can_have_are_simply_not_linked(
    h: Harness,
) -> None:
    """The schema promises 1 to 20 digits; 0 and ids past a signed 64-bit number are such
    strings, and are linked to nothing (404, 409, "missing"), never a 400."""
    writer = _bearer((await h.container.create_api_key().execute("w", BOTH)).token)
    async with AsyncTestClient(app=create_app(h.container)) as client:
        for impossible in ("0", "00000000000000000000", "99999999999999999999", str(2**63)):
            found = await client.get(f"/api/v1/links/{impossible}", headers=writer)
            assert found.status_code == 404, found.text
            gone = await client.delete(f"/api/v1/links/{impossible}", headers=writer)
            assert gone.status_code == 409, gone.text
        bulk = await client.post(
            "/api/v1/links/lookup", json={"discord_ids": ["0", "7", "007", 7]}, headers=writer
        )
        assert bulk.json() == {"links": [], "missing": ["0", "7"]}
        for bad in ("-1", "1.5", " 1", "1" * 21, "%C2%B9"):
            refused = await client.get(f"/api/v1/links/{bad}", headers=writer)
            assert refused.status_code == 400, (bad, refused.text)
            assert "discord_id (path)" in refused.json()["error"]["message"]
        not_uuid = await client.get("/api/v1/accounts/not-a-uuid/link", headers=writer)
        assert not_uuid.status_code == 400
        assert "account_id (path)" in not_uuid.json()["error"]["message"]


async def test_a_refused_id_is_told_in_words_not_as_a_regular_expression(h: Harness) -> None:
    """Every refusal's message is for people. A malformed id was told as msgspec's regular
    expression, in the bulk lookup with the look-ahead that refuses a trailing line break,
    escaped twice: ``Expected `str` matching regex '^[0-9]{1,20}(?!\\\\n)$'``."""
    reader = _bearer((await h.container.create_api_key().execute("reader")).token)
    discord_id = "a Discord id is 1 to 20 digits (0-9), and nothing else"
    account_id = "an account id is a UUID (8-4-4-4-12 hexadecimal digits), and nothing else"
    async with AsyncTestClient(app=create_app(h.container)) as client:
        told = {
            "discord_id (path)": await client.get("/api/v1/links/-1", headers=reader),
            "discord_id (path) ": await client.get("/api/v1/links/1%0A", headers=reader),
            "discord_ids[1] (body)": await client.post(
                "/api/v1/links/lookup", json={"discord_ids": ["1", "\u0661"]}, headers=reader
            ),
            "account_id (path)": await client.get("/api/v1/accounts/x/link", headers=reader),
        }
    for part, answer in told.items():
        assert answer.status_code == 400, answer.text
        words = account_id if part.startswith("account_id") else discord_id
        assert answer.json()["error"]["message"] == (
            f"The request was not valid: {part.strip()}: {words}"
        )


async def test_a_path_id_is_read_as_a_number_as_a_lookup_reads_it(h: Harness) -> None:
    """Leading zeros change nothing, whatever the id's length: 20 digits such as
    ``00000000000000005150`` are 5150, as in a bulk lookup. They were read as "more than 19
    digits, so past 64 bits": the lookup said not linked, and an offboarding DELETE answered
    ``not_linked`` (which a service takes as done) while the link stayed."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    await h.discord_link(alice.id, h.discord_user(5150))
    writer = _bearer((await h.container.create_api_key().execute("w", BOTH)).token)
    padded = "5150".zfill(20)
    async with AsyncTestClient(app=create_app(h.container)) as client:
        bulk = await client.post(
            "/api/v1/links/lookup", json={"discord_ids": [padded]}, headers=writer
        )
        assert [link["discord_id"] for link in bulk.json()["links"]] == ["5150"]
        found = await client.get(f"/api/v1/links/{padded}", headers=writer)
        assert found.status_code == 200, found.text
        assert found.json()["discord_id"] == "5150"
        removed = await client.delete(f"/api/v1/links/{padded}", headers=writer)
        assert removed.status_code == 200, removed.text
        assert (await client.get("/api/v1/links/5150", headers=writer)).status_code == 404


async def test_options_lists_every_method_of_the_path(h: Harness) -> None:
    """Litestar 2 listed only the first handler's method (litestar#4169)."""
    async with AsyncTestClient(app=create_app(h.container)) as client:
        links = await client.options("/api/v1/links/1")
        assert links.status_code == 204
        assert links.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"
        assert (await client.options("/signin")).headers["allow"] == "GET, HEAD, OPTIONS, POST"
        wrong = await client.put("/api/v1/links/1")
        assert wrong.status_code == 405
        assert set(wrong.headers["allow"].split(", ")) == {"DELETE", "GET", "HEAD", "OPTIONS"}


async def test_head_is_served_wherever_get_is_with_the_gets_headers_and_no_body(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 9110: a server that serves GET serves HEAD, the same answer without its content.
    Litestar serves HEAD only where a handler says so: a HEAD of a lookup, of the OpenAPI
    document or of /healthz got 405, and tools that ask HEAD first (uptime monitors, link
    checkers, hey-api's watch mode, which asks HEAD of the schema) took the service for
    broken. A HEAD is the GET it stands for: the same key check, the same refusals."""
    alice = (await h.sign_up("alice", "alice@example.com")).account
    await h.discord_link(alice.id, h.discord_user(5150))
    reader = _bearer((await h.container.create_api_key().execute("reader")).token)
    caplog.set_level(logging.INFO, logger="taskflow_link.access")
    async with AsyncTestClient(app=create_app(h.container)) as client:
        for path, headers in (
            ("/api/v1/links/5150", reader),
            ("/api/v1/links/5151", reader),  # 404
            ("/api/v1/links/5150", {}),  # 401
            (f"/api/v1/accounts/{alice.id}/link", reader),
            ("/schema/openapi.json", {}),
            ("/schema", {}),
            ("/healthz", {}),
            ("/readyz", {}),
        ):
            got = await client.get(path, headers=headers)
            head = await client.head(path, headers=headers)
            assert head.status_code == got.status_code, (path, head.text)
            assert head.content == b"", path
            for name in ("content-type", "content-length", "cache-control", "www-authenticate"):
                assert head.headers.get(name) == got.headers.get(name), (path, name)
        # Where no GET is served, neither is HEAD; where GET is, Allow names HEAD too.
        lookup = await client.head("/api/v1/links/lookup", headers=reader)
        assert lookup.status_code == 405
        assert set(lookup.headers["allow"].split(", ")) == {"OPTIONS", "POST"}
        wrong = await client.put("/api/v1/links/1", headers=reader)
        assert set(wrong.headers["allow"].split(", ")) == {"DELETE", "GET", "HEAD", "OPTIONS"}
        options = await client.options("/api/v1/links/1")
        assert options.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"
    access = [r.getMessage() for r in caplog.records if r.name == "taskflow_link.access"]
    assert any(line.endswith("HEAD /api/v1/links/5150 200") for line in access), access


async def test_a_path_or_method_the_api_does_not_serve_is_told_in_the_apis_words(
    h: Harness,
) -> None:
    """A service's developer reads these, not a person at a browser: the JSON API has no
    pages, and a 405 says which methods to use."""
    async with AsyncTestClient(app=create_app(h.container)) as client:
        unknown = await client.get("/api/v1/link/1")
        wrong = await client.put("/api/v1/links/1")
        posted_only = await client.get("/api/v1/links/lookup")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {
        "code": "http_404",
        "message": "The JSON API has no route at this path: /schema/openapi.json lists its routes.",
    }
    for answer, method in ((wrong, "PUT"), (posted_only, "GET")):
        assert answer.status_code == 405
        said = re.fullmatch(
            rf"This path of the JSON API does not take {method}: use (.+) \(Allow lists them\)\.",
            answer.json()["error"]["message"],
        )
        assert said is not None, answer.text
        assert set(said[1].split(", ")) == set(answer.headers["allow"].split(", "))
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "DELETE", "OPTIONS", "HEAD"}
    assert set(posted_only.headers["allow"].split(", ")) == {"POST", "OPTIONS"}


def _patterns(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for v in node.values() for p in _patterns(v)]
    if isinstance(node, list):
        return [p for v in node for p in _patterns(v)]
    return []


async def test_the_schemas_patterns_work_in_regex_engines_without_look_around(
    h: Harness,
) -> None:
    """Clients generate validators from the schema, some with engines that have no look-ahead
    (Go's RE2, Rust's regex: pydantic-core's, tried here). An attacker's review: a
    look-ahead put in to refuse a trailing line break broke them."""
    async with AsyncTestClient(app=create_app(h.container)) as client:
        schema = (await client.get("/schema/openapi.json")).json()
    patterns = sorted(set(_patterns(schema["paths"])) | set(_patterns(schema["components"])))
    assert patterns
    broken = []
    for pattern in patterns:
        try:
            TypeAdapter(Annotated[str, StringConstraints(pattern=pattern)])
        except Exception as exc:
            broken.append((pattern, type(exc).__name__))
    assert broken == []


async def test_the_schema_documents_scopes_errors_and_id_patterns(h: Harness) -> None:
    async with AsyncTestClient(app=create_app(h.container)) as client:
        schema = (await client.get("/schema/openapi.json")).json()
    envelope = schema["components"]["schemas"]["ApiError"]
    assert envelope["required"] == ["error"]
    links = schema["paths"]["/api/v1/links/{discord_id}"]
    assert links["delete"]["security"] == [{"apiKey": ["links:write"]}]
    assert links["get"]["security"] == [{"apiKey": ["links:read"]}]
    assert set(links["delete"]["responses"]) == {"200", "400", "401", "403", "409", "429", "503"}
    for status in ("400", "401", "403", "409"):
        body = links["delete"]["responses"][status]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ApiError"}
    (discord_id,) = links["get"]["parameters"]
    assert discord_id["schema"]["pattern"] == "^[0-9]{1,20}$"
    (account_id,) = schema["paths"]["/api/v1/accounts/{account_id}/link"]["get"]["parameters"]
    assert account_id["schema"]["pattern"].startswith("^[0-9a-fA-F]{8}-")
    ready = schema["paths"]["/readyz"]["get"]["responses"]
    assert set(ready) == {"200", "503"}
    ready_body = schema["components"]["schemas"]["ReadyOut"]
    assert ready_body["properties"]["checks"]["additionalProperties"] == {"type": "string"}
    numbers = schema["components"]["schemas"]["LookupIn"]["properties"]["discord_ids"]
    assert numbers["items"]["oneOf"][1]["maximum"] == 2**63 - 1  # exact, not a float


async def test_the_schema_names_the_headers_each_refusal_carries(h: Harness) -> None:
    """A client generated from the schema learns when to come back (Retry-After on 429 and
    503) and how to authenticate (WWW-Authenticate on 401), as the answers say; the
    conformance run then checks each answer carries them."""
    async with AsyncTestClient(app=create_app(h.container)) as client:
        schema = (await client.get("/schema/openapi.json")).json()
    operations = [
        operation
        for path, item in schema["paths"].items()
        if path.startswith("/api/")
        for operation in item.values()
    ]
    assert len(operations) == 4
    for operation in operations:
        responses = operation["responses"]
        assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
        for status in ("429", "503"):
            retry_after = responses[status]["headers"]["Retry-After"]
            assert retry_after["required"] is True
            assert retry_after["schema"]["pattern"] == "^[0-9]+$"
        assert "RateLimit-Reset" in responses["429"]["headers"]


# -- the command line -------------------------------------------------------------------------


def test_an_unknown_scope_is_a_clear_command_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_STORAGE", "memory")
    result = CliRunner().invoke(cli, ["api-key", "create", "bot", "--scope", "links:admin"])
    assert result.exit_code == 2
    assert (
        "Invalid value for '--scope': 'links:admin' is not a scope: give links:read (look "
        "links up) or links:write (unlink)" in result.output
    )
    too_long = CliRunner().invoke(cli, ["api-key", "create", "bot", "--expires-in", "0"])
    assert too_long.exit_code == 2
    assert "--expires-in" in too_long.output


@pytest.mark.parametrize(
    "given",
    [
        ["--scope", "links:read,links:write"],  # as `api-key list` shows them
        ["--scope", "links:read links:write"],  # as `api-key create` and the audit trail do
        ["--scope", " links:write, links:read "],
        ["--scope", "links:read", "--scope", "links:write"],
    ],
    ids=["commas", "spaces", "both", "repeated"],
)
def test_scopes_are_named_as_the_commands_show_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, given: list[str]
) -> None:
    """`--scope links:read,links:write`, copied from `api-key list`, was refused as one
    unknown scope ("is not one of 'links:read', 'links:write'") without saying that several
    are named by repeating the option."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/t.db")
    assert CliRunner().invoke(cli, ["db", "upgrade"]).exit_code == 0
    created = CliRunner().invoke(cli, ["api-key", "create", "crm", *given])
    assert created.exit_code == 0, created.output
    assert "API key 'crm': links:read links:write; never expires." in created.stdout


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["--scope", "links:read", "--scope", "links:read"], "links:read is named twice"),
        (["--scope", "links:read,links:write,links:read"], "links:read is named twice"),
        (["--scope", ""], "give a scope: links:read (look links up) or links:write"),
        (["--scope", " , "], "give a scope: links:read (look links up) or links:write"),
        (
            ["--scope", "links:read;links:write"],
            "'links:read;links:write' is not a scope: give links:read (look links up) or "
            "links:write (unlink); several: repeat --scope, or separate them with commas",
        ),
        (["--scope", "Links:Read"], "'Links:Read' is not a scope: give links:read"),
    ],
    ids=["repeated", "listed-twice", "empty", "only-commas", "semicolon", "capitals"],
)
def test_a_scope_named_twice_or_not_at_all_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, given: list[str], said: str
) -> None:
    """A scope named twice was taken as once: a copy-and-paste slip where another scope was
    meant went unnoticed. Nothing is created (the database is not even looked at)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/t.db")
    refused = CliRunner().invoke(cli, ["api-key", "create", "crm", *given])
    assert refused.exit_code == 2, refused.output
    assert f"Invalid value for '--scope': {said}" in refused.stderr
    assert not (tmp_path / "t.db").exists()


async def test_a_key_is_sealed_with_the_servers_key(h: Harness) -> None:
    """The seal tells the per-key limit that this service issued a key, without a read: only
    the server's key makes one, any changed character breaks it, and an unsealed (older or
    made-up) token has none."""
    from adapters.tokens import SecretsTokenIssuer
    from domain.use_cases.api_keys import sealed_by_us

    token = (await h.container.create_api_key().execute("bot")).token
    tokens = h.container.tokens()
    assert re.fullmatch(r"tfl_[A-Za-z0-9_-]{65}", token)
    assert sealed_by_us(tokens, token)
    assert not sealed_by_us(SecretsTokenIssuer("another server's key " * 3), token)
    for n in range(4, len(token)):
        changed = token[:n] + ("a" if token[n] != "a" else "b") + token[n + 1 :]
        assert not sealed_by_us(tokens, changed)
    assert not sealed_by_us(tokens, token[:-22])
    assert not sealed_by_us(tokens, "tfl_" + token[-22:])


async def test_a_keys_budget_is_named_by_an_hmac_not_its_stored_digest(h: Harness) -> None:
    """The per-key limit's counts live in the shared store (Redis): they are named by an HMAC
    of the key's digest, not the digest its database row is found by (an attacker's review)."""
    first = (await h.container.create_api_key().execute("first")).token
    second = (await h.container.create_api_key().execute("second")).token
    identify = h.container.identify_api_key()
    tokens = h.container.tokens()
    named = await identify.execute(first)
    assert named is not None
    assert named == await identify.execute(first)  # the same budget every time
    assert named not in (tokens.digest(first), await identify.execute(second))
    assert tokens.digest(first) not in named


async def test_a_revoked_key_gets_no_budget_of_its_own_back_when_its_entry_lapses(
    h: Harness,
) -> None:
    """Requests the per-key limit refuses never renew the key's cache entry: a revoked key
    got a budget of its own back each time its entry lapsed, and a key without a seal fell
    back to its client's (an attacker's review). A lapsed entry still counts for the limit;
    the key check reads it again."""
    now = [0.0]
    cache = CachedApiKeyLookup(h.container.directory(), ttl_seconds=5, clock=lambda: now[0])
    h.container.api_keys.override(cache)
    revoked = await h.container.create_api_key().execute("leaked")
    live = await h.container.create_api_key().execute("bot")
    await h.container.revoke_api_key().execute("leaked")
    identify = h.container.identify_api_key()
    tokens = h.container.tokens()
    for created in (revoked, live):
        await cache.by_digest(tokens.digest(created.token))  # the key check read them
    assert await identify.execute(revoked.token) is None  # known revoked: its client's
    assert await identify.execute(live.token) is not None
    now[0] += 3600  # both entries lapsed long ago
    assert await identify.execute(revoked.token) is None
    assert await cache.known(tokens.digest(live.token)) == live.key
    assert await identify.execute(live.token) is not None
