"""What Discord refuses, and how it says so: command definitions (bulk overwrite) and messages
(interaction responses, webhook edits and follow-ups).

Discord answers an invalid body with ``400 {"code": 50035, "message": "Invalid Form Body",
"errors": {...}}`` where ``errors`` mirrors the body's shape down to the bad field, whose
``_errors`` list says what is wrong (https://discord.com/developers/docs/reference#error-messages).
The rules are those of the documentation:
https://discord.com/developers/docs/interactions/application-commands (naming, lengths, limits,
``contexts``/``integration_types`` only for global commands),
https://discord.com/developers/docs/interactions/receiving-and-responding (response types, the
flags a response may set, modals) and https://discord.com/developers/docs/components/reference
(action rows, buttons, the layout of IS_COMPONENTS_V2 messages).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

INVALID_FORM_BODY = 50035
CANNOT_SEND_EMPTY_MESSAGE = 50006

COMMAND_CHAT_INPUT, COMMAND_USER, COMMAND_MESSAGE, COMMAND_ENTRY_POINT = 1, 2, 3, 4
CONTEXT_GUILD, CONTEXT_BOT_DM, CONTEXT_PRIVATE_CHANNEL = 0, 1, 2
INSTALL_GUILD, INSTALL_USER = 0, 1
OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP = 1, 2
OPTION_STRING, OPTION_INTEGER, OPTION_NUMBER = 3, 4, 10
OPTION_TYPES = range(1, 12)
CHOICE_TYPES = (OPTION_STRING, OPTION_INTEGER, OPTION_NUMBER)
MAX_OPTIONS = MAX_CHOICES = 25
MAX_INTEGER = 2**53  # INTEGER: -2^53+1 to 2^53-1; NUMBER: -2^53 to 2^53
MAX_COMMAND_SIZE = 8000
# How many commands of each type an application may have per scope (global, or one server).
MAX_COMMANDS = {COMMAND_CHAT_INPUT: 100, COMMAND_USER: 15, COMMAND_MESSAGE: 15}

RESPONSE_PONG, RESPONSE_MESSAGE, RESPONSE_DEFERRED_MESSAGE = 1, 4, 5
RESPONSE_MODAL, RESPONSE_LAUNCH_ACTIVITY = 9, 12
RESPONSE_DEFERRED_UPDATE, RESPONSE_UPDATE_MESSAGE, RESPONSE_AUTOCOMPLETE = 6, 7, 8
INTERACTION_COMMAND, INTERACTION_COMPONENT = 2, 3
INTERACTION_AUTOCOMPLETE, INTERACTION_MODAL_SUBMIT = 4, 5
# The callback types a slash command may be answered with (6, 7: components; 8: autocomplete;
# 1: pings; 10 is deprecated).
COMMAND_RESPONSE_TYPES = (4, 5, 9, 12)
# A component's (a button's, a select menu's): 6 and 7 are "only valid for component-based
# interactions"; 9 opens a modal.
COMPONENT_RESPONSE_TYPES = (4, 5, 6, 7, 9, 12)
# A modal's submit: a modal is "not available for MODAL_SUBMIT"; 6 and 7 update the message
# the modal was opened from, so only for a modal opened from a component.
MODAL_SUBMIT_RESPONSE_TYPES = (4, 5)
MODAL_SUBMIT_ON_MESSAGE_RESPONSE_TYPES = (4, 5, 6, 7)
# An autocomplete: its choices only.
AUTOCOMPLETE_RESPONSE_TYPES = (RESPONSE_AUTOCOMPLETE,)
INTERACTION_NAMES = {
    INTERACTION_COMMAND: "an application command",
    INTERACTION_COMPONENT: "a message component",
    INTERACTION_AUTOCOMPLETE: "an autocomplete",
    INTERACTION_MODAL_SUBMIT: "a modal submit",
}
MAX_AUTOCOMPLETE_CHOICES = 25

FLAG_SUPPRESS_EMBEDS, FLAG_EPHEMERAL, FLAG_SUPPRESS_NOTIFICATIONS = 4, 64, 4096
FLAG_IS_VOICE_MESSAGE, FLAG_IS_COMPONENTS_V2 = 8192, 32768
# The flags each kind of message may set.
RESPONSE_FLAGS = (
    FLAG_SUPPRESS_EMBEDS
    | FLAG_EPHEMERAL
    | FLAG_IS_COMPONENTS_V2
    | FLAG_IS_VOICE_MESSAGE
    | FLAG_SUPPRESS_NOTIFICATIONS
)
DEFERRED_FLAGS = FLAG_EPHEMERAL
EDIT_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_IS_COMPONENTS_V2
FOLLOW_UP_FLAGS = (
    FLAG_SUPPRESS_EMBEDS | FLAG_EPHEMERAL | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_IS_COMPONENTS_V2
)

MAX_CONTENT = 2000
MAX_EMBEDS = 10
# An embed's limits (https://discord.com/developers/docs/resources/message#embed-object-embed-
# limits); the text of all of them, in all the message's embeds, is at most 6000 characters.
MAX_EMBED_TITLE = MAX_EMBED_FIELD_NAME = MAX_EMBED_AUTHOR_NAME = 256
MAX_EMBED_DESCRIPTION, MAX_EMBED_FOOTER_TEXT = 4096, 2048
MAX_EMBED_FIELDS, MAX_EMBED_FIELD_VALUE = 25, 1024
MAX_EMBEDS_TEXT = 6000
MAX_ACTION_ROWS = 5
MAX_ROW_BUTTONS = 5
COMPONENT_ACTION_ROW, COMPONENT_BUTTON = 1, 2
COMPONENT_SECTION, COMPONENT_TEXT_DISPLAY, COMPONENT_CONTAINER, COMPONENT_LABEL = 9, 10, 17, 18
COMPONENT_MEDIA_GALLERY, COMPONENT_FILE, COMPONENT_SEPARATOR = 12, 13, 14
# With IS_COMPONENTS_V2 a message is made of these (at most 40 components in all, nested
# ones included); a container holds the same but containers.
V2_TOP_LEVEL = (
    COMPONENT_ACTION_ROW,
    COMPONENT_SECTION,
    COMPONENT_TEXT_DISPLAY,
    COMPONENT_MEDIA_GALLERY,
    COMPONENT_FILE,
    COMPONENT_SEPARATOR,
    COMPONENT_CONTAINER,
)
V2_CONTAINER_CHILDREN = tuple(t for t in V2_TOP_LEVEL if t != COMPONENT_CONTAINER)
MAX_V2_COMPONENTS = 40
# What Discord refuses next to IS_COMPONENTS_V2: "content and embeds will no longer work",
# "poll and stickers are disabled".
V2_LEGACY_FIELDS = ("content", "embeds", "poll", "sticker_ids")
# A modal: a label (around a text input or a select), a text display, or (deprecated) an
# action row holding a text input; 1 to 5 of them.
MODAL_TOP_LEVEL = (COMPONENT_ACTION_ROW, COMPONENT_TEXT_DISPLAY, COMPONENT_LABEL)
MAX_MODAL_COMPONENTS = 5
MAX_MODAL_TITLE = 45
SELECT_TYPES = (3, 5, 6, 7, 8)
BUTTON_LINK, BUTTON_PREMIUM = 5, 6
MAX_BUTTON_LABEL = 80
MAX_BUTTON_URL = 512
LINK_SCHEMES = ("http", "https", "discord")
MAX_CUSTOM_ID = 100
MAX_COMPONENT_ID = 2**31 - 1  # a component's id is a 32-bit integer
MENTION_TYPES = ("roles", "users", "everyone")
EMPTY_MESSAGE = {"code": CANNOT_SEND_EMPTY_MESSAGE, "message": "Cannot send an empty message"}

Path = tuple[str | int, ...]
# Discord's locales (https://discord.com/developers/docs/reference#locales): the keys a name's
# or a description's translations (``*_localizations``) may have.
LOCALES = frozenset(
    {
        "id", "da", "de", "en-GB", "en-US", "es-ES", "es-419", "fr", "hr", "it", "lt", "hu",
        "nl", "no", "pl", "pt-BR", "ro", "fi", "sv-SE", "vi", "tr", "cs", "el", "bg", "ru",
        "uk", "hi", "th", "zh-CN", "ja", "zh-TW", "ko",
    }
)  # fmt: skip


class FormErrors:
    """Problems found in a body, collected in Discord's ``errors`` shape."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}

    def add(self, path: Path, code: str, message: str) -> None:
        node = self.tree
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def __bool__(self) -> bool:
        return bool(self.tree)

    def body(self) -> dict[str, Any]:
        return {"code": INVALID_FORM_BODY, "message": "Invalid Form Body", "errors": self.tree}


