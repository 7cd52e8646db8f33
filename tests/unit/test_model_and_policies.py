"""Values and pure policies: Discord ids, destinations, PKCE, usernames, secret checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.discord_oauth import _profile as _discord_profile
from domain import errors, model
from domain.model import (
    DiscordId,
    DiscordUser,
    email_to_look_up,
    normalize_email,
    validate_email,
    validate_username,
)
from domain.policies import (
    SecretStatus,
    check_one_time_secret,
    choose_username,
    destination_path,
    pkce_challenge,
    safe_destination,
    username_base_from_discord,
)

# -- Discord ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "good", [1, 80351110224678912, 2**63 - 1, "1", " 42 ", "9223372036854775807"]
)
def test_valid_discord_ids(good: int | str) -> None:
    assert DiscordId.parse(good).value == int(str(good).strip())


@pytest.mark.parametrize(
    "bad",
    [
        0,
        -1,
        2**63,
        2**64,
        "0",
        "-5",
        "9223372036854775808",
        "abc",
        "",
        "1e5",
        "12.0",
        "0x10",
        "١٢٣",
        True,
        False,
        1.0,
        None,
        "1" * 400,
    ],
)
def test_invalid_discord_ids_are_rejected_with_a_clear_error(bad: object) -> None:
    with pytest.raises(errors.InvalidDiscordId) as rejected:
        DiscordId.parse(bad)
    assert "is not a Discord id" in rejected.value.message
    assert len(rejected.value.message) < 200  # a huge input is not echoed back whole


def test_discord_id_constructor_validates_too() -> None:
    with pytest.raises(errors.InvalidDiscordId):
        DiscordId(0)
    with pytest.raises(errors.InvalidDiscordId):
        DiscordId(2**63)


@given(st.integers(min_value=1, max_value=2**63 - 1))
def test_every_bigint_snowflake_round_trips(value: int) -> None:
    assert DiscordId.parse(str(value)) == DiscordId(value)


# -- destinations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attack",
    [
        "//evil.example",
        "//evil.example/path",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example",
        "http:evil.example",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "",
        None,
        "/" + "a" * 5000,
        "evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/%09/evil.example".replace("%09", "\t"),
        " /account",
        "/account\r\nSet-Cookie: x=1",
        "/\x00",
    ],
)
def test_destination_attacks_end_on_root(attack: str | None) -> None:
    assert safe_destination(attack) == "/"


@pytest.mark.parametrize("path", ["/", "/account", "/link/abc?x=1#frag", "/a/b/../c", "/%2F%2F"])
def test_same_site_paths_are_kept(path: str) -> None:
    assert safe_destination(path) == path


@given(st.text(max_size=300))
def test_any_destination_is_a_same_site_path(raw: str) -> None:
    result = safe_destination(raw)
    assert result.startswith("/")
    assert not result.startswith("//")
    assert "\\" not in result


# -- PKCE, usernames, emails -----------------------------------------------------------------


def test_pkce_s256_matches_rfc7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_after_a_clash_a_username_is_drawn_among_free_ones() -> None:
    """Sign-ups at the same moment that picked one name: the next try of each draws among the
    free ones, so that they part ways (each taking the next free name, one got it per round,
    and the rest ran out of tries: helper-88's review)."""
    taken = {"alice", "alice2", "alice5"}
    drawn = {choose_username("alice", taken, clashes=1) for _ in range(200)}
    assert len(drawn) > 20
    assert not drawn & taken
    assert all(name.startswith("alice") and 2 <= int(name[5:]) < 1000 for name in drawn)
    assert choose_username("alice", taken) == "alice3"  # without a clash: the first free one
    assert choose_username("bob", taken, clashes=1) == "bob"  # a clash on something else


def test_choose_username_adds_the_first_free_suffix() -> None:
    assert choose_username("alice", set()) == "alice"
    assert choose_username("alice", {"alice"}) == "alice2"
    assert choose_username("alice", {"alice", "alice2", "alice3"}) == "alice4"
    long = "a" * 28
    assert len(choose_username(long, {long} | {f"{long}{i}" for i in range(2, 10)})) <= 32


@pytest.mark.parametrize(
    ("discord", "base"),
    [("Alice", "alice"), ("a", "usera"), ("..", ".."), ("名前", "user"), ("x" * 40, "x" * 28)],
)
def test_username_base_from_discord(discord: str, base: str) -> None:
    assert username_base_from_discord(discord) == base
    validate_username(base)


def test_email_normalisation() -> None:
    assert normalize_email("  Alice@Example.COM ") == "alice@example.com"
    assert normalize_email("   ") is None
    assert validate_email("A@B.example") == "a@b.example"
    for bad in ["", "no-at", "@x", "x@", "a@@b", "a b@c.d"]:
        with pytest.raises(errors.InvalidInput):
            validate_email(bad)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("bob@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "bob@example.com"),  # fullwidth
        ("bob@example\u3002com", "bob@example.com"),  # an ideographic full stop is a dot
        ("Eve@B\u00dcCHER.de", "eve@xn--bcher-kva.de"),
        ("eve@xn--bcher-kva.de", "eve@xn--bcher-kva.de"),
        ("eve@stra\u00dfe.de", "eve@xn--strae-oqa.de"),  # IDNA 2008: not strasse.de
        ("\uff42ob@example.com", "\uff42ob@example.com"),  # before the "@": the mailbox's
    ],
)
def test_an_email_domain_is_stored_as_mail_software_resolves_it(typed: str, stored: str) -> None:
    assert validate_email(typed) == stored
    assert normalize_email(typed) == stored


