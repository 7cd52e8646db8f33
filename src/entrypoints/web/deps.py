"""What the app injects into handlers, by parameter name: the use case each handler runs
(provided from the container), the cookie jar and who is signed in. Validated at the source,
not again."""

from __future__ import annotations

from typing import Annotated, TypeAlias, TypeVar

from litestar.di import Dependency
from litestar.params import SkipValidationMarker

from domain.model import Account
from domain.use_cases import SignedInAs
from entrypoints.web.cookies import CookieJar

T = TypeVar("T")

Use: TypeAlias = Annotated[T, SkipValidationMarker(), Dependency(kind="named")]
Jar = Use[CookieJar]
CurrentAccount = Use[Account | None]
CurrentSignIn = Use[SignedInAs | None]