def _length(errors: FormErrors, path: Path, value: object, low: int, high: int) -> None:
    if not isinstance(value, str):
        errors.add(path, "BASE_TYPE_STRING", "Must be a string.")
    elif not low <= len(value) <= high:
        if low == 0:
            errors.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {high} or fewer in length.")
        else:
            errors.add(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")


def check_localizations(
    errors: FormErrors,
    path: Path,
    translations: object,
    check: Callable[[FormErrors, Path, object], None],
) -> None:
    """A ``*_localizations`` field: a dictionary (or null) whose keys are Discord's locales and
    whose values (null: none for that locale) pass ``check``, the translated field's rule."""
    if translations is None:
        return
    if not isinstance(translations, Mapping):
        errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used.")
        return
    for locale, text in translations.items():
        here = (*path, locale)
        if locale not in LOCALES:
            errors.add(here, "BASE_TYPE_CHOICES", f"Value must be one of {sorted(LOCALES)}.")
        elif text is not None:
            check(errors, here, text)


def length_check(low: int, high: int) -> Callable[[FormErrors, Path, object], None]:
    """A check of a text field's length, for ``check_localizations``."""

    def check(errors: FormErrors, path: Path, value: object) -> None:
        _length(errors, path, value, low, high)

    return check


# -- application commands --------------------------------------------------------------------


def _name_character(char: str) -> bool:
    """``[-_'\\p{L}\\p{N}\\p{sc=Deva}\\p{sc=Thai}]``: Python's ``re`` has no ``\\p``."""
    if char in "-_'":
        return True
    if unicodedata.category(char)[0] in "LN":
        return True
    code = ord(char)  # Devanagari and Thai include their combining marks
    return 0x0900 <= code <= 0x097F or 0xA8E0 <= code <= 0xA8FF or 0x0E00 <= code <= 0x0E7F


def chat_input_name_ok(name: str) -> bool:
    """A slash command's (or option's) name: 1-32 of ``-_'``, letters and digits, lower case
    wherever a letter has a lower-case form."""
    return 1 <= len(name) <= 32 and all(map(_name_character, name)) and name == name.lower()


def _check_name(errors: FormErrors, path: Path, name: object, *, chat_input: bool) -> None:
    if not isinstance(name, str):
        errors.add(path, "BASE_TYPE_REQUIRED", "This field is required")
    elif not 1 <= len(name) <= 32:
        errors.add(path, "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
    elif chat_input and not chat_input_name_ok(name):
        errors.add(path, "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")


def _check_translations(
    errors: FormErrors, path: Path, item: Mapping[str, Any], *, chat_input: bool
) -> None:
    """A command's or option's translated names (the name's rules) and descriptions (1-100)."""

    def name(errors: FormErrors, here: Path, text: object) -> None:
        _check_name(errors, here, text, chat_input=chat_input)

    check_localizations(errors, (*path, "name_localizations"), item.get("name_localizations"), name)
    check_localizations(
        errors,
        (*path, "description_localizations"),
        item.get("description_localizations"),
        length_check(1, 100),
    )


def _listed(value: object) -> list[Any]:
    """A field that should be an array, for counting (one that is not is refused elsewhere)."""
    return value if isinstance(value, list) else []


def _size_of_option(option: Mapping[str, Any]) -> int:
    size = len(str(option.get("name", ""))) + len(str(option.get("description", "")))
    for choice in _listed(option.get("choices")):
        if isinstance(choice, Mapping):
            size += len(str(choice.get("name", ""))) + len(str(choice.get("value", "")))
    for child in _listed(option.get("options")):
        if isinstance(child, Mapping):
            size += _size_of_option(child)
    return size


def _check_choices(errors: FormErrors, path: Path, option: Mapping[str, Any]) -> None:
    choices = option.get("choices")
    if choices is None:
        return
    if option.get("type") not in CHOICE_TYPES:
        errors.add(path, "APPLICATION_COMMAND_OPTION_CHOICES_INVALID", "Choices not allowed")
        return
    if not isinstance(choices, list) or len(choices) > MAX_CHOICES:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CHOICES} or fewer in length.")
        return
    for index, choice in enumerate(choices):
        if not isinstance(choice, Mapping):
            errors.add((*path, index), "MODEL_TYPE_CONVERT", "Only dictionaries may be used.")
            continue
        _length(errors, (*path, index, "name"), choice.get("name"), 1, 100)
        value = choice.get("value")
        if isinstance(value, str):
            _length(errors, (*path, index, "value"), value, 1, 100)
        _check_choice_value(errors, (*path, index, "value"), value, option.get("type"))


def _check_choice_value(errors: FormErrors, path: Path, value: object, kind: object) -> None:
    """A choice's value is of its option's type: a string, an integer ("between -2^53+1 and
    2^53-1") or a number ("a double between -2^53 and 2^53")."""
    if kind == OPTION_STRING:
        if not isinstance(value, str):
            errors.add(path, "BASE_TYPE_STRING", "Must be a string.")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        errors.add(path, "NUMBER_TYPE_COERCE", f'Value "{value}" is not a number.')
    elif kind == OPTION_INTEGER and not (isinstance(value, int) and abs(value) < MAX_INTEGER):
        errors.add(path, "NUMBER_TYPE_COERCE", f'Value "{value}" is not int.')
    elif kind == OPTION_NUMBER and not abs(value) <= MAX_INTEGER:
        errors.add(path, "NUMBER_TYPE_OUT_OF_RANGE", "Value is out of range.")


# Where an option sits: right under the command, in a subcommand group, or in a subcommand.
IN_COMMAND, IN_GROUP, IN_SUBCOMMAND = "command", "group", "subcommand"
NESTING = (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP)


def _check_autocomplete(errors: FormErrors, path: Path, option: Mapping[str, Any]) -> None:
    """ "autocomplete may not be set to true if choices are present", and only STRING,
    INTEGER and NUMBER options have it."""
    if option.get("autocomplete") is not True:
        return
    if option.get("type") not in CHOICE_TYPES:
        errors.add(
            path,
            "APPLICATION_COMMAND_OPTION_AUTOCOMPLETE_INVALID",
            "Only string, integer and number options may autocomplete",
        )
    elif option.get("choices"):
        errors.add(
            path,
            "APPLICATION_COMMAND_AUTOCOMPLETE_WITH_CHOICES",
            "Autocomplete cannot be enabled on an option with choices",
        )


def _check_options(errors: FormErrors, path: Path, options: object, *, parent: str) -> None:
    """Options (at most 25, names unique, required ones first) and, for subcommands and
    groups, their nested options: "a group's are its subcommands, a subcommand's its
    parameters", "the only kind of nesting supported"; under the command, subcommands and
    groups make it "unusable" as a command of its own, so they come without parameters."""
    if options is None:
        return
    if not isinstance(options, list):
        errors.add(path, "BASE_TYPE_ARRAY", "Must be an array.")
        return
    if len(options) > MAX_OPTIONS:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_OPTIONS} or fewer in length.")
    seen: set[str] = set()
    optional_seen = False
    nesting = [o.get("type") in NESTING for o in options if isinstance(o, Mapping)]
    # Under the command, the first option says which kind the level is.
    subcommands = parent == IN_GROUP or (parent == IN_COMMAND and bool(nesting) and nesting[0])
    for index, option in enumerate(options):
        here = (*path, index)
        if not isinstance(option, Mapping):
            errors.add(here, "MODEL_TYPE_CONVERT", "Only dictionaries may be used.")
            continue
        _check_option(errors, here, option, parent=parent, subcommands=subcommands)
        name = option.get("name")
        if isinstance(name, str) and name in seen:
            errors.add(
                (*here, "name"),
                "APPLICATION_COMMAND_OPTION_NAME_ALREADY_EXISTS",
                "Option names must be unique",
            )
        seen.add(str(name))
        if option.get("type") in NESTING:
            continue
        if not option.get("required"):
            optional_seen = True
        elif optional_seen:
            errors.add(
                (*here, "required"),
                "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                "Required options must be placed before non-required options",
            )