@pytest.mark.parametrize(
    "address",
    [
        "bob@evil\uff20example.com",  # a fullwidth "@" is an "@" once mapped
        "bob@example\uff1a25",  # a fullwidth ":"
        "bob@exa\u200bmple\u00e9.com",  # invisible, in a label beyond ASCII
        # An empty label. A trailing dot names the DNS root: Postfix delivers
        # bob@example.com. to bob@example.com, so it was another account for that mailbox.
        "bob@example.com.",
        "bob@example.com\u3002",  # an ideographic full stop is a dot, at the end too
        "bob@.example.com",
        "bob@example..com",
        "bob@b\u00fccher\uff0e\uff0ede",
    ],
)
def test_an_email_domain_is_checked_as_mail_software_reads_it(address: str) -> None:
    with pytest.raises(errors.InvalidInput):
        validate_email(address)


@pytest.mark.parametrize(
    "domain",
    [
        "".join(chr(0x4E00 + i) for i in range(300)) + ".cn",  # one label, too long
        ".".join(["\u4e2d" * 200] * 40),  # each label short enough, the domain not
    ],
)
def test_an_email_domain_too_long_is_refused_before_it_is_encoded(
    domain: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python's punycode takes time growing with the square of a label's length: 16,000
    Chinese characters in one domain (a 48 KB form field) held the event loop for 50 seconds
    at each password reset request (an attacker's review). An address already too long
    before its labels are encoded is refused without encoding them."""
    encoded: list[str] = []
    real = model._ascii_domain

    def spy(mapped: str) -> str:
        encoded.append(mapped)
        return real(mapped)

    monkeypatch.setattr(model, "_ascii_domain", spy)
    with pytest.raises(errors.InvalidInput, match="email address like"):
        validate_email(f"bob@{domain}")
    assert encoded == []
    assert validate_email("Eve@B\u00dccher.de") == "eve@xn--bcher-kva.de"  # one that fits
    assert encoded == ["b\u00fccher.de"]


@pytest.mark.parametrize(
    "address",
    [
        "\u202emoc.elpmaxe@ecila",  # right-to-left override: shows as alice@example.com
        "alice@exa\u200bmple.com",  # zero-width space
        "ali\u200dce@example.com",  # zero-width joiner
        "alice\u2066@example.com",  # left-to-right isolate
        "\ufeffalice@example.com",  # byte order mark
        "al\u00adice@example.com",  # soft hyphen
    ],
)
def test_an_email_address_takes_no_invisible_format_characters(address: str) -> None:
    """They make an address show as another on the account page and in the notices
    (helper-54's review)."""
    with pytest.raises(errors.InvalidInput, match="invisible characters"):
        validate_email(address)
    body = {"id": "1", "username": "alice", "email": address, "verified": True}
    assert _discord_profile(body).email is None  # as an address Discord sends
    assert _discord_profile({**body, "email": "alice@example.com"}).email == "alice@example.com"


@pytest.mark.parametrize(
    "address",
    [
        "\u3164@example.com",  # a Hangul filler: shows as "@example.com"
        "al\u3164ice@example.com",  # shows as "al ice" or "alice"
        "alice\u115f@example.com",  # the Hangul choseong filler
        "ali\u1160ce@example.com",  # the Hangul jungseong filler
        "alice\uffa0@example.com",  # the halfwidth Hangul filler
        "\u2800alice@example.com",  # the braille blank
        "alice@exa\u3164mple.com",  # in the domain
        "alice@xn--example-rh2a.com",  # the same, typed as its A-label
        "alice@example.com\u3164",  # after the domain
        "a\u0301\u0301\u0301\u0301lice@example.com",  # a stack of accents over the lines
        "alice\ue000@example.com",  # private use: draws whatever a font puts there
        "alice\U000e0041@example.com",  # a tag character (format)
        # An attacker's second look: marks that draw nothing (alice@example.com, each).
        "al\u034fice@example.com",  # the combining grapheme joiner
        "alic\ufe0fe@example.com",  # a variation selector after no emoji
        "alice\U000e0100@example.com",  # an ideographic variation selector after no ideograph
        "ali\u180bce@example.com",  # a Mongolian variation selector after no Mongolian letter
        "ali\U00016fe4ce@example.com",  # the Khitan filler
        "alice@exam\ufe0eple.com",  # in the domain (IDNA ignores it: example.com)
    ],
)
def test_an_email_address_takes_no_character_that_draws_nothing_or_stacks(address: str) -> None:
    """Shown on the account page and in notices, each looks like another address (or like
    "@example.com"): refused with the names' own classification (``domain.names``)."""
    with pytest.raises(errors.InvalidInput, match="invisible characters"):
        validate_email(address)
    body = {"id": "1", "username": "alice", "email": address, "verified": True}
    assert _discord_profile(body).verified_email is None  # as an address Discord sends


def test_an_email_address_keeps_its_accents_and_letters() -> None:
    """What draws, and up to three marks on one letter, as any name may hold them."""
    assert validate_email("J\u00f6rg@example.com") == "j\u00f6rg@example.com"
    assert validate_email("q\u0301\u0301\u0301@example.com") == "q\u0301\u0301\u0301@example.com"
    assert validate_email("\ud55c\uae00@example.com") == "\ud55c\uae00@example.com"  # Hangul
    assert validate_email("bob@b\u00fccher.de") == "bob@xn--bcher-kva.de"


def test_an_address_with_hidden_characters_is_still_looked_up() -> None:
    """One stored before they were refused stays usable: a password reset asked for it finds
    it (``email_to_look_up``), though no account may take it again."""
    assert email_to_look_up("Al\u3164ice@example.com") == "al\u3164ice@example.com"
    with pytest.raises(errors.InvalidInput, match="email address like"):
        email_to_look_up("not an address")
    with pytest.raises(errors.InvalidInput, match="invisible characters"):
        email_to_look_up("al\u200bice@example.com")  # format characters: none is stored


@pytest.mark.parametrize(
    "address",
    [
        "alice@xn--example-2z6c.com",  # exa\u200bmple: a zero-width space
        "eve@xn--bcher-kva1776c.de",  # b\u00fc\u200bcher
        "eve@mail.XN--BCHER-KVA1776C.de",  # any label, in any case
    ],
)
def test_an_email_domain_typed_as_an_a_label_hides_no_format_character(address: str) -> None:
    """An A-label is the same domain as what it encodes: typed in its ASCII form, a
    zero-width space inside it was taken (migration 0018 removes such a stored address, and
    the same domain typed as Unicode is refused), so the one domain had two spellings that
    one check saw as two."""
    with pytest.raises(errors.InvalidInput, match="invisible characters"):
        validate_email(address)
    # An A-label that encodes nothing invisible is an address, and one that is not punycode
    # at all is left to mail software (as migration 0018 leaves it).
    assert validate_email("eve@XN--bcher-kva.de") == "eve@xn--bcher-kva.de"
    assert validate_email("eve@xn--.de") == "eve@xn--.de"


@pytest.mark.parametrize(
    "address",
    [
        "=?us-ascii?q?bob?=@example.com",  # read as bob@example.com
        "=?utf-8?b?Ym9iQGV2aWwuZXhhbXBsZQ==?=@example.com",  # as "bob@evil.example"@…
        "bob@=?utf-8?q?evil.example?=",  # as bob@evil.example
    ],
)
def test_an_email_address_takes_no_encoded_word(address: str) -> None:
    """Mail software decodes an RFC 2047 word wherever it meets one: each of these was stored
    as an address of its own, and its mail went to another one, so one mailbox confirmed as
    many "different" addresses as it liked (an attacker's review)."""
    with pytest.raises(errors.InvalidInput, match="encoded"):
        validate_email(address)
    body = {"id": "1", "username": "bob", "email": address, "verified": True}
    assert _discord_profile(body).email is None


# -- one-time secret checks ----------------------------------------------------------------------

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"found": False, "consumed_by_someone_else": False, "expires_at": None}, "UNKNOWN"),
        ({"found": True, "consumed_by_someone_else": True, "expires_at": None}, "CONSUMED"),
        ({"found": True, "consumed_by_someone_else": False, "expires_at": NOW}, "EXPIRED"),
        (
            {
                "found": True,
                "consumed_by_someone_else": False,
                "expires_at": NOW + timedelta(seconds=1),
                "expected_browser_digest": "aa",
                "browser_digests": ["ab", "ac"],
            },
            "WRONG_BROWSER",
        ),
        (
            {
                "found": True,
                "consumed_by_someone_else": False,
                "expires_at": NOW + timedelta(seconds=1),
                "expected_browser_digest": "aa",
            },
            "WRONG_BROWSER",
        ),
        (
            {
                "found": True,
                "consumed_by_someone_else": False,
                "expires_at": NOW + timedelta(microseconds=1),
                "expected_browser_digest": "aa",
                "browser_digests": ["zz", "aa"],
            },
            "VALID",
        ),
    ],
)
def test_check_one_time_secret(kwargs: dict[str, object], status: str) -> None:
    assert check_one_time_secret(now=NOW, **kwargs) is SecretStatus[status]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("destination", "path"),
    [
        ("/", "/"),
        ("/account?x=/link/1#f", "/account"),
        ("/./link/x", "/link/x"),
        ("/%6Cink/x", "/link/x"),
        ("/%2e%2E/link/x", "/link/x"),
        ("/static/../password/reset/t", "/password/reset/t"),
        ("/a//b/", "/a/b/"),
        ("/%2F%2Flink/x", "/link/x"),
        ("/..", "/"),
    ],
)
def test_a_destinations_path_is_what_browsers_and_servers_reach(
    destination: str, path: str
) -> None:
    assert destination_path(destination) == path


