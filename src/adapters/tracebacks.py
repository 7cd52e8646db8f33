"""An exception told in a log without its message: a library's message may quote a URL, a
header, an address, an email's body or a secret. Only the types of its chain and the frames of
its tracebacks (file, line, function, source line: code, never a value)."""

from __future__ import annotations

import traceback


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it came from (its cause or context), a few at most."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found and len(found) < 5:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def types(exc: BaseException) -> str:
    """``RuntimeError from OSError``: the chain's types, outermost first."""
    return " from ".join(type(e).__qualname__ for e in chain(exc))


def frames(exc: BaseException) -> str:
    """The tracebacks of ``exc``'s chain, innermost exception last, each as its type and
    frames (file, line, function, source line): no message, no value."""
    parts = []
    for each in reversed(chain(exc)):
        listed = traceback.format_list(traceback.extract_tb(each.__traceback__))
        parts.append("".join(listed) + type(each).__qualname__)
    return "\n".join(parts)
