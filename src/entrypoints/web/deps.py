"""Handler parameter types for what the app injects (validated at the source, not again)."""

from __future__ import annotations

from litestar.params import SkipValidation

from domain.model import Account
from domain.use_cases import SignedInAs
from entrypoints.container import Container
from entrypoints.web.cookies import CookieJar

Services = SkipValidation[Container]
Jar = SkipValidation[CookieJar]
CurrentAccount = SkipValidation[Account | None]
CurrentSignIn = SkipValidation[SignedInAs | None]