def _check_option(
    errors: FormErrors, here: Path, option: Mapping[str, Any], *, parent: str, subcommands: bool
) -> None:
    kind = option.get("type")
    if kind not in OPTION_TYPES or isinstance(kind, bool):
        errors.add((*here, "type"), "BASE_TYPE_CHOICES", "Value must be one of 1 to 11.")
    nesting = kind in NESTING and not isinstance(kind, bool)
    if kind in OPTION_TYPES and not isinstance(kind, bool):
        allowed = {
            IN_COMMAND: NESTING if subcommands else tuple(t for t in OPTION_TYPES if t > 2),
            IN_GROUP: (OPTION_SUB_COMMAND,),
            IN_SUBCOMMAND: tuple(t for t in OPTION_TYPES if t > 2),
        }[parent]
        if kind not in allowed:
            errors.add(
                (*here, "type"),
                "APPLICATION_COMMAND_OPTION_TYPE_INVALID",
                f"Option type {kind} is not allowed here: a command holds subcommands and "
                "groups or parameters, a group subcommands, a subcommand parameters.",
            )
    _check_name(errors, (*here, "name"), option.get("name"), chat_input=True)
    _length(errors, (*here, "description"), option.get("description"), 1, 100)
    _check_translations(errors, here, option, chat_input=True)
    _check_choices(errors, (*here, "choices"), option)
    _check_autocomplete(errors, (*here, "autocomplete"), option)
    if nesting:
        inner = IN_GROUP if kind == OPTION_SUB_COMMAND_GROUP else IN_SUBCOMMAND
        # Deeper than Discord allows, the type above was refused already: not again below.
        if parent != IN_SUBCOMMAND and not (parent == IN_GROUP and inner == IN_GROUP):
            _check_options(errors, (*here, "options"), option.get("options"), parent=inner)
    for bound, low, high in (("min_length", 0, 6000), ("max_length", 1, 6000)):
        value = option.get(bound)
        if value is not None and not (isinstance(value, int) and low <= value <= high):
            errors.add(
                (*here, bound),
                "NUMBER_TYPE_OUT_OF_RANGE",
                f"Int value should be between {low} and {high}.",
            )


