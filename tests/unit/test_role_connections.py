"""Discord Linked Roles against the in-memory adapters: the verification URL's round trip, the
tokens kept (sealed) for it and only for it, refreshing, unlinking, ``invalid_grant``, key
rotation, and the races between them."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from adapters.memory import MemoryDatabase
from adapters.metrics import PrometheusMetrics
from adapters.queue_listener import ROLE_CONNECTION_CHANNEL
from adapters.secret_box import AesGcmSecretBox, key_id, parse_keys
from domain import errors
from domain.model import (
    ROLE_METADATA,
    AuditKind,
    AuthPurpose,
    DiscordId,
    EmailKind,
    OutgoingEmail,
    RoleConnectionLoss,
    RoleConnectionToken,
    RoleMetadataType,
    RoleSync,
)
from domain.policies import ROLE_GIVE_UP_UNLINKED_AFTER
from domain.ports import DiscordTokens
from domain.use_cases import AuthOutcome, RoleSyncReport
from domain.use_cases.links import LinkOfAccount
from domain.use_cases.role_connections import (
    CLAIM_LEASE,
    ForgetPreview,
    ForgetRoleConnections,
    KeyRotationReport,
    RefreshRoleConnections,
    RotateTokenKeys,
)
from entrypoints.cli import cli
from entrypoints.instrumentation import record_outcome
from entrypoints.role_connection_worker import log_report
from entrypoints.settings import SettingsError, load_settings
from tests.fakes.role_connections import (
    KEY_A,
    KEY_B,
    connected,
    fake,
    linked,
    refresh_pass,
    role_harness,
    rows,
    verify,
)
from tests.harness import PASSWORD, TEST_SECRET_KEY, Browser, Harness, make_settings


async def all_due(h: Harness) -> None:
    """Every row due now (as when ``linked_days`` changes)."""
    async with h.uow() as uow:
        await uow.role_connection_tokens.mark_all_due(h.clock.now())
        await uow.commit()


# -- settings -----------------------------------------------------------------------------------


def test_linked_roles_need_the_encryption_key() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(secret_key=TEST_SECRET_KEY, discord_role_connections=True, _env_file=None)
    assert "TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS" in str(refused.value)
    assert "TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY" in str(refused.value)


@pytest.mark.parametrize(
    "keys",
    ["not-a-key", base64.urlsafe_b64encode(b"short").decode(), f"{KEY_A},{KEY_A}", f"{KEY_A},"],
)
def test_a_bad_key_is_refused_without_showing_it(keys: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(secret_key=TEST_SECRET_KEY, token_encryption_key=keys, _env_file=None)
    assert "TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY" in str(refused.value)
    for part in keys.split(","):
        if part:
            assert part not in str(refused.value)


@pytest.mark.parametrize("key", [bytes(32), b"changeme" * 4, b"\x01\x02" * 16])
def test_a_key_no_random_generator_would_make_is_refused(key: bytes) -> None:
    """32 bytes of zeros (``AAAA…``, a placeholder) or a word repeated: the right length, but
    AES-GCM under it protects nothing. 32 random bytes have fewer than 16 different values
    about once in 3·10^16 draws."""
    text = base64.urlsafe_b64encode(key).decode()
    with pytest.raises(SettingsError) as refused:
        load_settings(secret_key=TEST_SECRET_KEY, token_encryption_key=text, _env_file=None)
    assert "TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY" in str(refused.value)
    assert "random" in str(refused.value)
    assert text not in str(refused.value)


def test_a_placeholder_key_can_be_rotated_away() -> None:
    """A review: a deployment that had a placeholder key (it was taken before) puts a random
    one first, to reseal its tokens with ``tokens rotate``: the older key is needed to open
    them, and refusing it too stopped every command, rotate with them (the tokens could only
    be thrown away). Only the newest key, which seals, is refused; an older one is warned of."""
    weak = base64.urlsafe_b64encode(b"changeme" * 4).decode()
    sealed = AesGcmSecretBox([b"changeme" * 4]).seal("tokens", context="c")
    settings = load_settings(
        secret_key=TEST_SECRET_KEY, token_encryption_key=f"{KEY_A},{weak}", _env_file=None
    )
    assert AesGcmSecretBox(settings.token_keys).open(sealed, context="c") == "tokens"
    (warning,) = [w for w in settings.warnings() if "TOKEN_ENCRYPTION_KEY" in w]
    assert "key(s) 2 are not random" in warning
    assert "tokens rotate" in warning
    assert weak not in warning


def test_config_hides_the_key() -> None:
    settings = make_settings(discord_role_connections=True, token_encryption_key=KEY_A)
    assert settings.shown()["TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY"] == "(set)"
    assert KEY_A not in repr(settings)


def _commands_on_a_database_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """The commands' settings from the environment, on a migrated SQLite file of this test
    (they refuse memory storage: what they did there would be gone when they exit)."""
    monkeypatch.chdir(tmp_path)  # away from a .env of the repository
    monkeypatch.setenv("TASKFLOW_LINK_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TASKFLOW_LINK_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'tl.db'}")
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    return runner


def test_config_prints_the_key_hidden_and_the_commands_refuse_without_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner = _commands_on_a_database_file(monkeypatch, tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY", f"{KEY_B},{KEY_A}")
    shown = runner.invoke(cli, ["config"])
    assert "TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY = (set)" in shown.output
    assert KEY_A not in shown.output
    assert KEY_B not in shown.output
    refused = runner.invoke(cli, ["role-connections", "refresh"])
    assert refused.exit_code == 1
    assert "Linked Roles are off" in refused.output
    rotated = runner.invoke(cli, ["tokens", "rotate"])  # nothing kept: nothing to do
    assert rotated.exit_code == 0, rotated.output
    assert "Re-encrypted 0 token set(s)" in rotated.output


# -- the secret box -----------------------------------------------------------------------------


def test_sealed_tokens_are_ciphertext_bound_to_their_context() -> None:
    box = AesGcmSecretBox(parse_keys(KEY_A))
    sealed = box.seal("access-token-value", context="discord-role-connection:1")
    assert "access-token-value" not in sealed
    assert sealed.startswith(f"v1.{key_id(parse_keys(KEY_A)[0])}.")
    assert box.seal("access-token-value", context="x") != box.seal(
        "access-token-value", context="x"
    )
    assert box.open(sealed, context="discord-role-connection:1") == "access-token-value"
    with pytest.raises(errors.SecretUnreadable):  # moved to another user's row
        box.open(sealed, context="discord-role-connection:2")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(errors.SecretUnreadable):
        box.open(tampered, context="discord-role-connection:1")


def test_older_keys_only_open() -> None:
    old = AesGcmSecretBox(parse_keys(KEY_A))
    sealed = old.seal("secret", context="c")
    rotated = AesGcmSecretBox(parse_keys(f"{KEY_B},{KEY_A}"))
    assert rotated.open(sealed, context="c") == "secret"
    assert not rotated.is_current(sealed)
    assert rotated.is_current(rotated.seal("secret", context="c"))
    assert old.is_current(sealed)
    with pytest.raises(errors.SecretUnreadable):  # the old key removed too early
        AesGcmSecretBox(parse_keys(KEY_B)).open(sealed, context="c")


def test_the_box_says_whether_a_value_names_one_of_its_keys() -> None:
    old, new = AesGcmSecretBox(parse_keys(KEY_A)), AesGcmSecretBox(parse_keys(f"{KEY_B},{KEY_A}"))
    sealed_new = new.seal("secret", context="c")
    assert new.has_key(sealed_new)
    assert new.has_key(old.seal("secret", context="c"))
    assert not old.has_key(sealed_new)  # an instance not yet given the new key
    assert old.has_key(old.seal("secret", context="other"))  # whether it opens is another matter
    for other in ("", "v2.x.y", "v1..y"):  # not a sealed value
        assert not old.has_key(other)


# -- the metadata and what is pushed --------------------------------------------------------------


def test_the_metadata_records_are_what_discord_accepts() -> None:
    assert [(f.key, f.type) for f in ROLE_METADATA] == [
        ("linked", RoleMetadataType.BOOLEAN_EQUAL),  # Discord's type 7
        ("linked_days", RoleMetadataType.INTEGER_GREATER_THAN_OR_EQUAL),  # type 2
    ]
    assert RoleMetadataType.BOOLEAN_EQUAL.value == 7
    assert RoleMetadataType.INTEGER_GREATER_THAN_OR_EQUAL.value == 2
    assert len(ROLE_METADATA) <= 5
    for record in ROLE_METADATA:
        assert record.key.replace("_", "").isalnum()
        assert record.key.islower()
        assert 1 <= len(record.name) <= 100
        assert 1 <= len(record.description) <= 200


# -- the verification URL ---------------------------------------------------------------------


async def test_a_signed_in_account_is_linked_and_its_connection_pushed(r: Harness) -> None:
    account = await connected(r, 7001)
    link = await r.container.link_of_account().execute(account)
    assert link is not None
    assert link.discord_id == DiscordId(7001)

    pushed = fake(r).connections[DiscordId(7001)]
    assert pushed.platform_name == "TaskFlow"
    assert pushed.platform_username == "alice"
    assert pushed.metadata == {"linked": "1", "linked_days": "0"}
    row = rows(r)[DiscordId(7001)]
    assert row.next_push_at == link.linked_at + timedelta(days=1)  # when linked_days changes
    assert row.failures == 0


async def test_the_kept_tokens_are_sealed_not_stored(r: Harness) -> None:
    await connected(r, 7002)
    row = rows(r)[DiscordId(7002)]
    access, refresh = fake(r).tokens_of(DiscordId(7002))
    assert access
    assert refresh
    for token in access | refresh:
        assert token not in row.sealed
        assert token not in repr(row)
    opened = json.loads(
        AesGcmSecretBox(parse_keys(KEY_A)).open(row.sealed, context="discord-role-connection:7002")
    )
    assert opened["access_token"] in access
    assert opened["refresh_token"] in refresh


async def test_a_linked_discord_account_signs_in_from_discord(r: Harness) -> None:
    account = await connected(r, 7003)
    fake(r).connections.clear()

    done = await verify(r, DiscordId(7003))  # a browser signed in to nothing

    assert done.outcome is AuthOutcome.SIGNED_IN
    assert done.account_id == account
    assert done.session_token is not None
    assert linked(fake(r).connections[DiscordId(7003)]) == ("1", "0")


async def test_a_discord_account_linked_to_nothing_is_told_to_sign_in(r: Harness) -> None:
    r.discord_user(7004)
    with pytest.raises(errors.DiscordNotLinkedYet):
        await verify(r, DiscordId(7004))
    assert rows(r) == {}
    assert fake(r).pushes == []


async def test_linking_first_needs_a_proof_as_on_the_account_page(r: Harness) -> None:
    account = (await r.sign_up("bob", "bob@example.com")).account
    r.discord_user(7005)
    r.clock.advance(timedelta(minutes=11))  # signing up no longer counts as a recent proof

    with pytest.raises(errors.ReauthenticationRequired):
        await verify(r, DiscordId(7005), signed_in=account.id)
    with pytest.raises(errors.InvalidCredentials):
        await verify(r, DiscordId(7005), signed_in=account.id, password="wrong password!")
    assert rows(r) == {}

    done = await verify(r, DiscordId(7005), signed_in=account.id, password=PASSWORD)
    assert done.purpose is AuthPurpose.ROLES_LINK
    assert done.outcome is AuthOutcome.LINKED
    assert DiscordId(7005) in rows(r)


async def test_a_linked_account_needs_no_proof_but_the_same_discord_account(r: Harness) -> None:
    account = await connected(r, 7006)
    r.clock.advance(timedelta(minutes=30))  # no recent proof
    other = r.discord_user(7007)

    with pytest.raises(errors.WrongDiscordAccount):
        await verify(r, other.id, signed_in=account)
    assert DiscordId(7007) not in rows(r)

    again = await verify(r, DiscordId(7006), signed_in=account)
    assert again.purpose is AuthPurpose.ROLES  # nothing may be linked by this flow
    assert again.outcome is AuthOutcome.ALREADY_LINKED


async def test_a_grant_without_the_role_scope_is_refused(r: Harness) -> None:
    account = (await r.sign_up("carol", "carol@example.com")).account
    r.discord_user(7008)
    browser = Browser()
    started = await r.container.start_linked_role().execute(
        session_token=await r.session_for(account.id), browser_tokens=()
    )
    browser.bindings = started.browser_tokens
    # The person (or a tampered URL) grants only "identify".
    narrowed = started.authorize_url.replace("role_connections.write", "")
    approval = r.discord.approve(narrowed, DiscordId(7008))
    with pytest.raises(errors.DiscordDenied):
        await r.complete(browser, state=approval.state, code=approval.code, signed_in=account.id)
    assert rows(r) == {}


async def test_a_push_that_fails_is_retried_by_the_worker(r: Harness) -> None:
    account = (await r.sign_up("dave", "dave@example.com")).account
    r.discord_user(7009)
    fake(r).push_outage = errors.DiscordUnavailable()

    done = await verify(r, DiscordId(7009), signed_in=account.id)

    assert done.outcome is AuthOutcome.LINKED  # the link stands
    assert done.role_sync is RoleSync.FAILED
    row = rows(r)[DiscordId(7009)]
    assert row.failures == 1
    assert row.next_push_at == r.clock.now() + timedelta(minutes=1)
    fake(r).push_outage = None
    assert (await refresh_pass(r)).pushed == 0  # not due yet
    r.clock.advance(timedelta(minutes=1))
    assert (await refresh_pass(r)).pushed == 1
    assert linked(fake(r).connections[DiscordId(7009)]) == ("1", "0")
    assert rows(r)[DiscordId(7009)].failures == 0


# -- no token without the setting -----------------------------------------------------------------


async def test_without_the_setting_no_discord_token_is_ever_kept(
    h: Harness, db: MemoryDatabase
) -> None:
    assert h.container.role_connection_flow.provider is not None
    # Every other flow: sign-up by Discord, sign-in, linking from the account page.
    await h.discord_login(h.discord_user(7100, email="x@example.com"))
    await h.discord_login(h.discord_user(7100))
    account = (await h.sign_up("erin", "erin@example.com")).account
    await h.discord_link(account.id, h.discord_user(7101))
    assert db.tables.role_connection_tokens == {}

    # A verification URL's round trip cannot even complete.
    started = await h.container.start_linked_role().execute(session_token=None, browser_tokens=())
    approval = h.discord.approve(started.authorize_url, DiscordId(7100))
    with pytest.raises(errors.NotFound):
        await h.complete(
            Browser(bindings=started.browser_tokens), state=approval.state, code=approval.code
        )
    assert db.tables.role_connection_tokens == {}


# -- keeping it current -------------------------------------------------------------------------


async def test_linked_days_are_pushed_when_they_change_refreshing_the_expired_token(
    r: Harness,
) -> None:
    await connected(r, 7010)
    before = rows(r)[DiscordId(7010)]
    _, old_refresh = fake(r).tokens_of(DiscordId(7010))

    r.clock.advance(timedelta(hours=23))
    assert (await refresh_pass(r)).total == 0  # nothing due before the day is over
    r.clock.advance(timedelta(days=7, hours=1))  # 8 days: the 7-day access token expired
    report = await refresh_pass(r)

    assert report.pushed == 1
    assert fake(r).refreshes == 1
    assert fake(r).denied == 0  # refreshed before use: an expired token is never sent
    assert linked(fake(r).connections[DiscordId(7010)]) == ("1", "8")
    after = rows(r)[DiscordId(7010)]
    assert after.sealed != before.sealed
    assert after.expires_at == r.clock.now() + timedelta(days=7)
    assert not old_refresh & fake(r).tokens_of(DiscordId(7010))[1]  # rotated: the old is spent


async def test_a_token_discord_ended_early_is_refreshed_and_pushed(r: Harness) -> None:
    await connected(r, 7011)
    fake(r).expire(DiscordId(7011))  # still valid by our clock: Discord answers 401

    report = await refresh_pass(r, everything=True)

    assert report.pushed == 1
    assert fake(r).refreshes == 1
    assert len(fake(r).pushes) == 2


async def test_invalid_grant_deletes_the_tokens(r: Harness) -> None:
    await connected(r, 7012)
    fake(r).deauthorize(DiscordId(7012))  # the person removed the app in Discord

    report = await refresh_pass(r, everything=True)

    assert report.revoked == 1
    assert DiscordId(7012) not in rows(r)
    database: MemoryDatabase = r.container.memory_db()
    deleted = [e for e in database.tables.audit if e.kind is AuditKind.ROLE_TOKENS_DELETED]
    assert [e.detail for e in deleted] == [{"reason": "invalid_grant"}]


async def test_a_revoked_token_ends_the_role_connection_as_removing_the_app_does(
    r: Harness,
) -> None:
    """Discord: revoking a token revokes the whole grant, a deauthorization as removing the
    app is. The fake's revoke (the plain OAuth fake's) left the role connection, and the
    tokens it keeps for it, alive: pushes with a revoked grant went on succeeding."""
    await connected(r, 7091)
    access, refresh = fake(r).tokens_of(DiscordId(7091))
    assert access
    assert refresh
    assert DiscordId(7091) in fake(r).connections
    await fake(r).revoke(DiscordTokens(next(iter(access)), frozenset({"identify"})))

    assert fake(r).tokens_of(DiscordId(7091)) == (set(), set())
    assert DiscordId(7091) not in fake(r).connections
    report = await refresh_pass(r, everything=True)
    assert report.revoked == 1
    assert DiscordId(7091) not in rows(r)


def lost_notices(h: Harness) -> list[OutgoingEmail]:
    database: MemoryDatabase = h.container.memory_db()
    return [
        e
        for e in database.tables.outgoing_emails.values()
        if e.kind is EmailKind.ROLE_CONNECTION_LOST
    ]


@pytest.mark.parametrize("confirmed", [True, False])
async def test_a_connection_lost_to_invalid_grant_is_said_until_connected_again(
    r: Harness, confirmed: bool
) -> None:
    """The person removed the app in Discord (or Discord ended the grant): the tokens go, and
    nothing can push their connection again. It was silent: their roles went, with no word
    here. Their account page says so (and offers to connect again) and a confirmed address
    is emailed (an unconfirmed one may be someone else's: never)."""
    account = await connected(r, 7014, "lou")
    if confirmed:
        await r.mark_email_verified(account)
    fake(r).deauthorize(DiscordId(7014))

    assert (await refresh_pass(r, everything=True)).revoked == 1

    link = await r.container.link_of_account().execute(account)
    assert link is not None
    assert link.role_connection_lost_at == r.clock.now()
    assert link.role_connection_lost_why is RoleConnectionLoss.REVOKED
    notices = lost_notices(r)
    assert [(e.to, e.detail) for e in notices] == (
        [
            (
                "lou@example.com",
                {"discord_username": "d_lou", "discord_id": str(link.discord_id), "why": "revoked"},
            )
        ]
        if confirmed
        else []
    )
    # Connecting again (the account page's button leads to the verification URL) ends it.
    r.clock.advance(timedelta(minutes=5))
    done = await verify(r, DiscordId(7014), signed_in=account)
    assert done.role_sync is RoleSync.PUSHED
    link = await r.container.link_of_account().execute(account)
    assert link is not None
    assert (link.role_connection_lost_at, link.role_connection_lost_why) == (None, None)


async def test_a_lost_connection_is_not_said_for_the_unlinked_nor_once_linked_roles_is_off(
    r: Harness,
) -> None:
    """Someone who unlinked asked for it to end, and forgetting (Linked Roles turned off)
    ends every connection on purpose: no loss to tell of. A loss recorded while Linked Roles
    was on is not shown once it is off: nothing could connect again."""
    gone = await connected(r, 7015, "max")
    kept = await connected(r, 7016, "ned")
    forgotten = await connected(r, 7017, "oli")
    for account in (gone, kept, forgotten):
        await r.mark_email_verified(account)
    await r.container.unlink_discord().execute(DiscordId(7015))
    fake(r).deauthorize(DiscordId(7015))
    fake(r).deauthorize(DiscordId(7016))
    assert (await refresh_pass(r, everything=True)).revoked == 2
    assert [e.to for e in lost_notices(r)] == ["ned@example.com"]
    fake(r).deauthorize(DiscordId(7017))
    assert (await r.container.forget_role_connections().execute()).revoked == 1
    assert [e.to for e in lost_notices(r)] == ["ned@example.com"]
    database: MemoryDatabase = r.container.memory_db()
    assert database.tables.links[DiscordId(7017)].role_connection_lost_at is None

    link = await r.container.link_of_account().execute(kept)
    assert link is not None
    assert link.role_connection_lost_at is not None
    hidden = await LinkOfAccount(r.container.uow(), role_connections=False).execute(kept)
    assert hidden is not None
    assert (hidden.role_connection_lost_at, hidden.role_connection_lost_why) == (None, None)


@pytest.mark.parametrize("how", ["bot", "account page"])
async def test_unlinking_pushes_not_linked_then_deletes_the_tokens(r: Harness, how: str) -> None:
    account = await connected(r, 7013)
    if how == "bot":
        await r.container.unlink_discord().execute(DiscordId(7013))
    else:
        await r.container.unlink_account().execute(
            session_token=await r.session_for(account), current_password=PASSWORD
        )
    assert rows(r)[DiscordId(7013)].next_push_at == r.clock.now()  # due at once

    report = await refresh_pass(r)

    assert report.cleared == 1
    assert linked(fake(r).connections[DiscordId(7013)]) == ("0", "0")
    assert fake(r).connections[DiscordId(7013)].platform_username is None
    assert rows(r) == {}


def instance(of: Harness, keys: str) -> Harness:
    """Another instance on ``of``'s rows and Discord, at the same time, configured with
    ``keys`` (``TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY``)."""
    other = role_harness(keys)
    other.container.memory_db.override(of.container.memory_db())
    other.container.discord_role_connections.override(fake(of))
    other.clock.advance(of.clock.now() - other.clock.now())
    return other


async def test_tokens_a_configured_key_does_not_open_are_kept_and_tried_in_6_hours(
    r: Harness,
) -> None:
    await connected(r, 7014, "alice")
    await connected(r, 7017, "bob")
    database: MemoryDatabase = r.container.memory_db()
    copied = replace(rows(r)[DiscordId(7017)], sealed=rows(r)[DiscordId(7014)].sealed)
    database.tables.role_connection_tokens[DiscordId(7017)] = copied  # bound to 7014: no use

    report = await refresh_pass(r, everything=True)

    assert report == RoleSyncReport(pushed=1, unreadable=1)
    assert rows(r)[DiscordId(7017)].next_push_at == r.clock.now() + timedelta(hours=6)


async def test_tokens_sealed_with_a_key_not_configured_here_back_off_to_6_hours(
    r: Harness,
) -> None:
    await connected(r, 7018)
    other = instance(r, KEY_B)  # the key that sealed them removed (everywhere, as it turns out)

    waits: list[timedelta] = []
    for _ in range(6):
        report = await refresh_pass(other, everything=not waits)
        assert report == RoleSyncReport(key_missing=1)  # kept: the key may come back
        waits.append(rows(r)[DiscordId(7018)].next_push_at - other.clock.now())
        other.clock.advance(waits[-1])

    minutes = [wait // timedelta(minutes=1) for wait in waits]
    assert minutes == [1, 5, 30, 120, 360, 360]  # as after failed pushes, then every 6 h


async def test_tokens_a_configured_key_does_not_open_are_said_lost_once(r: Harness) -> None:
    """Tokens kept but opened by no key here keep nothing current (days linked, an unlink):
    the member was never told until an operator ran ``tokens rotate --drop-unreadable``. A
    configured key that fails to open them never will: their account page says the
    connection needs making again (a confirmed address is emailed once), at the first try."""
    account = await connected(r, 7030, "uma")
    await r.mark_email_verified(account)
    database: MemoryDatabase = r.container.memory_db()
    row = rows(r)[DiscordId(7030)]
    tail = "BBBB" if row.sealed.endswith("AAAA") else "AAAA"
    altered = replace(row, sealed=row.sealed[:-4] + tail)  # its tag no longer matches
    database.tables.role_connection_tokens[DiscordId(7030)] = altered

    assert (await refresh_pass(r, everything=True)).unreadable == 1

    link = await r.container.link_of_account().execute(account)
    assert link is not None
    assert link.role_connection_lost_at == r.clock.now()
    assert link.role_connection_lost_why is RoleConnectionLoss.UNREADABLE
    assert DiscordId(7030) in rows(r)  # kept: the key may come back
    told = r.clock.now()
    r.clock.advance(timedelta(hours=6))
    assert (await refresh_pass(r)).unreadable == 1
    # Said once: neither the next tries nor dropping the tokens tell again.
    dropped = await r.container.rotate_token_keys().execute(drop_unreadable=True)
    assert dropped.unreadable == 1
    assert [e.to for e in lost_notices(r)] == ["uma@example.com"]
    link = await r.container.link_of_account().execute(account)
    assert link is not None
    assert link.role_connection_lost_at == told
    # Connecting again ends it.
    assert (await verify(r, DiscordId(7030), signed_in=account)).role_sync is RoleSync.PUSHED
    link = await r.container.link_of_account().execute(account)
    assert link is not None
    assert link.role_connection_lost_at is None


async def test_tokens_whose_key_is_missing_for_hours_are_said_lost_until_it_comes_back(
    r: Harness,
) -> None:
    """A rotation's rollout leaves a row to an instance with the new key for minutes; a key
    missing from every instance that tried for the 1, 5, 30 min and 2 h tries is most likely
    gone: the member is told then (not at the first try). If the key comes back after all,
    the next push that goes through ends it."""
    account = await connected(r, 7031, "vic")
    await r.mark_email_verified(account)
    other = instance(r, KEY_B)  # KEY_A removed: no instance has it

    said: list[bool] = []
    for n in range(5):
        assert await refresh_pass(other, everything=not n) == RoleSyncReport(key_missing=1)
        link = await other.container.link_of_account().execute(account)
        assert link is not None
        said.append(link.role_connection_lost_at is not None)
        other.clock.advance(rows(r)[DiscordId(7031)].next_push_at - other.clock.now())
    assert said == [False, False, False, True, True]
    assert link is not None
    assert link.role_connection_lost_why is RoleConnectionLoss.UNREADABLE
    assert [e.to for e in lost_notices(r)] == ["vic@example.com"]

    r.clock.advance(other.clock.now() - r.clock.now())  # the key back (this instance has it)
    assert (await refresh_pass(r)).pushed == 1
    link = await r.container.link_of_account().execute(account)
    assert link is not None
    assert (link.role_connection_lost_at, link.role_connection_lost_why) == (None, None)


def test_a_pass_says_in_its_one_line_how_many_it_left_for_their_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="taskflow_link.role_connections"):
        log_report(RoleSyncReport(pushed=2, key_missing=3))
        log_report(RoleSyncReport(pushed=2))

    left, fine = caplog.records
    assert left.levelno == logging.WARNING
    assert "3 sealed with a key not configured here" in left.getMessage()
    assert fine.levelno == logging.INFO
    assert "key not configured" not in fine.getMessage()


async def test_mid_rollout_an_instance_without_the_new_key_leaves_rows_to_one_with_it() -> None:
    # helper-62's review. Step 1 of a rotation, mid rolling restart: one instance has NEW,OLD,
    # one still only OLD. An unlink's row sealed with NEW went 6 hours out when the old
    # instance's worker claimed it first: the member kept the role that long.
    new = role_harness(f"{KEY_B},{KEY_A}")
    old = instance(new, KEY_A)
    await connected(new, 7019)  # sealed with NEW
    await new.container.unlink_discord().execute(DiscordId(7019))  # due now: "not linked"

    assert await refresh_pass(old) == RoleSyncReport(key_missing=1)
    assert rows(new)[DiscordId(7019)].next_push_at == new.clock.now() + timedelta(minutes=1)
    assert linked(fake(new).connections[DiscordId(7019)]) == ("1", "0")  # not told yet

    new.clock.advance(timedelta(minutes=1))
    assert await refresh_pass(new) == RoleSyncReport(cleared=1)
    assert linked(fake(new).connections[DiscordId(7019)]) == ("0", "0")
    assert rows(new) == {}


async def test_key_rotation_reseals_with_the_newest_key(r: Harness) -> None:
    await connected(r, 7015, "alice")
    await connected(r, 7016, "bob")
    rotated = role_harness(f"{KEY_B},{KEY_A}")
    rotated.container.memory_db.override(r.container.memory_db())
    rotated.container.discord_role_connections.override(fake(r))

    report = await rotated.container.rotate_token_keys().execute()
    assert (report.rotated, report.current, report.unreadable) == (2, 0, 0)
    again = await rotated.container.rotate_token_keys().execute()
    assert (again.rotated, again.current) == (0, 2)

    new_id = key_id(parse_keys(KEY_B)[0])
    assert all(row.sealed.startswith(f"v1.{new_id}.") for row in rows(r).values())
    only_new = role_harness(KEY_B)  # the old key removed: everything still opens
    only_new.container.memory_db.override(r.container.memory_db())
    only_new.container.discord_role_connections.override(fake(r))
    assert (await refresh_pass(only_new, everything=True)).pushed == 2


# -- races ----------------------------------------------------------------------------------------


async def test_concurrent_passes_push_each_connection_once(r: Harness) -> None:
    await connected(r, 7020, "alice")
    await connected(r, 7021, "bob")
    await all_due(r)
    pushes_before = len(fake(r).pushes)

    reports = await asyncio.gather(*(refresh_pass(r) for _ in range(5)))

    assert sum(report.pushed for report in reports) == 2
    assert len(fake(r).pushes) - pushes_before == 2


async def test_an_unlink_during_a_push_ends_with_not_linked(r: Harness) -> None:
    await connected(r, 7022)

    async def unlink_meanwhile() -> None:  # the bot's /unlink commits while Discord answers
        await r.container.unlink_discord().execute(DiscordId(7022))

    fake(r).during_push = unlink_meanwhile
    outcome = await r.container.role_connection_pusher().sync(rows(r)[DiscordId(7022)])

    assert outcome is RoleSync.CLEARED
    assert [linked(c) for _, c in fake(r).pushes[-2:]] == [("1", "0"), ("0", "0")]
    assert rows(r) == {}


async def test_an_unlink_during_a_push_is_pushed_by_the_claimant_not_a_second_worker(
    r: Harness,
) -> None:
    # Worker A pushes "linked"; meanwhile the member is unlinked and worker B (another
    # instance, woken by the unlink) runs a pass. Had B pushed "not linked" beside A, A's
    # push could reach Discord last and the Linked Role stay, its tokens deleted.
    await connected(r, 7025)
    await all_due(r)  # linked_days changes: the row is due
    second: list[RoleSyncReport] = []

    async def unlink_then_another_worker_runs() -> None:
        await r.container.unlink_discord().execute(DiscordId(7025))
        second.append(await refresh_pass(r))

    fake(r).during_push = unlink_then_another_worker_runs
    first = await refresh_pass(r)

    assert second == [RoleSyncReport()]  # the row was A's: B left it alone
    assert first == RoleSyncReport(cleared=1)  # A pushed again what is current
    assert [linked(c) for _, c in fake(r).pushes[-2:]] == [("1", "0"), ("0", "0")]
    assert linked(fake(r).connections[DiscordId(7025)]) == ("0", "0")
    assert rows(r) == {}


async def test_a_push_stalled_past_its_lease_is_followed_by_what_is_current(
    r: Harness,
) -> None:
    # Worker A's push of "linked" stalls past its lease; meanwhile the member unlinks and
    # worker B, A's lease run out, pushes "not linked" and deletes the tokens. A's push then
    # lands: "linked" last. A finds the row gone and the member not linked, so it pushes "not
    # linked" once more with the tokens in hand. (The guild roles' analogue was found by an
    # attacker's review.)
    await connected(r, 7041)
    await all_due(r)
    second: list[RoleSyncReport] = []

    async def stall_while_another_worker_takes_over() -> None:
        await r.container.unlink_discord().execute(DiscordId(7041))
        r.clock.advance(CLAIM_LEASE + timedelta(seconds=1))
        second.append(await refresh_pass(r))

    fake(r).during_push = stall_while_another_worker_takes_over
    first = await refresh_pass(r)

    assert second == [RoleSyncReport(cleared=1)]  # B: "not linked", tokens deleted
    assert [linked(c) for _, c in fake(r).pushes[-3:]] == [("0", "0"), ("1", "0"), ("0", "0")]
    assert linked(fake(r).connections[DiscordId(7041)]) == ("0", "0")
    assert first == RoleSyncReport(gone=1)
    assert rows(r) == {}


@pytest.mark.parametrize(
    "refusal",
    [errors.DiscordUnavailable(), errors.DiscordRateLimited(30.0, global_limit=True)],
    ids=["unavailable", "rate-limited"],
)
async def test_a_stalled_push_whose_not_linked_fails_keeps_the_tokens_to_say_it_later(
    r: Harness, refusal: errors.DomainError
) -> None:
    # An attacker's review: as above, A's late "linked" lands after B's "not linked", and B
    # has deleted the tokens. A's "not linked" with the tokens in hand was its only chance:
    # when Discord did not take it (down, a 429, a pause holding), the tokens were dropped
    # and Discord showed the unlinked member "linked" for good, with nothing left to tell it
    # otherwise. Now A keeps them (a row, due) for a later pass to push "not linked" and
    # delete them.
    await connected(r, 7043)
    await all_due(r)
    second: list[RoleSyncReport] = []

    async def refused() -> None:  # inside A's "not linked" with the tokens in hand
        raise refusal

    async def stall_while_another_worker_takes_over() -> None:
        await r.container.unlink_discord().execute(DiscordId(7043))
        r.clock.advance(CLAIM_LEASE + timedelta(seconds=1))
        second.append(await refresh_pass(r))
        fake(r).during_push = refused

    fake(r).during_push = stall_while_another_worker_takes_over
    first = await refresh_pass(r)

    assert second == [RoleSyncReport(cleared=1)]  # B: "not linked", tokens deleted
    assert first == RoleSyncReport(gone=1)
    assert linked(fake(r).connections[DiscordId(7043)]) == ("1", "0")  # A's, late
    assert set(rows(r)) == {DiscordId(7043)}  # kept to say it later

    r.clock.advance(timedelta(minutes=1))
    assert (await refresh_pass(r)).cleared == 1
    assert linked(fake(r).connections[DiscordId(7043)]) == ("0", "0")
    assert rows(r) == {}


async def test_a_stalled_push_does_not_say_not_linked_while_the_members_pushes_wait(
    r: Harness,
) -> None:
    # As above, but the other worker's "not linked" used up the member's own push limit
    # (X-RateLimit-Remaining: 0, per token; the same pause as after a 429 to that member's
    # push, global or not). A's "not linked" with the tokens in hand went out anyway: a
    # certain 429, counted towards Discord's limit of invalid requests per address (10,000
    # 401/403/429 in 10 minutes ban it). Now A keeps the tokens for a later pass, as when
    # Discord does not take it, without calling.
    await connected(r, 7045)
    await all_due(r)
    fake(r).push_limit = 1  # a call per window (10 s), per user
    second: list[RoleSyncReport] = []

    async def stall_while_another_worker_takes_over() -> None:
        await r.container.unlink_discord().execute(DiscordId(7045))
        r.clock.advance(CLAIM_LEASE + timedelta(seconds=1))  # A's window is over
        second.append(await refresh_pass(r))  # B's push uses the member's call

    fake(r).during_push = stall_while_another_worker_takes_over
    first = await refresh_pass(r)

    assert second == [RoleSyncReport(cleared=1)]  # B: "not linked", tokens deleted
    assert first == RoleSyncReport(gone=1)
    assert fake(r).limited == 0  # no 429
    assert fake(r).calls.count("push") == 3  # the callback's, A's, B's: nothing more
    assert linked(fake(r).connections[DiscordId(7045)]) == ("1", "0")  # A's, late
    assert set(rows(r)) == {DiscordId(7045)}  # kept to say it later
    assert rows(r)[DiscordId(7045)].failures == 0

    r.clock.advance(fake(r).limit_window)
    assert (await refresh_pass(r)).cleared == 1
    assert linked(fake(r).connections[DiscordId(7045)]) == ("0", "0")
    assert rows(r) == {}
    assert fake(r).limited == 0


async def test_a_stalled_push_whose_not_linked_meets_a_revoked_grant_keeps_no_tokens(
    r: Harness,
) -> None:
    # An attacker's second look: as above, but the member also removed the app in Discord
    # before A's "not linked" went out: Discord refused its access token, and A kept the
    # tokens (a row, audited as stored) though the member had revoked them, until a later
    # pass met invalid_grant. Discord dropped the connection with the grant: there is
    # nothing left to tell it, nor tokens to keep.
    await connected(r, 7047)
    await all_due(r)
    second: list[RoleSyncReport] = []

    async def the_member_removes_the_app() -> None:  # inside A's "not linked"
        fake(r).deauthorize(DiscordId(7047))

    async def stall_while_another_worker_takes_over() -> None:
        await r.container.unlink_discord().execute(DiscordId(7047))
        r.clock.advance(CLAIM_LEASE + timedelta(seconds=1))
        second.append(await refresh_pass(r))
        fake(r).during_push = the_member_removes_the_app

    fake(r).during_push = stall_while_another_worker_takes_over
    first = await refresh_pass(r)

    assert second == [RoleSyncReport(cleared=1)]
    assert first == RoleSyncReport(gone=1)
    assert rows(r) == {}  # nothing kept
    database: MemoryDatabase = r.container.memory_db()
    stored = [e for e in database.tables.audit if e.kind is AuditKind.ROLE_TOKENS_STORED]
    assert all(e.detail.get("reason") != "late_push" for e in stored)


async def test_a_stalled_push_whose_not_linked_meets_an_ended_access_token_keeps_new_tokens(
    r: Harness,
) -> None:
    # Discord ended the access token early (the grant stands): A refreshes to keep tokens
    # that work, and a later pass pushes "not linked" with them and deletes them.
    await connected(r, 7049)
    await all_due(r)

    async def the_access_token_ends() -> None:  # inside A's "not linked"
        fake(r).expire(DiscordId(7049))

    async def stall_while_another_worker_takes_over() -> None:
        await r.container.unlink_discord().execute(DiscordId(7049))
        r.clock.advance(CLAIM_LEASE + timedelta(seconds=1))
        await refresh_pass(r)
        fake(r).during_push = the_access_token_ends

    fake(r).during_push = stall_while_another_worker_takes_over
    assert await refresh_pass(r) == RoleSyncReport(gone=1)
    assert linked(fake(r).connections[DiscordId(7049)]) == ("1", "0")  # A's, late
    assert set(rows(r)) == {DiscordId(7049)}  # kept to say it later

    r.clock.advance(timedelta(minutes=1))
    assert (await refresh_pass(r)).cleared == 1
    assert linked(fake(r).connections[DiscordId(7049)]) == ("0", "0")
    assert rows(r) == {}


async def test_a_claim_whose_holder_stopped_is_taken_when_its_lease_ends(r: Harness) -> None:
    await connected(r, 7026)
    now = r.clock.now()
    async with r.uow() as uow:
        tokens = uow.role_connection_tokens
        await tokens.mark_all_due(now)
        [held] = await tokens.claim_due(now, now + CLAIM_LEASE, 10)  # its process then dies
        await tokens.mark_due(DiscordId(7026), now)  # an unlink meanwhile
        await uow.commit()
    assert await refresh_pass(r) == RoleSyncReport()
    r.clock.advance(CLAIM_LEASE)
    assert await refresh_pass(r) == RoleSyncReport(pushed=1)
    assert rows(r)[DiscordId(7026)].claimed_until is None
    assert held.claimed_until == now + CLAIM_LEASE


async def test_a_new_grant_during_a_workers_push_is_pushed_by_that_worker(r: Harness) -> None:
    account = await connected(r, 7027)
    await all_due(r)
    before = rows(r)[DiscordId(7027)]
    granted: list[RoleSync | None] = []

    async def the_member_verifies_again() -> None:
        done = await verify(r, DiscordId(7027), signed_in=account)
        granted.append(done.role_sync)

    fake(r).during_push = the_member_verifies_again
    pushes_before = len(fake(r).pushes)
    report = await refresh_pass(r)

    assert granted == [None]  # the callback stored the tokens and left the push to the worker
    assert report == RoleSyncReport(pushed=1)
    assert len(fake(r).pushes) - pushes_before == 2  # the worker's, then again with new tokens
    after = rows(r)[DiscordId(7027)]
    assert after.sealed != before.sealed
    assert after.claimed_until is None


async def test_the_callbacks_own_push_holds_the_claim(r: Harness) -> None:
    account = (await r.sign_up("carol", "carol@example.com")).account.id
    r.discord_user(7028, username="d_carol")
    await verify(r, DiscordId(7028), signed_in=account)
    await all_due(r)
    during: list[RoleSyncReport] = []

    async def a_worker_runs() -> None:
        during.append(await refresh_pass(r))

    fake(r).during_push = a_worker_runs
    done = await verify(r, DiscordId(7028), signed_in=account)

    assert done.role_sync is RoleSync.PUSHED
    assert during == [RoleSyncReport()]  # the callback's row: not pushed beside it
    assert rows(r)[DiscordId(7028)].claimed_until is None


async def test_a_second_pusher_of_a_held_row_pushes_nothing(r: Harness) -> None:
    await connected(r, 7023)
    r.clock.advance(timedelta(days=8))
    stale = rows(r)[DiscordId(7023)]
    pusher = r.container.role_connection_pusher()
    inner: list[RoleSync] = []

    async def another_pusher_meanwhile() -> None:
        inner.append(await pusher.sync(stale))

    fake(r).during_refresh = another_pusher_meanwhile
    outcome = await pusher.sync(stale)

    assert inner == [RoleSync.GONE]  # the first one holds the row: it refreshes and pushes
    assert outcome is RoleSync.PUSHED
    assert fake(r).refreshes == 1
    assert DiscordId(7023) in rows(r)


async def test_a_new_grant_during_a_refresh_is_pushed_with_its_tokens(r: Harness) -> None:
    account = await connected(r, 7029)
    r.clock.advance(timedelta(days=8))  # due, and the access token has expired
    granted: list[RoleSync | None] = []

    async def the_member_verifies_again() -> None:
        granted.append((await verify(r, DiscordId(7029), signed_in=account)).role_sync)

    fake(r).during_refresh = the_member_verifies_again
    report = await refresh_pass(r)

    assert granted == [None]  # stored, and left to the worker that held the row
    assert report == RoleSyncReport(pushed=1)
    after = rows(r)[DiscordId(7029)]
    assert after.claimed_until is None
    assert after.expires_at > r.clock.now()  # the new grant's tokens


async def test_a_pusher_whose_lease_ran_out_does_not_push_beside_the_one_that_took_over(
    r: Harness,
) -> None:
    # Worker A claimed a batch, and reached this row only after its lease ran out: worker B
    # took it over. A's push could land after B's (after an unlink: "linked" last, for good).
    await connected(r, 7030)
    now = r.clock.now()
    async with r.uow() as uow:
        await uow.role_connection_tokens.mark_all_due(now)
        [late] = await uow.role_connection_tokens.claim_due(now, now + CLAIM_LEASE, 50)
        await uow.commit()
    r.clock.advance(CLAIM_LEASE + timedelta(seconds=1))
    a: list[RoleSync] = []

    async def worker_a_gets_to_it() -> None:
        a.append(await r.container.role_connection_pusher().sync(late))

    fake(r).during_push = worker_a_gets_to_it
    pushes_before = len(fake(r).pushes)
    assert await refresh_pass(r) == RoleSyncReport(pushed=1)  # worker B

    assert a == [RoleSync.GONE]
    assert len(fake(r).pushes) - pushes_before == 1


async def test_key_rotation_skips_a_row_a_pusher_holds(r: Harness) -> None:
    # A pusher spending the refresh token at Discord, then the row resealed meanwhile: it
    # would read the spent refresh token again, get invalid_grant and delete the tokens.
    await connected(r, 7031)  # sealed with KEY_A
    r.clock.advance(timedelta(days=8))  # the access token has expired: the push refreshes
    w = rotating(r)  # every process now has the new key first
    during: list[int] = []

    async def tokens_rotate_meanwhile() -> None:
        during.append((await w.container.rotate_token_keys().execute()).skipped)

    fake(r).during_refresh = tokens_rotate_meanwhile
    outcome = await w.container.role_connection_pusher().sync(rows(r)[DiscordId(7031)])

    assert during == [1]
    assert outcome is RoleSync.PUSHED
    assert (await w.container.rotate_token_keys().execute()).current == 1  # sealed with B
    w.container.unwire()


async def test_a_new_grant_replaces_the_kept_tokens(r: Harness) -> None:
    account = await connected(r, 7024)
    first = rows(r)[DiscordId(7024)]
    await verify(r, DiscordId(7024), signed_in=account)
    second = rows(r)[DiscordId(7024)]
    assert second.sealed != first.sealed
    assert second.version > first.version
    assert second.created_at == first.created_at


# -- giving up, and forgetting everything --------------------------------------------------------


def deleted_because(h: Harness) -> list[str]:
    database: MemoryDatabase = h.container.memory_db()
    audit = database.tables.audit
    return [e.detail["reason"] for e in audit if e.kind is AuditKind.ROLE_TOKENS_DELETED]


async def test_an_unlinked_users_tokens_go_after_a_week_of_failed_pushes(r: Harness) -> None:
    """Someone still linked is retried for as long as it takes; someone who unlinked is not
    worth keeping tokens for forever: after ROLE_GIVE_UP_UNLINKED_AFTER failures they go."""
    await connected(r, 7030, "ann")
    await connected(r, 7031, "ben")
    fake(r).push_outage = errors.DiscordUnavailable()

    async def failing_passes(count: int) -> int:
        given_up = 0
        for _ in range(count):
            report = await refresh_pass(r, everything=True)
            given_up += report.given_up
            r.clock.advance(timedelta(hours=6))
        return given_up

    # Failures while linked do not count towards giving up after the unlink.
    assert await failing_passes(ROLE_GIVE_UP_UNLINKED_AFTER - 1) == 0
    await r.container.unlink_discord().execute(DiscordId(7031))
    assert rows(r)[DiscordId(7031)].failures == 0  # the unlink starts a fresh count
    assert await failing_passes(ROLE_GIVE_UP_UNLINKED_AFTER - 1) == 0
    assert await failing_passes(1) == 1

    assert list(rows(r)) == [DiscordId(7030)]  # still linked: kept, and retried
    assert rows(r)[DiscordId(7030)].failures == 2 * ROLE_GIVE_UP_UNLINKED_AFTER - 1
    assert deleted_because(r) == ["given_up"]


async def test_linking_again_keeps_the_tokens_and_pushes_linked(r: Harness) -> None:
    """Tokens still kept after an unlink (Discord has not taken "not linked" yet) are not
    deleted when the same Discord account links again: the next push says "linked"."""
    account = await connected(r, 7036, "fay")
    fake(r).push_outage = errors.DiscordUnavailable()
    await r.container.unlink_discord().execute(DiscordId(7036))
    assert (await refresh_pass(r)).failed == 1
    fake(r).push_outage = None
    await r.discord_link(account, r.discord.users[DiscordId(7036)])
    assert rows(r)[DiscordId(7036)].next_push_at == r.clock.now()  # due at once

    report = await refresh_pass(r)

    assert report.pushed == 1
    assert linked(fake(r).connections[DiscordId(7036)]) == ("1", "0")
    assert list(rows(r)) == [DiscordId(7036)]


async def test_forgetting_tells_discord_not_linked_then_deletes_every_kept_token(
    r: Harness,
) -> None:
    """Linked Roles turned off: everyone's role connection says "not linked" (their role
    goes) and no token is kept; what Discord did not take stays for another run."""
    await connected(r, 7032, "cat")
    await connected(r, 7033, "dan")
    fake(r).push_outage = errors.DiscordUnavailable()

    failed = await r.container.forget_role_connections().execute()

    assert (failed.failed, failed.cleared) == (2, 0)
    assert set(rows(r)) == {DiscordId(7032), DiscordId(7033)}  # kept: run again
    fake(r).push_outage = None
    r.clock.advance(timedelta(minutes=1))

    report = await r.container.forget_role_connections().execute()

    assert report.cleared == 2
    assert rows(r) == {}
    for discord_id in (7032, 7033):
        assert linked(fake(r).connections[DiscordId(discord_id)]) == ("0", "0")
    assert deleted_because(r) == ["forgotten", "forgotten"]
    # The links themselves stay: only what Linked Roles kept is gone.
    async with r.uow() as uow:
        assert await uow.links.get_by_discord_id(DiscordId(7032)) is not None


async def test_forgetting_leaves_rows_a_worker_holds_and_says_to_run_again(r: Harness) -> None:
    # A worker stopped mid-pass (its claim ends within 5 minutes), or one still running with
    # Linked Roles on: taken from it, its push of "linked" could land after "not linked".
    await connected(r, 7032)
    await connected(r, 7033, "bob")
    now = r.clock.now()
    async with r.uow() as uow:  # a worker claimed 7032, then the restart stopped it
        await uow.role_connection_tokens.mark_all_due(now)
        [held] = await uow.role_connection_tokens.claim_due(now, now + CLAIM_LEASE, 1)
        await uow.commit()
    forget = r.container.forget_role_connections()
    assert await forget.preview() == ForgetPreview(kept=2, held=1)  # counts, changing nothing
    assert set(rows(r)) == {DiscordId(7032), DiscordId(7033)}
    assert await forget.execute() == RoleSyncReport(cleared=1, held=1)
    assert list(rows(r)) == [held.discord_id]
    r.clock.advance(CLAIM_LEASE)
    assert await forget.execute() == RoleSyncReport(cleared=1)
    assert rows(r) == {}
    assert linked(fake(r).connections[DiscordId(7032)]) == ("0", "0")


def rotating(r: Harness) -> Harness:
    """Another process, with a new key first (``tokens rotate``), on the same data."""
    w = role_harness(f"{KEY_B},{KEY_A}")
    w.container.memory_db.override(r.container.memory_db())
    w.container.discord_role_connections.override(fake(r))
    w.container.clock.override(r.clock)
    return w


async def test_an_unlink_while_rotation_holds_the_row_wakes_the_workers_once_it_lets_go(
    r: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Woken while rotation holds the row, the workers' passes skip it: the push of "not
    # linked" waits for rotation to let go, which must wake them again.
    await connected(r, 7034)
    w = rotating(r)
    bell = r.container.memory_db().bell
    woken_with: list[object] = []  # the row's claim each time the workers are woken
    ring = bell.ring

    def recorded(channels: Any) -> None:
        channels = set(channels)
        if ROLE_CONNECTION_CHANNEL in channels:
            woken_with.append(rows(r)[DiscordId(7034)].claimed_until)
        ring(channels)

    monkeypatch.setattr(bell, "ring", recorded)
    reseal = RotateTokenKeys._reseal

    async def unlinked_meanwhile(self: RotateTokenKeys, row: RoleConnectionToken, now: Any) -> Any:
        if not woken_with:  # the bot's /unlink commits while rotation holds the row
            await r.container.unlink_discord().execute(DiscordId(7034))
        return await reseal(self, row, now)

    monkeypatch.setattr(RotateTokenKeys, "_reseal", unlinked_meanwhile)
    assert (await w.container.rotate_token_keys().execute()).rotated == 1

    after = rows(r)[DiscordId(7034)]
    assert after.claimed_until is None
    assert after.next_push_at <= r.clock.now()
    assert woken_with[0] is not None  # the unlink's wake: rotation held it
    assert woken_with[-1] is None  # and once it let go
    w.container.unwire()


async def test_a_pusher_stalled_past_its_lease_in_a_refresh_keeps_its_new_tokens(
    r: Harness,
) -> None:
    # Paused inside the refresh (a VM pause) past its lease: rotation took the row and
    # resealed the same tokens. The pusher's new tokens replace them; reading the spent
    # refresh token again would have been invalid_grant, the tokens deleted.
    await connected(r, 7035)
    r.clock.advance(timedelta(days=8))  # the access token has expired: the push refreshes
    w = rotating(r)
    rotated: list[int] = []

    async def paused_then_rotation() -> None:
        r.clock.advance(CLAIM_LEASE + timedelta(seconds=1))
        rotated.append((await w.container.rotate_token_keys().execute()).rotated)

    fake(r).during_refresh = paused_then_rotation
    outcome = await w.container.role_connection_pusher().sync(rows(r)[DiscordId(7035)])

    assert rotated == [1]
    assert outcome is RoleSync.PUSHED
    assert fake(r).refreshes == 1
    assert DiscordId(7035) in rows(r)
    w.container.unwire()


async def test_forgetting_beside_a_live_pusher_leaves_it_the_row(r: Harness) -> None:
    # A rolling turn-off: an instance still runs with Linked Roles on, and its worker is
    # pushing "linked" when `role-connections forget` runs. Taken from it, its push could
    # land after forget's "not linked", the tokens deleted: the role would stay for good.
    await connected(r, 7036)
    await all_due(r)
    forgot: list[RoleSyncReport] = []

    async def forget_meanwhile() -> None:
        forgot.append(await r.container.forget_role_connections().execute())

    fake(r).during_push = forget_meanwhile
    assert await refresh_pass(r) == RoleSyncReport(pushed=1)

    assert forgot == [RoleSyncReport(held=1)]
    assert DiscordId(7036) in rows(r)  # for forget's next run


async def test_forgetting_keeps_tokens_no_key_opens_unless_told_to_drop_them(
    r: Harness,
) -> None:
    await connected(r, 7034)
    other = role_harness(KEY_B)  # the same rows, read with another key only
    other.container.memory_db.override(r.container.memory_db())
    other.container.discord_role_connections.override(fake(r))

    kept = await other.container.forget_role_connections().execute()

    assert kept.key_missing == 1
    assert list(rows(r)) == [DiscordId(7034)]  # the key may come back
    dropped = await other.container.forget_role_connections().execute(drop_unreadable=True)
    assert dropped.unreadable == 1
    assert rows(r) == {}
    assert deleted_because(r) == ["unreadable"]


def test_the_forget_command_needs_linked_roles_off_and_asks_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner = _commands_on_a_database_file(monkeypatch, tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY", KEY_A)
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_ID", "1200000000000000042")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_SECRET", "app-secret")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS", "true")
    refused = runner.invoke(cli, ["role-connections", "forget", "--yes"])
    assert refused.exit_code == 1
    assert "Linked Roles are on: turn them off first" in refused.output
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS", "false")
    asked = runner.invoke(cli, ["role-connections", "forget"])
    assert asked.exit_code == 0
    assert "No user's tokens are kept: there is nothing to forget." in asked.output

    # Without --yes it says how many it would forget (it gave no count).
    async def some_kept(self: ForgetRoleConnections) -> ForgetPreview:
        return ForgetPreview(kept=5, held=2)

    with monkeypatch.context() as patched:
        patched.setattr(ForgetRoleConnections, "preview", some_kept)
        asked = runner.invoke(cli, ["role-connections", "forget"])
    assert asked.exit_code == 0, asked.output
    said = " ".join(asked.output.split())
    assert "the 5 users whose tokens are kept (2 held by a worker now" in said
    assert "Run again with --yes" in said
    done = runner.invoke(cli, ["role-connections", "forget", "--yes"])  # nothing kept here
    assert done.exit_code == 0, done.output
    assert "Told Discord and deleted the tokens of 0" in done.output

    async def some_held(self: ForgetRoleConnections, **_: object) -> RoleSyncReport:
        return RoleSyncReport(cleared=3, held=2)

    with monkeypatch.context() as patched:
        patched.setattr(ForgetRoleConnections, "execute", some_held)
        held = runner.invoke(cli, ["role-connections", "forget", "--yes"])
    assert held.exit_code == 1
    assert "2 held by a worker" in held.output
    assert "run again in 5 minutes" in held.output
    monkeypatch.delenv("TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY")
    missing = runner.invoke(cli, ["role-connections", "forget", "--yes"])
    assert missing.exit_code == 1
    assert isinstance(missing.exception, SettingsError)  # main() prints it, without a trace
    assert "TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY" in str(missing.exception)


async def test_the_catch_up_push_after_a_stall_cannot_land_after_a_later_unlinks_push(
    r: Harness,
) -> None:
    # Found by an attacker's review: worker A's push stalls past its lease; worker B takes the
    # row over and is pushing "linked". A came back, found the row held by B and pushed what
    # was current ("linked") once more, holding no claim. While that catch-up was on its way
    # the member unlinked; B pushed "not linked" and deleted the tokens, and A's unclaimed
    # catch-up landed last, for good. Now A only makes the row due: its claimant pushes.
    await connected(r, 7042)
    await all_due(r)
    b_inside, b_go = asyncio.Event(), asyncio.Event()
    worker_b: list[asyncio.Task[RoleSyncReport]] = []

    async def unlink_and_let_b_finish() -> None:  # inside A's catch-up push
        await r.container.unlink_discord().execute(DiscordId(7042))
        b_go.set()
        await worker_b[0]

    async def b_pushing() -> None:  # inside B's push of "linked"
        fake(r).during_push = unlink_and_let_b_finish
        b_inside.set()
        await b_go.wait()

    async def stall_while_b_takes_over() -> None:  # inside A's first push
        r.clock.advance(CLAIM_LEASE + timedelta(seconds=1))
        fake(r).during_push = b_pushing
        worker_b.append(asyncio.create_task(refresh_pass(r)))
        await b_inside.wait()

    fake(r).during_push = stall_while_b_takes_over
    first = await refresh_pass(r)
    if not b_go.is_set():  # A made no catch-up push: the unlink comes all the same
        fake(r).during_push = None
        await unlink_and_let_b_finish()

    assert first == RoleSyncReport(gone=1)
    assert worker_b[0].result() == RoleSyncReport(cleared=1)  # "not linked", tokens deleted
    assert rows(r) == {}  # nothing will push again
    assert linked(fake(r).connections[DiscordId(7042)]) == ("0", "0")


async def test_a_pusher_stalled_past_its_lease_in_a_refresh_renews_it_before_pushing(
    r: Harness,
) -> None:
    # helper-77's review. Paused inside the refresh past its lease, the pusher stored the new
    # tokens and went on to push with a claim run out: a worker woken meanwhile took the row
    # and pushed beside it (after an unlink, "linked" could land last). A pusher takes the row
    # again after the refresh, as before every call to Discord.
    await connected(r, 7043)
    r.clock.advance(timedelta(days=8))  # due, and the access token has expired
    beside: list[RoleSyncReport] = []

    async def paused_past_the_lease() -> None:
        r.clock.advance(CLAIM_LEASE + timedelta(seconds=1))

    async def a_worker_runs() -> None:
        beside.append(await refresh_pass(r))

    fake(r).during_refresh = paused_past_the_lease
    fake(r).during_push = a_worker_runs
    pushes_before = len(fake(r).pushes)
    outcome = await r.container.role_connection_pusher().sync(rows(r)[DiscordId(7043)])

    assert beside == [RoleSyncReport()]  # the row was still the first pusher's
    assert outcome is RoleSync.PUSHED
    assert len(fake(r).pushes) - pushes_before == 1
    assert fake(r).refreshes == 1


async def test_a_token_lifetime_beyond_any_date_is_not_taken_at_its_word(
    r: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # helper-77's review: an ``expires_in`` past the year 9999 (a broken stand-in for Discord,
    # a proxy's answer) raised OverflowError: a 500 at the verification URL's callback, and in
    # a worker the pass ended there, the rest of its batch left claimed.
    monkeypatch.setattr("tests.fakes.role_connections.LIFETIME", 10**12)
    await connected(r, 7044)  # linked, and pushed

    kept = rows(r)[DiscordId(7044)]
    assert kept.expires_at <= r.clock.now() + timedelta(days=366)
    r.clock.advance(timedelta(days=400))  # refreshed again before a push: the same answer
    assert await refresh_pass(r) == RoleSyncReport(pushed=1)


async def test_a_refresh_that_stalled_past_its_lease_still_tells_discord_not_linked(
    r: Harness,
) -> None:
    # helper-77's review. After an unlink, a pusher's refresh reached Discord (the refresh
    # token spent) but its answer came back past the lease. Meanwhile a worker took the row,
    # refreshed with the spent token, got invalid_grant and deleted the tokens: nobody told
    # Discord "not linked", and the member kept the role for good, while the first pusher
    # held fresh tokens and dropped them. It now pushes "not linked" with them.
    await connected(r, 7045)
    r.clock.advance(timedelta(days=8))  # the access token has expired: a push refreshes
    await r.container.unlink_discord().execute(DiscordId(7045))
    discord = fake(r)
    answered = discord.refresh
    meanwhile: list[RoleSyncReport] = []

    async def answered_past_the_lease(refresh_token: str, **limits: Any) -> DiscordTokens:
        fresh = await answered(refresh_token, **limits)  # Discord spent the refresh token...
        discord.refresh = answered  # type: ignore[method-assign]
        r.clock.advance(CLAIM_LEASE + timedelta(seconds=1))  # ...its answer came late
        meanwhile.append(await refresh_pass(r))
        return fresh

    discord.refresh = answered_past_the_lease  # type: ignore[method-assign]
    outcome = await r.container.role_connection_pusher().sync(rows(r)[DiscordId(7045)])

    assert meanwhile == [RoleSyncReport(revoked=1)]  # the spent token: invalid_grant
    assert outcome is RoleSync.GONE
    assert rows(r) == {}
    assert linked(discord.connections[DiscordId(7045)]) == ("0", "0")


def test_the_commands_and_the_log_say_how_many_another_pusher_took_or_deleted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A row another pusher took over mid-pass (its lease ran out here) or deleted meanwhile
    is ``gone``: counted by the pass, and said. Forgetting is not done with such a row: the
    one that took it (an instance with Linked Roles still on) may have kept its tokens, so it
    says to run again (exit status 1), as for a row a worker holds."""
    runner = _commands_on_a_database_file(monkeypatch, tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY", KEY_A)
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_ID", "1200000000000000042")
    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_CLIENT_SECRET", "app-secret")

    async def some_gone(self: object, **_: object) -> RoleSyncReport:
        return RoleSyncReport(pushed=1, cleared=1, gone=2)

    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS", "true")
    with monkeypatch.context() as patched:
        patched.setattr(RefreshRoleConnections, "execute", some_gone)
        refreshed = runner.invoke(cli, ["role-connections", "refresh"])
    assert refreshed.exit_code == 0, refreshed.output  # another instance has them: nothing failed
    assert "2 taken over or deleted by another instance meanwhile" in refreshed.output

    monkeypatch.setenv("TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS", "false")
    with monkeypatch.context() as patched:
        patched.setattr(ForgetRoleConnections, "execute", some_gone)
        forgot = runner.invoke(cli, ["role-connections", "forget", "--yes"])
    assert forgot.exit_code == 1
    assert "2 taken over or deleted by another instance meanwhile" in forgot.output
    assert "run again" in forgot.output

    caplog.clear()  # the commands' own lines (Alembic's, as they read the schema)
    with caplog.at_level(logging.INFO, logger="taskflow_link.role_connections"):
        log_report(RoleSyncReport(gone=3))
    [line] = [r for r in caplog.records if r.name == "taskflow_link.role_connections"]
    assert "3 taken over or deleted by another instance meanwhile" in line.getMessage()


async def test_an_unlinked_users_tokens_no_instance_has_the_key_for_go_after_a_week(
    r: Harness,
) -> None:
    """The key that sealed them is gone from every instance (replaced instead of rotated):
    each try counts as a failure (README), and someone who unlinked is not worth keeping
    tokens for forever, readable or not: the key may come back, and with it the tokens.
    Someone still linked keeps them (reconnecting replaces them)."""
    await connected(r, 7040, "ann")
    await connected(r, 7041, "ben")
    await r.container.unlink_discord().execute(DiscordId(7041))
    other = instance(r, KEY_B)

    given_up = 0
    for _ in range(ROLE_GIVE_UP_UNLINKED_AFTER):
        report = await refresh_pass(other, everything=True)
        given_up += report.given_up
        other.clock.advance(timedelta(hours=6))

    assert given_up == 1
    assert list(rows(r)) == [DiscordId(7040)]  # still linked: kept, in case the key comes back
    assert deleted_because(r) == ["given_up"]


async def test_key_rotation_can_drop_the_tokens_no_configured_key_opens(r: Harness) -> None:
    """The old key is gone for good (replaced instead of rotated): with Linked Roles on, the
    operator could not clean up what nothing opens (``forget`` needs them off, and tells
    everyone "not linked"); those rows were tried and reported for good. ``tokens rotate
    --drop-unreadable`` deletes them (audited, with the Discord id: whom to ask to connect
    again), and only them."""
    await connected(r, 7042, "ann")
    await connected(r, 7043, "ben")
    lost = instance(r, KEY_B)
    lost.container.discord_oauth.override(fake(r))
    lost.discord = fake(r)
    await connected(lost, 7044, "cat")  # sealed with the new key
    await connected(lost, 7045, "dan")
    database: MemoryDatabase = r.container.memory_db()
    copied = replace(rows(r)[DiscordId(7045)], sealed=rows(r)[DiscordId(7044)].sealed)
    database.tables.role_connection_tokens[DiscordId(7045)] = copied  # bound to 7044: no use

    kept = await lost.container.rotate_token_keys().execute()
    assert (kept.unreadable, kept.current) == (2, 2)  # the copy names the newest key
    assert len(rows(r)) == 4  # the key may come back

    dropped = await lost.container.rotate_token_keys().execute(drop_unreadable=True)

    assert (dropped.unreadable, dropped.current, dropped.skipped) == (3, 1, 0)
    assert list(rows(r)) == [DiscordId(7044)]
    assert deleted_because(r) == ["unreadable"] * 3
    # Each of them is told, on the account page, that the connection was lost.
    losses = {d: link.role_connection_lost_why for d, link in database.tables.links.items()}
    assert losses == {
        DiscordId(7042): RoleConnectionLoss.UNREADABLE,
        DiscordId(7043): RoleConnectionLoss.UNREADABLE,
        DiscordId(7044): None,
        DiscordId(7045): RoleConnectionLoss.UNREADABLE,
    }
    assert rows(r)[DiscordId(7044)].claimed_until is None


def test_the_rotate_command_drops_the_unreadable_when_told(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner = _commands_on_a_database_file(monkeypatch, tmp_path)
    monkeypatch.setenv("TASKFLOW_LINK_TOKEN_ENCRYPTION_KEY", KEY_A)
    told: list[bool] = []

    async def two_unreadable(self: RotateTokenKeys, *, drop_unreadable: bool = False) -> Any:
        told.append(drop_unreadable)
        return KeyRotationReport(rotated=0, current=1, unreadable=2)

    monkeypatch.setattr(RotateTokenKeys, "execute", two_unreadable)
    kept = runner.invoke(cli, ["tokens", "rotate"])
    assert kept.exit_code == 1
    assert "2 could not be decrypted with any configured key (kept" in kept.output
    assert "--drop-unreadable" in kept.output
    dropped = runner.invoke(cli, ["tokens", "rotate", "--drop-unreadable"])
    assert dropped.exit_code == 0, dropped.output
    assert "2 could not be decrypted with any configured key (deleted" in dropped.output
    assert told == [False, True]


# -- Discord's rate limit headers ---------------------------------------------------------------


async def test_a_users_used_up_push_limit_leaves_their_row_until_it_resets_not_the_pass(
    r: Harness,
) -> None:
    """Discord's answer to a push says the user's limit has no call left (X-RateLimit-
    Remaining: 0, per token): the next push of that user waits for X-RateLimit-Reset-After
    instead of being answered 429 (each 429 counts towards Discord's limit of invalid
    requests per address). The others' pushes, on their own tokens, go on."""
    await connected(r, 7051, "ben")
    fake(r).push_limit = 1  # a call per window (10 s), per user
    await connected(r, 7050, "ann")  # the callback's push used ann's call
    await r.container.unlink_discord().execute(DiscordId(7050))  # due at once
    await all_due(r)  # ben's too

    report = await refresh_pass(r)

    assert (report.pushed, report.waiting, report.failed, report.paused) == (1, 1, 0, 0)
    assert fake(r).limited == 0  # no 429
    row = rows(r)[DiscordId(7050)]
    assert row.next_push_at == r.clock.now() + fake(r).limit_window
    assert (row.failures, row.claimed_until) == (0, None)
    assert linked(fake(r).connections[DiscordId(7050)]) == ("1", "0")  # not told yet

    r.clock.advance(fake(r).limit_window)
    assert (await refresh_pass(r)).cleared == 1
    assert linked(fake(r).connections[DiscordId(7050)]) == ("0", "0")
    assert fake(r).limited == 0


async def test_a_used_up_refresh_limit_pauses_the_refreshes_until_it_resets(r: Harness) -> None:
    """The refresh grant carries the application's credentials: its limit is every user's.
    Once an answer says it has no call left, no refresh is asked for before it resets: a row
    that needs one is left due until then (no failure counted, its refresh token unspent),
    as a user's used-up push is. The pushes are limited per user (their own tokens), not by
    the refresh's limit: those with a live access token go on, and so does the verification
    URL's push of a new grant (the member is told "connected", not "later")."""
    for n, name in enumerate(("cal", "dee")):
        await connected(r, 7052 + n, name)
    r.clock.advance(timedelta(days=8))  # their access tokens have expired: refreshed first
    await connected(r, 7054, "eve")  # a fresh one: pushed with it, no refresh
    await all_due(r)
    fake(r).refresh_limit = 1
    refresh_tokens = {DiscordId(d): fake(r).tokens_of(DiscordId(d))[1] for d in (7052, 7053)}

    report = await refresh_pass(r)

    assert fake(r).refreshes == 1
    assert fake(r).limited == 0  # no 429
    assert (report.pushed, report.waiting, report.failed, report.paused) == (2, 1, 0, 0)
    assert report.paused_until is None  # nothing holds the pushes
    (waiting,) = [row for row in rows(r).values() if row.expires_at <= r.clock.now()]
    assert waiting.discord_id != DiscordId(7054)
    assert waiting.next_push_at == r.clock.now() + fake(r).limit_window
    assert (waiting.failures, waiting.claimed_until) == (0, None)
    assert refresh_tokens[waiting.discord_id] <= set(fake(r).refresh_tokens)  # not spent
    assert all(row.failures == 0 and row.claimed_until is None for row in rows(r).values())

    # Meanwhile: the verification URL's push goes through (``connected`` asserts PUSHED),
    # and a pass that meets the row again asks for no refresh.
    await connected(r, 7055, "fay")
    await all_due(r)
    again = await refresh_pass(r)
    assert fake(r).refreshes == 1
    assert fake(r).limited == 0
    assert (again.pushed, again.waiting, again.paused) == (3, 1, 0)

    r.clock.advance(fake(r).limit_window)
    fake(r).refresh_limit = None
    assert (await refresh_pass(r)).pushed == 1
    assert fake(r).refreshes == 2
    assert fake(r).limited == 0


async def test_each_pass_counts_its_outcomes_in_the_metrics(r: Harness) -> None:
    """The operator's view of lost connections, beside the worker's log line: Discord's
    invalid_grant (revoked) and tokens no key opens (unreadable, key_missing) had no metric."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    await connected(r, 7040, "ann")
    await connected(r, 7041, "ben")
    fake(r).deauthorize(DiscordId(7041))

    record_outcome(
        metrics, "refresh_role_connections", await refresh_pass(r, everything=True), None
    )

    def value(outcome: str) -> float:
        found = registry.get_sample_value(
            "taskflow_link_role_connections_total", {"outcome": outcome}
        )
        return found or 0

    assert (value("pushed"), value("revoked"), value("unreadable")) == (1, 1, 0)
