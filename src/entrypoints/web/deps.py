"""Handler parameter types for what the app injects (validated at the source, not again)."""

from __future__ import annotations

from typing import Annotated

from litestar.params import Dependency

from domain.model import Account
from entrypoints.container import Container
from entrypoints.web.cookies import CookieJar

Services = Annotated[Container, Dependency(skip_validation=True)]
Jar = Annotated[CookieJar, Dependency(skip_validation=True)]
CurrentAccount = Annotated[Account | None, Dependency(skip_validation=True)]