def test_discord_names_lose_controls_that_would_disguise_them() -> None:
    """A name is shown on the confirm and account pages: control characters and bidirectional
    controls (which reorder what follows on screen) are removed; emoji sequences stay."""
    user = DiscordUser.from_discord(
        "80351110224678912", "mal\x1b[31mlory", "\u202eadmin\u2066\u200f", "a\x00b"
    )
    assert (user.username, user.global_name, user.avatar) == ("mal[31mlory", "admin", "ab")
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert DiscordUser.from_discord("80351110224678912", "x", family, None).global_name == family
    assert DiscordUser.from_discord("80351110224678912", "x", "\u202e", None).global_name is None


def test_discord_names_lose_lone_surrogates() -> None:
    """JSON may carry "\\ud800", which no encoding can store: on Postgres a /link from such a
    name failed writing its ticket (helper-55's review). A valid pair stays one character."""
    user = DiscordUser.from_discord("80351110224678912", "a\ud800b", "\udfff\U0001f600", None)
    assert (user.username, user.global_name) == ("ab", "\U0001f600")
    user.username.encode()  # storable


@pytest.mark.parametrize(
    "address",
    [
        "jose\u0301@example.com",  # josé@example.com with its accent typed apart (NFD)
        "\u1100\u1161@example.com",  # the Hangul syllable \uac00 typed as its two letters
        "a\u0323\u0302@example.com",  # \u1ead typed as a and two marks
    ],
)
def test_an_email_address_takes_no_second_spelling_of_its_letters(address: str) -> None:
    """An attacker's second look: the local part was stored as typed, so one that is the same
    text as another address to Unicode and to the eye (josé@example.com typed decomposed)
    was an address apart for the unique index: a second account for one mailbox. Refused
    (the domain is mapped already, as IDNA maps it); one stored before is still looked up."""
    with pytest.raises(errors.InvalidInput, match="type it again"):
        validate_email(address)
    assert email_to_look_up(address) == address.lower()


def test_an_email_address_keeps_its_composed_letters() -> None:
    assert validate_email("Jos\u00e9@example.com") == "jos\u00e9@example.com"
    assert validate_email("\u0130nci@example.com") == "i\u0307nci@example.com"