def _check_enum_list(
    errors: FormErrors, path: Path, values: object, allowed: Iterable[int]
) -> list[int] | None:
    if values is None:
        return None
    allowed = tuple(allowed)
    if not isinstance(values, list) or not values:
        errors.add(path, "BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length.")
        return None
    if len(set(map(repr, values))) != len(values):
        errors.add(path, "SET_TYPE_ALREADY_CONTAINS_VALUE", "The set already contains this value")
    for index, value in enumerate(values):
        if value not in allowed or isinstance(value, bool):
            errors.add(
                (*path, index),
                "ENUM_TYPE_COERCE",
                f'Value "{value}" is not a valid enum value; one of {list(allowed)}.',
            )
    return [v for v in values if isinstance(v, int)]


def check_command(errors: FormErrors, path: Path, command: object, *, guild: bool) -> None:
    """One command of a bulk overwrite, global or for a server (``guild``)."""
    if not isinstance(command, Mapping):
        errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used.")
        return
    kind = command.get("type", COMMAND_CHAT_INPUT)
    if kind not in (COMMAND_CHAT_INPUT, COMMAND_USER, COMMAND_MESSAGE, COMMAND_ENTRY_POINT):
        errors.add((*path, "type"), "BASE_TYPE_CHOICES", "Value must be one of (1, 2, 3, 4).")
        return
    chat_input = kind == COMMAND_CHAT_INPUT
    _check_name(errors, (*path, "name"), command.get("name"), chat_input=chat_input)
    _check_translations(errors, path, command, chat_input=chat_input)
    description = command.get("description")
    if chat_input:
        _length(errors, (*path, "description"), description, 1, 100)
    elif description not in (None, ""):
        errors.add(
            (*path, "description"),
            "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION",
            "Context menu commands cannot have a description",
        )
    options = command.get("options")
    if options and not chat_input:
        errors.add(
            (*path, "options"),
            "APPLICATION_COMMAND_OPTIONS_NOT_ALLOWED",
            "Only slash commands may have options",
        )
    elif chat_input:
        _check_options(errors, (*path, "options"), options, parent=IN_COMMAND)
    if chat_input:
        size = len(str(command.get("name", ""))) + len(str(description or ""))
        size += sum(_size_of_option(o) for o in _listed(options) if isinstance(o, Mapping))
        if size > MAX_COMMAND_SIZE:
            errors.add(
                path,
                "APPLICATION_COMMAND_TOO_LARGE",
                f"Command exceeds maximum size ({MAX_COMMAND_SIZE})",
            )
    permissions = command.get("default_member_permissions")
    if permissions is not None and not (
        isinstance(permissions, str | int) and str(permissions).isdecimal()
    ):
        errors.add(
            (*path, "default_member_permissions"),
            "NUMBER_TYPE_COERCE",
            f'Value "{permissions}" is not snowflake.',
        )
    contexts = _check_enum_list(
        errors,
        (*path, "contexts"),
        command.get("contexts"),
        (CONTEXT_GUILD, CONTEXT_BOT_DM, CONTEXT_PRIVATE_CHANNEL),
    )
    _check_enum_list(
        errors,
        (*path, "integration_types"),
        command.get("integration_types"),
        (INSTALL_GUILD, INSTALL_USER),
    )
    if guild and contexts and set(contexts) - {CONTEXT_GUILD}:
        # "Guild commands don't support the BOT_DM interaction context": a server's command
        # is never offered in DMs, so asking for one is a mistake Discord reports.
        errors.add(
            (*path, "contexts"),
            "APPLICATION_COMMAND_CONTEXTS_GUILD_ONLY",
            "Guild commands can only be used in the GUILD interaction context (0); "
            "contexts and integration_types are for global commands.",
        )


def check_commands(body: object, *, guild: bool) -> FormErrors:
    """A bulk overwrite (``PUT .../commands``): a list of commands, names unique per type."""
    errors = FormErrors()
    if not isinstance(body, list):
        errors.add((), "BASE_TYPE_ARRAY", "Must be an array.")
        return errors
    seen: set[tuple[object, object]] = set()
    counts: dict[object, int] = {}
    for index, command in enumerate(body):
        check_command(errors, (index,), command, guild=guild)
        # A command whose type or name is not even the right kind of value was refused above.
        if (
            isinstance(command, Mapping)
            and isinstance(command.get("type", COMMAND_CHAT_INPUT), int)
            and isinstance(command.get("name"), str)
        ):
            key = (command.get("type", COMMAND_CHAT_INPUT), command.get("name"))
            if key in seen:
                errors.add(
                    (index, "name"),
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "Application command names must be unique",
                )
            seen.add(key)
            counts[key[0]] = counts.get(key[0], 0) + 1
    for kind, limit in MAX_COMMANDS.items():
        if counts.get(kind, 0) > limit:
            errors.add(
                (),
                "APPLICATION_COMMANDS_TOO_MANY",
                f"Maximum number of application commands of type {kind} reached ({limit})",
            )
    return errors


# -- messages ------------------------------------------------------------------------------


def _check_sku(errors: FormErrors, path: Path, button: Mapping[str, Any], *, premium: bool) -> None:
    """ "Premium buttons must contain a sku_id, and cannot have a custom_id, label, url, or
    emoji"; no other button has a ``sku_id``."""
    if not premium:
        if button.get("sku_id") is not None:
            errors.add(
                (*path, "sku_id"),
                "BUTTON_COMPONENT_SKU_ID_NOT_ALLOWED",
                "Only premium buttons can have a sku_id",
            )
        return
    if button.get("sku_id") is None:
        errors.add((*path, "sku_id"), "BASE_TYPE_REQUIRED", "This field is required")
    for field in ("custom_id", "label", "url", "emoji"):
        if button.get(field) is not None:
            errors.add(
                (*path, field),
                "BUTTON_COMPONENT_INVALID_FIELD_FOR_PREMIUM",
                f"A premium button cannot have a {field}",
            )


