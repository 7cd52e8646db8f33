"""Names someone else chose, as we show them to a person.

A Discord username or display name is whatever its owner typed (and whatever sends it may not
be Discord). Shown as it is, it can read as someone else's name: a right-to-left override
turns "alice\u202excod" around, a zero-width space makes "al\u200bice" look like "alice",
Hangul fillers and the braille blank make a name look empty, and a long one pushes the
``@username`` and id beside it off the line. ``shown_name`` is the one form every page,
email, notice and bot reply shows; what is stored never changes.
"""

from __future__ import annotations

import unicodedata

SHOWN_NAME_MAX = 32  # Discord's own limit for a username or a display name
SHOWN_EMAIL_MAX = 254  # no address is longer (``domain.model.EMAIL_MAX``): none is cut

# The mark shown in place of a character that would show as nothing or reorder the text.
HIDDEN_MARK = "\ufffd"
ELLIPSIS = "\u2026"
# Plain text's isolation (Unicode's first strong isolate ... pop directional isolate): the
# name's direction neither leaks into the text around it nor takes it from there, as <bdi>.
FSI = "\u2068"
PDI = "\u2069"

# Letters and symbols that draw nothing: Hangul fillers, the braille blank, Khmer's inherent
# vowels, the Mongolian vowel separator (Cf in older Unicode versions), the Khitan filler.
_BLANK = frozenset("\u115f\u1160\u17b4\u17b5\u180e\u2800\u3164\uffa0\U00016fe4")
# Controls, format characters (bidirectional controls, zero-width spaces and joiners, the
# soft hyphen...), surrogates, private use and unassigned code points, line and paragraph
# separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_ZWJ = "\u200d"
# Marks that draw nothing: the combining grapheme joiner, and the variation selectors, which
# only pick a form of the character before them (an emoji's, a keycap's, an ideograph's, a
# Mongolian letter's); elsewhere "alic\ufe0fe" looks like "alice".
_CGJ = "\u034f"
_KEYCAP_BASES = frozenset("#*0123456789")
_EMOJI_PARTS = frozenset({"So", "Sk", "Mn"})  # emoji, skin tones, the emoji variation selector
_MAX_MARKS = 3  # combining marks on one letter: more stack over the lines around it


def _is_hidden(text: str, at: int) -> bool:
    ch = text[at]
    if ch in _BLANK:
        return True
    if ch == _ZWJ:
        # Kept between two emoji, where it builds one (a family, a flag): elsewhere it only
        # hides between letters.
        before = text[at - 1] if at > 0 else ""
        after = text[at + 1] if at + 1 < len(text) else ""
        return not (
            before
            and after
            and unicodedata.category(before) in _EMOJI_PARTS
            and unicodedata.category(after) == "So"
        )
    if ch == _CGJ:
        return True
    code = ord(ch)
    if 0xFE00 <= code <= 0xFE0F or 0x180B <= code <= 0x180F or 0xE0100 <= code <= 0xE01EF:
        return not (at > 0 and _takes_a_variant(text[at - 1], code))
    return unicodedata.category(ch) in _HIDDEN_CATEGORIES


def _takes_a_variant(before: str, selector: int) -> bool:
    """Whether the variation selector ``selector`` picks a form of ``before``."""
    if 0x180B <= selector <= 0x180F:  # Mongolian's free variation selectors
        return 0x1820 <= ord(before) <= 0x18AF
    if unicodedata.name(before, "").startswith("CJK "):  # an ideograph's form
        return True
    return selector <= 0xFE0F and (
        unicodedata.category(before) in ("So", "Sk") or before in _KEYCAP_BASES
    )


def has_hidden_characters(text: str) -> bool:
    """Whether ``text`` holds what ``shown_name`` would not show as it is: a character that
    draws nothing or reorders the text (one it replaces with the mark), or a combining mark
    past the third on one letter. Spaces aside (``shown_name`` folds them; the caller decides
    on them). For text that is refused rather than shown (an email address)."""
    marks = 0
    for at, ch in enumerate(text):
        if _is_hidden(text, at):
            return True
        if unicodedata.category(ch) in ("Mn", "Me"):
            marks += 1
            if marks > _MAX_MARKS:
                return True
        else:
            marks = 0
    return False


def shown_name(name: str | None, limit: int = SHOWN_NAME_MAX) -> str:
    """``name`` as we show it: each run of characters that show as nothing or reorder the
    text replaced by one visible mark (U+FFFD), spaces of any kind as one ordinary space,
    at most three combining marks on a letter, trimmed, and cut to ``limit`` characters
    with an ellipsis. "" for no name, or one of spaces only."""
    if not name:
        return ""
    out: list[str] = []
    marks = 0
    for at, ch in enumerate(name):
        if _is_hidden(name, at):
            if not out or out[-1] != HIDDEN_MARK:
                out.append(HIDDEN_MARK)
            marks = 0
            continue
        category = unicodedata.category(ch)
        if category == "Zs":
            if out and out[-1] != " ":
                out.append(" ")
            marks = 0
            continue
        if category in ("Mn", "Me"):
            marks += 1
            if marks > _MAX_MARKS:
                continue
        else:
            marks = 0
        out.append(ch)
    shown = "".join(out).strip(" ")
    if len(shown) > limit:
        shown = shown[: max(limit - 1, 0)].rstrip(" ") + ELLIPSIS
    return shown


def shown_email(address: str | None) -> str:
    """An email address as we show it, as ``shown_name`` shows a name, never cut: forms
    refuse an address holding a character that draws nothing or stacks
    (``domain.model.validate_email``), but one stored before they did stays usable, and
    "al\u2800ice@example.com" (the braille blank) reads as alice@example.com."""
    return shown_name(address, SHOWN_EMAIL_MAX)


def isolated_name(name: str | None, limit: int = SHOWN_NAME_MAX) -> str:
    """``shown_name`` for plain text (an email, a notice, an error message, a bot reply):
    isolated between FSI and PDI, so that a right-to-left name does not reorder the
    ``@``, the id or the words beside it."""
    return f"{FSI}{shown_name(name, limit)}{PDI}"


def isolated_handle(username: str | None) -> str:
    """A username as ``@name`` in plain text, the ``@`` inside the isolation."""
    return f"{FSI}@{shown_name(username)}{PDI}"


def shown_display_name(global_name: str | None, username: str) -> str:
    """A Discord account's name as shown: its display name, or its username when it has
    none or one that shows as nothing."""
    return shown_name(global_name) or shown_name(username)
