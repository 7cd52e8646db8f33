"""The unit suite builds a Litestar app for most of its web tests (``create_app`` takes each
test's container, clock and fakes), and Litestar parses every handler's and dependency's
signature again for each app: resolving the type hints of ~90 functions (their annotations
are strings) was about a fifth of an app's construction. The suite keeps each function's
parse (``ParsedSignature.from_fn``) for the next app instead.

Only the tests' process does: production builds one app a process and parses as Litestar
does. A parse is what ``from_fn`` would answer again: it depends on the function and the
namespace of names it is given, which the key holds (a parse is frozen, and no app changes
it), and on its module's names, which nothing changes after import. Functions made for one
app (closures) are keys of their own, dropped with their app (weak keys)."""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable
from typing import Any

from litestar.utils.signature import ParsedSignature

_parses: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], ParsedSignature]] = (
    weakref.WeakKeyDictionary()
)
_parse: Callable[[Any, dict[str, Any]], ParsedSignature] = ParsedSignature.from_fn


def _from_fn(cls: type[ParsedSignature], fn: Any, signature_namespace: dict[str, Any]) -> Any:
    # A method is bound to each app's controller: the same function, without its "self".
    function = fn.__func__ if isinstance(fn, types.MethodType) else fn
    try:
        key = (isinstance(fn, types.MethodType), *signature_namespace.items())
        parses = _parses.setdefault(function, {})
        return parses[key]
    except TypeError:  # no weak reference to it, or a name's value is unhashable
        return _parse(fn, signature_namespace)
    except KeyError:
        parses[key] = parsed = _parse(fn, signature_namespace)
        return parsed


def keep_parses() -> None:
    """From now on, in this process, a function's signature is parsed once."""
    ParsedSignature.from_fn = classmethod(_from_fn)  # type: ignore[method-assign,assignment]


def fresh_parse(fn: Any, signature_namespace: dict[str, Any]) -> ParsedSignature:
    """What Litestar itself parses, kept or not."""
    return _parse(fn, signature_namespace)