def _check_button(errors: FormErrors, path: Path, button: Mapping[str, Any]) -> str | None:
    """One button; returns its ``custom_id`` (to check they are unique in the message)."""
    style = button.get("style")
    if style not in range(1, 7):
        errors.add(
            (*path, "style"), "BASE_TYPE_CHOICES", "Value must be one of (1, 2, 3, 4, 5, 6)."
        )
        return None
    label = button.get("label")
    if label is not None:
        _length(errors, (*path, "label"), label, 0, MAX_BUTTON_LABEL)
    custom_id, url = button.get("custom_id"), button.get("url")
    if style == BUTTON_LINK:
        if custom_id is not None:
            errors.add(
                (*path, "custom_id"),
                "BUTTON_COMPONENT_CUSTOM_ID_NOT_ALLOWED",
                "A link button cannot have a custom_id",
            )
        _check_link_url(errors, (*path, "url"), url)
    elif style != BUTTON_PREMIUM:
        if url is not None:
            errors.add(
                (*path, "url"),
                "BUTTON_COMPONENT_URL_NOT_ALLOWED",
                "Only link buttons can have a url",
            )
        if custom_id is None:
            errors.add((*path, "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
        else:
            _length(errors, (*path, "custom_id"), custom_id, 1, MAX_CUSTOM_ID)
    _check_sku(errors, path, button, premium=style == BUTTON_PREMIUM)
    if style != BUTTON_PREMIUM and not label and not button.get("emoji"):
        errors.add(
            path,
            "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED",
            "A button needs a label or an emoji",
        )
    return custom_id if isinstance(custom_id, str) else None


def _check_link_url(errors: FormErrors, path: Path, url: object) -> None:
    if not isinstance(url, str) or not url:
        errors.add(path, "BASE_TYPE_REQUIRED", "This field is required")
        return
    if len(url) > MAX_BUTTON_URL:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_BUTTON_URL} or fewer in length.")
        return
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[abc": an IPv6 host without its closing bracket
        errors.add(path, "URL_TYPE_INVALID_URL", "Not a well formed URL.")
        return
    if parts.scheme not in LINK_SCHEMES:
        errors.add(
            path,
            "URL_TYPE_INVALID_SCHEME",
            f'Scheme "{parts.scheme}" is not supported. Scheme must be one of {LINK_SCHEMES}.',
        )
    elif parts.scheme != "discord" and not parts.netloc:
        errors.add(path, "URL_TYPE_INVALID_URL", "Not a well formed URL.")


def _check_component_ids(errors: FormErrors, path: Path, components: list[object]) -> None:
    """Each component's optional ``id``: "32 bit integer" (the API spec: int32, at least 0)
    that "must be unique within the message"; 0 counts as none (Discord numbers it). Discord
    refuses a message whose ids repeat (the error's inner code is the emulator's naming)."""
    seen: set[int] = set()

    def visit(item: object, here: Path) -> None:
        if not isinstance(item, Mapping):
            return
        value = item.get("id")
        if value is not None:
            if type(value) is not int:
                errors.add((*here, "id"), "NUMBER_TYPE_COERCE", f'Value "{value}" is not int.')
            elif not 0 <= value <= MAX_COMPONENT_ID:
                errors.add(
                    (*here, "id"),
                    "NUMBER_TYPE_OUT_OF_RANGE",
                    f"Int value should be between 0 and {MAX_COMPONENT_ID}.",
                )
            elif value in seen:
                errors.add(
                    (*here, "id"),
                    "COMPONENT_ID_DUPLICATED",
                    "Component id must be unique within the message",
                )
            elif value:
                seen.add(value)
        children = item.get("components")
        for index, child in enumerate(children if isinstance(children, list) else ()):
            visit(child, (*here, "components", index))
        for key in ("accessory", "component"):  # a section's accessory, a label's component
            visit(item.get(key), (*here, key))

    for index, item in enumerate(components):
        visit(item, (*path, index))


def _check_components(errors: FormErrors, path: Path, components: object, flags: int) -> None:
    if components is None:
        return
    if not isinstance(components, list):
        errors.add(path, "BASE_TYPE_ARRAY", "Must be an array.")
        return
    _check_component_ids(errors, path, components)
    if flags & FLAG_IS_COMPONENTS_V2:
        _check_v2_components(errors, path, components)
        return
    if len(components) > MAX_ACTION_ROWS:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ACTION_ROWS} or fewer in length.")
    custom_ids: set[str] = set()
    for index, row in enumerate(components):
        here = (*path, index)
        if not isinstance(row, Mapping) or row.get("type") != COMPONENT_ACTION_ROW:
            errors.add(
                (*here, "type"),
                "UNION_TYPE_CHOICES",
                'Value of field "type" must be one of (1,): messages hold action rows.',
            )
            continue
        _check_row(errors, (*here, "components"), row.get("components"), custom_ids)


def _count_components(components: Iterable[object]) -> int:
    """Every component of a message, nested ones included (a section's accessory too)."""
    total = 0
    for item in components:
        total += 1
        if isinstance(item, Mapping):
            children = item.get("components")
            total += _count_components(children if isinstance(children, list) else ())
            total += _count_components([item["accessory"]] if item.get("accessory") else ())
    return total


def _check_objects(errors: FormErrors, path: Path, items: list[object]) -> None:
    """Components whose content is not emulated (a section's, a label's row...) are objects
    all the way down: anything else is Discord's MODEL_TYPE_CONVERT."""
    for index, item in enumerate(items):
        here = (*path, index)
        if not isinstance(item, Mapping):
            errors.add(here, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
        elif isinstance(item.get("components"), list):
            _check_objects(errors, (*here, "components"), item["components"])


def _check_v2_components(errors: FormErrors, path: Path, components: list[object]) -> None:
    """The layout of an IS_COMPONENTS_V2 message: the kinds allowed at the top and in a
    container, at most 40 components in all; action rows are checked as in other messages.
    (What sections, galleries and files hold is not emulated.)"""
    if _count_components(components) > MAX_V2_COMPONENTS:
        errors.add(
            path,
            "BASE_TYPE_MAX_LENGTH",
            f"Messages allow up to {MAX_V2_COMPONENTS} components in all.",
        )
    custom_ids: set[str] = set()

    def walk(items: list[object], where: Path, allowed: tuple[int, ...]) -> None:
        for index, item in enumerate(items):
            here = (*where, index)
            kind = item.get("type") if isinstance(item, Mapping) else None
            if not isinstance(item, Mapping) or kind not in allowed or isinstance(kind, bool):
                errors.add(
                    (*here, "type"),
                    "UNION_TYPE_CHOICES",
                    f'Value of field "type" must be one of {allowed}.',
                )
            elif kind == COMPONENT_ACTION_ROW:
                _check_row(errors, (*here, "components"), item.get("components"), custom_ids)
            elif kind == COMPONENT_CONTAINER:
                children = item.get("components")
                if not isinstance(children, list) or not children:
                    errors.add(
                        (*here, "components"),
                        "BASE_TYPE_MIN_LENGTH",
                        "Must be 1 or more in length.",
                    )
                else:
                    walk(children, (*here, "components"), V2_CONTAINER_CHILDREN)
            else:
                if isinstance(item.get("components"), list):  # a section's text displays
                    _check_objects(errors, (*here, "components"), item["components"])
                accessory = item.get("accessory")  # a section's: a thumbnail or a button
                if isinstance(accessory, Mapping) and accessory.get("type") == COMPONENT_BUTTON:
                    custom_id = _check_button(errors, (*here, "accessory"), accessory)
                    _unique_custom_id(errors, (*here, "accessory"), custom_id, custom_ids)

    walk(components, path, V2_TOP_LEVEL)


def _check_legacy_fields(errors: FormErrors, path: Path, message: Mapping[str, Any]) -> None:
    """An IS_COMPONENTS_V2 message has no content, embeds, poll or stickers: Discord refuses
    each, naming it (it judges an edit by the message it leaves: an old reply's content must
    be cleared with null when the edit turns the flag on)."""
    for field in V2_LEGACY_FIELDS:
        if message.get(field):
            errors.add(
                (*path, field),
                "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                f"The '{field}' field cannot be used when using MessageFlags.IS_COMPONENTS_V2",
            )


def _check_row(errors: FormErrors, path: Path, children: object, custom_ids: set[str]) -> None:
    """An action row: 1 to 5 buttons, or a single select menu; custom ids unique."""
    if not isinstance(children, list) or not children:
        errors.add(path, "BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length.")
        return
    selects = [c for c in children if isinstance(c, Mapping) and c.get("type") in SELECT_TYPES]
    if len(children) > (1 if selects else MAX_ROW_BUTTONS):
        errors.add(
            path,
            "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
            "The specified component exceeds the maximum width",
        )
    for position, child in enumerate(children):
        where = (*path, position)
        if not isinstance(child, Mapping) or child.get("type") not in (
            COMPONENT_BUTTON,
            *SELECT_TYPES,
        ):
            errors.add(
                (*where, "type"), "UNION_TYPE_CHOICES", "Action rows hold buttons or one select."
            )
            continue
        if child.get("type") == COMPONENT_BUTTON:
            custom_id = _check_button(errors, where, child)
        else:
            custom_id = child.get("custom_id")
            _length(errors, (*where, "custom_id"), custom_id, 1, MAX_CUSTOM_ID)
        _unique_custom_id(errors, where, custom_id, custom_ids)


def _unique_custom_id(
    errors: FormErrors, where: Path, custom_id: object, custom_ids: set[str]
) -> None:
    """A component's custom id, unique among the message's (``custom_ids``: those seen)."""
    if isinstance(custom_id, str):
        if custom_id in custom_ids:
            errors.add(
                (*where, "custom_id"),
                "COMPONENT_CUSTOM_ID_DUPLICATED",
                "Component custom id cannot be duplicated",
            )
        custom_ids.add(custom_id)


def _check_mentions(errors: FormErrors, path: Path, mentions: object) -> None:
    if mentions is None:
        return
    if not isinstance(mentions, Mapping):
        errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used.")
        return
    parse = mentions.get("parse")
    if parse is None:  # nullable in Discord's spec: as if left out
        parse = []
    elif not isinstance(parse, list):  # "" or 0 or {} too: not an array, not none
        errors.add(
            (*path, "parse"), "MODEL_TYPE_CONVERT", "Only iterables may be used in a ListType"
        )
        return
    if any(p not in MENTION_TYPES for p in parse):
        errors.add(
            (*path, "parse"),
            "BASE_TYPE_CHOICES",
            f"Value must be one of {MENTION_TYPES}.",
        )
        return
    for kind in ("users", "roles"):
        listed = mentions.get(kind)
        if listed and kind in parse:
            errors.add(
                (*path, "parse"),
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
            )
        if listed is not None and (not isinstance(listed, list) or len(listed) > 100):
            errors.add((*path, kind), "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        elif listed is not None:  # "array of snowflakes"
            for index, item in enumerate(listed):
                if not _snowflake(item):
                    errors.add(
                        (*path, kind, index),
                        "NUMBER_TYPE_COERCE",
                        f'Value "{item}" is not snowflake.',
                    )
    replied = mentions.get("replied_user")
    if replied is not None and not isinstance(replied, bool):
        errors.add((*path, "replied_user"), "BASE_TYPE_BOOLEAN", "Must be either true or false.")


def _snowflake(value: object) -> bool:
    """A snowflake as a body may give it: digits in a string, or a non-negative integer."""
    if isinstance(value, str):
        return value.isascii() and value.isdecimal() and len(value) <= 20
    return type(value) is int and 0 <= value < 2**64


def check_message(
    errors: FormErrors,
    path: Path,
    data: object,
    *,
    allowed_flags: int,
    current: Mapping[str, Any] | None = None,
) -> bool:
    """A message body (a reply, a follow-up, or an edit of ``current``). Returns whether the
    message (after the edit, for one: a PATCH keeps the fields it does not send) has
    something to show (content, embeds, components, attachments or a poll): Discord refuses
    an empty message (50006), which the callers creating or editing one check."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used.")
        return True
    content = data.get("content")
    if content is not None:
        _length(errors, (*path, "content"), content, 0, MAX_CONTENT)
    flags = data.get("flags")
    if flags is not None:
        if not isinstance(flags, int) or isinstance(flags, bool) or flags < 0:
            errors.add((*path, "flags"), "NUMBER_TYPE_COERCE", f'Value "{flags}" is not int.')
            flags = 0
        elif current is not None:
            # An edit: "unsupported flag changes are currently ignored without error" (Edit
            # Message; Discord masks the bits a request may change), e.g. EPHEMERAL.
            flags &= allowed_flags
        elif flags & ~allowed_flags:
            errors.add(
                (*path, "flags"),
                "MESSAGE_FLAGS_INVALID",
                f"Only these flags may be set here: {allowed_flags} (got {flags}).",
            )
    message = {**current, **data} if current is not None else data
    # Once a message has IS_COMPONENTS_V2, the flag cannot be removed from it.
    kept = int((current or {}).get("flags") or 0) & FLAG_IS_COMPONENTS_V2
    flags = int(flags or 0) | kept
    _check_embeds(errors, (*path, "embeds"), data.get("embeds"))
    _check_components(errors, (*path, "components"), data.get("components"), flags)
    if flags & FLAG_IS_COMPONENTS_V2:
        _check_legacy_fields(errors, path, message)
    _check_mentions(errors, (*path, "allowed_mentions"), data.get("allowed_mentions"))
    return shows_something(message)


def _text(errors: FormErrors, path: Path, value: object, high: int, *, required: bool) -> int:
    """An embed's text field (``None``: left out, which only a required one may not be);
    returns its length, for the 6000 characters of all the message's embeds."""
    if value is None:
        if required:
            errors.add(path, "BASE_TYPE_REQUIRED", "This field is required")
        return 0
    _length(errors, path, value, 0, high)
    return len(value) if isinstance(value, str) else 0


def _embed_part(errors: FormErrors, path: Path, part: object) -> Mapping[str, Any] | None:
    """An embed's footer, author or field: an object (or ``None``: left out)."""
    if part is None or isinstance(part, Mapping):
        return part
    errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
    return None


def _check_embed(errors: FormErrors, path: Path, embed: object) -> int:
    """One embed's text limits; returns how many characters of text it holds."""
    if not isinstance(embed, Mapping):
        errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
        return 0
    size = _text(errors, (*path, "title"), embed.get("title"), MAX_EMBED_TITLE, required=False)
    size += _text(
        errors,
        (*path, "description"),
        embed.get("description"),
        MAX_EMBED_DESCRIPTION,
        required=False,
    )
    fields = embed.get("fields")
    if fields is not None and not isinstance(fields, list):
        errors.add((*path, "fields"), "BASE_TYPE_ARRAY", "Must be an array.")
    elif fields is not None:
        if len(fields) > MAX_EMBED_FIELDS:
            errors.add(
                (*path, "fields"),
                "BASE_TYPE_MAX_LENGTH",
                f"Must be {MAX_EMBED_FIELDS} or fewer in length.",
            )
        for index, field in enumerate(fields):
            here = (*path, "fields", index)
            if not isinstance(field, Mapping):
                errors.add(here, "MODEL_TYPE_CONVERT", "Only dictionaries may be used.")
            else:
                name, value = field.get("name"), field.get("value")
                size += _text(errors, (*here, "name"), name, MAX_EMBED_FIELD_NAME, required=True)
                size += _text(errors, (*here, "value"), value, MAX_EMBED_FIELD_VALUE, required=True)
    if (footer := _embed_part(errors, (*path, "footer"), embed.get("footer"))) is not None:
        text = footer.get("text")
        size += _text(errors, (*path, "footer", "text"), text, MAX_EMBED_FOOTER_TEXT, required=True)
    if (author := _embed_part(errors, (*path, "author"), embed.get("author"))) is not None:
        name = author.get("name")
        size += _text(errors, (*path, "author", "name"), name, MAX_EMBED_AUTHOR_NAME, required=True)
    return size


def _check_embeds(errors: FormErrors, path: Path, embeds: object) -> None:
    """At most 10 embeds, each within its limits, and 6000 characters of text in all."""
    if embeds is None:
        return
    if not isinstance(embeds, list) or len(embeds) > MAX_EMBEDS:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length.")
        return
    size = sum(_check_embed(errors, (*path, index), embed) for index, embed in enumerate(embeds))
    if size > MAX_EMBEDS_TEXT:
        errors.add(
            path,
            "MAX_EMBED_SIZE_EXCEEDED",
            f"Embed size exceeds maximum size of {MAX_EMBEDS_TEXT}",
        )


def shows_something(message: Mapping[str, Any]) -> bool:
    """Whether a message has anything to show: Discord refuses an empty one (50006), and
    content of whitespace alone is empty (Discord trims it)."""
    content = message.get("content")
    return bool(
        (content.strip() if isinstance(content, str) else content)
        or message.get("embeds")
        or message.get("components")
        or message.get("attachments")
        or message.get("poll")
    )


def _required_length(errors: FormErrors, path: Path, value: object, low: int, high: int) -> None:
    if value is None:
        errors.add(path, "BASE_TYPE_REQUIRED", "This field is required")
    else:
        _length(errors, path, value, low, high)


def _check_modal(errors: FormErrors, path: Path, data: object) -> None:
    """A modal (type 9): ``custom_id`` (1-100), ``title`` (1-45) and 1 to 5 components, each
    a label, a text display or an action row. (What a label holds is not emulated.)"""
    if data is None:
        errors.add(path, "BASE_TYPE_REQUIRED", "This field is required")
        return
    if not isinstance(data, Mapping):
        errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used.")
        return
    _required_length(errors, (*path, "custom_id"), data.get("custom_id"), 1, MAX_CUSTOM_ID)
    _required_length(errors, (*path, "title"), data.get("title"), 1, MAX_MODAL_TITLE)
    components = data.get("components")
    where = (*path, "components")
    if components is None:
        errors.add(where, "BASE_TYPE_REQUIRED", "This field is required")
    elif not isinstance(components, list):
        errors.add(where, "BASE_TYPE_ARRAY", "Must be an array.")
    elif not 1 <= len(components) <= MAX_MODAL_COMPONENTS:
        errors.add(
            where,
            "BASE_TYPE_BAD_LENGTH",
            f"Must be between 1 and {MAX_MODAL_COMPONENTS} in length.",
        )
    else:
        for index, item in enumerate(components):
            kind = item.get("type") if isinstance(item, Mapping) else None
            if kind not in MODAL_TOP_LEVEL or isinstance(kind, bool):
                errors.add(
                    (*where, index, "type"),
                    "UNION_TYPE_CHOICES",
                    f'Value of field "type" must be one of {MODAL_TOP_LEVEL}.',
                )
            elif isinstance(item, Mapping) and isinstance(item.get("components"), list):
                _check_objects(errors, (*where, index, "components"), item["components"])
        _check_modal_custom_ids(errors, where, components)


def _check_modal_custom_ids(errors: FormErrors, path: Path, components: list[object]) -> None:
    """The custom ids of a modal's inputs (a label's component, a row's text inputs) are
    unique within the modal, as a message's are within the message."""
    seen: set[str] = set()
    inputs: list[tuple[Path, object]] = []
    for index, item in enumerate(components):
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == COMPONENT_LABEL:
            inputs.append(((*path, index, "component"), item.get("component")))
        children = item.get("components")
        for position, child in enumerate(children if isinstance(children, list) else ()):
            inputs.append(((*path, index, "components", position), child))
    for here, component in inputs:
        if isinstance(component, Mapping):
            _unique_custom_id(errors, here, component.get("custom_id"), seen)


def response_types_for(interaction_type: int, *, on_message: bool = False) -> tuple[int, ...]:
    """The callback types Discord takes for an interaction of ``interaction_type``
    (``on_message``: a modal submit from a modal a component opened)."""
    if interaction_type == INTERACTION_COMPONENT:
        return COMPONENT_RESPONSE_TYPES
    if interaction_type == INTERACTION_MODAL_SUBMIT:
        return MODAL_SUBMIT_ON_MESSAGE_RESPONSE_TYPES if on_message else MODAL_SUBMIT_RESPONSE_TYPES
    if interaction_type == INTERACTION_AUTOCOMPLETE:
        return AUTOCOMPLETE_RESPONSE_TYPES
    return COMMAND_RESPONSE_TYPES


def check_command_response(body: object) -> tuple[int, dict[str, Any]] | None:
    """An answer to a slash command (the callback's body, or the HTTP response's): ``None``
    when Discord takes it, else the status and body Discord would answer with."""
    return check_interaction_response(body, INTERACTION_COMMAND)


def check_interaction_response(
    body: object, interaction_type: int, *, on_message: bool = False
) -> tuple[int, dict[str, Any]] | None:
    """An answer to an interaction of ``interaction_type`` (2: a slash command, 3: a
    component, 4: an autocomplete, 5: a modal submit; ``on_message``: one that came from a
    message, as a modal a button opened): ``None`` when Discord takes it, else the status and
    body Discord would answer with (a type it does not take for that interaction: 400 50035
    naming ``type``)."""
    errors = FormErrors()
    if not isinstance(body, Mapping):
        errors.add((), "MODEL_TYPE_CONVERT", "Only dictionaries may be used.")
        return 400, errors.body()
    kind = body.get("type")
    allowed = response_types_for(interaction_type, on_message=on_message)
    if kind not in allowed or isinstance(kind, bool):
        name = INTERACTION_NAMES.get(interaction_type, f"an interaction of type {interaction_type}")
        errors.add(
            ("type",),
            "BASE_TYPE_CHOICES",
            f"Value must be one of {allowed} for {name}.",
        )
        return 400, errors.body()
    if kind == RESPONSE_LAUNCH_ACTIVITY:
        # "Only available for apps with Activities enabled": the emulated app has none. (The
        # docs give no error code for it; this names the field, as Discord's 50035 does.)
        errors.add(
            ("type",),
            "INTERACTION_LAUNCH_ACTIVITY_UNAVAILABLE",
            "LAUNCH_ACTIVITY (12) is only available for apps with Activities enabled; "
            "this application has none.",
        )
    elif kind == RESPONSE_MODAL:
        _check_modal(errors, ("data",), body.get("data"))
    elif kind == RESPONSE_DEFERRED_MESSAGE:
        check_message(errors, ("data",), body.get("data"), allowed_flags=DEFERRED_FLAGS)
    elif kind == RESPONSE_DEFERRED_UPDATE:
        pass  # nothing to show yet: the message is edited later, if at all
    elif kind == RESPONSE_UPDATE_MESSAGE:
        # An edit of the message the component is on: what it leaves out stays.
        check_message(errors, ("data",), body.get("data"), allowed_flags=EDIT_FLAGS)
    elif kind == RESPONSE_AUTOCOMPLETE:
        _check_autocomplete_choices(errors, ("data", "choices"), body.get("data"))
    else:
        shows = check_message(errors, ("data",), body.get("data"), allowed_flags=RESPONSE_FLAGS)
        if not errors and not shows:
            return 400, dict(EMPTY_MESSAGE)
    return (400, errors.body()) if errors else None


def _check_autocomplete_choices(errors: FormErrors, path: Path, data: object) -> None:
    """An autocomplete's answer: ``data.choices``, a list of at most 25."""
    choices = data.get("choices") if isinstance(data, Mapping) else None
    if not isinstance(choices, list):
        errors.add(path, "BASE_TYPE_ARRAY", "Must be an array.")
    elif len(choices) > MAX_AUTOCOMPLETE_CHOICES:
        errors.add(
            path,
            "BASE_TYPE_BAD_LENGTH",
            f"Must be between 0 and {MAX_AUTOCOMPLETE_CHOICES} in length.",
        )


def check_webhook_message(
    body: object, *, current: Mapping[str, Any] | None = None
) -> tuple[int, dict[str, Any]] | None:
    """A follow-up message, or an edit of the original response (the message it edits is
    ``current``). An edit is a PATCH: the fields it leaves out keep their value, so Discord
    judges the message as it would be after it, refusing one left empty (50006), e.g. the
    first edit of a deferred "thinking…" reply that sends nothing to show."""
    errors = FormErrors()
    shows = check_message(
        errors,
        (),
        body,
        allowed_flags=FOLLOW_UP_FLAGS if current is None else EDIT_FLAGS,
        current=current,
    )
    if errors:
        return 400, errors.body()
    if not shows:
        return 400, dict(EMPTY_MESSAGE)
    return None
