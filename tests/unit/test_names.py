"""How a name someone else chose is shown (``domain.names``): never as another name, never
as nothing, never so long that what stands beside it is pushed away."""

from __future__ import annotations

import pytest

from domain.names import (
    ELLIPSIS,
    FSI,
    HIDDEN_MARK,
    PDI,
    SHOWN_NAME_MAX,
    isolated_handle,
    isolated_name,
    shown_display_name,
    shown_name,
)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("alice", "alice"),
        ("Ål\u00efce \u00e9t\u00e9", "Ål\u00efce \u00e9t\u00e9"),
        ("\u0627\u0644\u064a\u0633", "\u0627\u0644\u064a\u0633"),  # a right-to-left name stays
        # Bidirectional controls: "\u202eecila" reads as "alice".
        ("\u202eecila", f"{HIDDEN_MARK}ecila"),
        ("ali\u2066ce\u2069", f"ali{HIDDEN_MARK}ce{HIDDEN_MARK}"),
        ("a\u200e\u200fb", f"a{HIDDEN_MARK}b"),  # a run is one mark
        ("a\u202a\u202b\u202c\u202db", f"a{HIDDEN_MARK}b"),
        # Zero-width and other format characters: "al\u200bice" looks like "alice".
        ("al\u200bice", f"al{HIDDEN_MARK}ice"),
        ("alice\u2060", f"alice{HIDDEN_MARK}"),
        ("\ufeffalice", f"{HIDDEN_MARK}alice"),
        ("ali\u00adce", f"ali{HIDDEN_MARK}ce"),  # the soft hyphen
        ("alice\u200d", f"alice{HIDDEN_MARK}"),  # a joiner between no emoji
        # Characters that draw nothing: a name that looks empty.
        ("\u3164", HIDDEN_MARK),
        ("\u115f\u1160", HIDDEN_MARK),
        ("\u2800\u2800", HIDDEN_MARK),
        ("\uffa0x", f"{HIDDEN_MARK}x"),
        # Marks that draw nothing (an attacker's second look): each looks like "alice".
        ("al\u034fice", f"al{HIDDEN_MARK}ice"),  # the combining grapheme joiner
        ("alic\ufe0fe", f"alic{HIDDEN_MARK}e"),  # a variation selector after no emoji
        ("alice\U000e0100", f"alice{HIDDEN_MARK}"),  # nor after an ideograph
        ("ali\u180bce", f"ali{HIDDEN_MARK}ce"),  # nor after a Mongolian letter
        ("ali\U00016fe4ce", f"ali{HIDDEN_MARK}ce"),  # the Khitan filler (a mark)
        # ... kept where they select a form: an emoji's, a keycap's, an ideograph's, a
        # Mongolian letter's.
        ("\u2764\ufe0f 1\ufe0f\u20e3", "\u2764\ufe0f 1\ufe0f\u20e3"),
        ("\u845b\U000e0100\u8fba", "\u845b\U000e0100\u8fba"),
        ("\u1828\u180b", "\u1828\u180b"),
        # Controls and line breaks.
        ("a\nb\x00c", f"a{HIDDEN_MARK}b{HIDDEN_MARK}c"),
        ("a\u2028b", f"a{HIDDEN_MARK}b"),
        # Spaces of any kind are one ordinary space, none at either end.
        ("  al\u3000\u2003 ice  ", "al ice"),
        ("\u3000", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_a_name_shows_what_would_hide_or_reorder_it(raw: str | None, shown: str) -> None:
    assert shown_name(raw) == shown


def test_emoji_built_with_joiners_stay_whole() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    tone = "\U0001f44d\U0001f3fd\u200d\u2642\ufe0f"
    assert shown_name(f"{family} Dee") == f"{family} Dee"
    assert shown_name(tone) == tone


def test_combining_marks_do_not_stack_over_the_lines_around() -> None:
    assert shown_name("Z" + "\u0301" * 40 + "oe\u0301") == "Z\u0301\u0301\u0301oe\u0301"


def test_a_long_name_is_cut_with_an_ellipsis() -> None:
    assert shown_name("a" * SHOWN_NAME_MAX) == "a" * SHOWN_NAME_MAX
    cut = shown_name("b" * 64)
    assert cut == "b" * (SHOWN_NAME_MAX - 1) + ELLIPSIS
    assert len(cut) == SHOWN_NAME_MAX
    assert shown_name("abc def", limit=5) == "abc" + ELLIPSIS  # no space before it


def test_plain_text_isolates_the_name() -> None:
    assert isolated_name("\u202eecila") == f"{FSI}{HIDDEN_MARK}ecila{PDI}"
    assert isolated_handle("\u202eecila") == f"{FSI}@{HIDDEN_MARK}ecila{PDI}"
    assert isolated_name("\u0627\u0644\u064a\u0633") == f"{FSI}\u0627\u0644\u064a\u0633{PDI}"


def test_the_display_name_falls_back_to_the_username_only_when_it_shows_nothing() -> None:
    assert shown_display_name("Dee", "dee") == "Dee"
    assert shown_display_name(None, "dee") == "dee"
    assert shown_display_name(" \u3000 ", "dee") == "dee"
    # A name of blanks is shown as marks, not as the username: it is not the username.
    assert shown_display_name("\u3164", "dee") == HIDDEN_MARK


def test_nothing_stored_changes() -> None:
    name = "\u202eecila\u200b"
    shown_name(name)
    assert name == "\u202eecila\u200b"
