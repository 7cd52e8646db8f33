"""The service's two cookies: the web session and the OAuth browser binding."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import Cookie

from domain.model import ONE_TIME_SECRET_TTL
from entrypoints.container import Container

SESSION_COOKIE = "tfl_session"
BINDING_COOKIE = "tfl_oauth_binding"


class CookieJar:
    def __init__(self, *, secure: bool, session_max_age: int) -> None:
        self._secure = secure
        self._session_max_age = session_max_age

    def _cookie(self, key: str, value: str, max_age: int) -> Cookie:
        # Lax: sent on the top-level redirect back from Discord, not on cross-site POSTs.
        return Cookie(
            key=key,
            value=value,
            max_age=max_age,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self._secure,
        )

    def session(self, token: str) -> Cookie:
        return self._cookie(SESSION_COOKIE, token, self._session_max_age)

    def expired_session(self) -> Cookie:
        return self._cookie(SESSION_COOKIE, "", 0)

    def binding(self, token: str) -> Cookie:
        return self._cookie(BINDING_COOKIE, token, int(ONE_TIME_SECRET_TTL.total_seconds()))

    @staticmethod
    def session_token(request: Request[Any, Any, Any]) -> str | None:
        return request.cookies.get(SESSION_COOKIE)

    @staticmethod
    def binding_token(request: Request[Any, Any, Any]) -> str | None:
        return request.cookies.get(BINDING_COOKIE)

    async def end_session(self, request: Request[Any, Any, Any], container: Container) -> None:
        await container.sign_out().execute(self.session_token(request))
