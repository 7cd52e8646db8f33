"""What the lock-order tests on Postgres share: a browser signed in with Discord, and the
transactions Postgres rolled back for another one (a deadlock it broke), noted as they are
translated, since ``retry_on_conflict`` tries them again and a test's outcome alone would
not show them."""

from __future__ import annotations

import pytest

from adapters.sql import errors as sql_errors
from adapters.sql import repositories
from domain import errors
from domain.model import DiscordId
from domain.use_cases import BrowserCookies
from tests.harness import Harness


async def signed_in_with_discord(h: Harness, discord_id: int) -> tuple[str, str]:
    """A browser signed in with Discord just now (as the emulated user ``discord_id``, made
    beforehand): its session token and binding value."""
    started = await h.container.start_discord_login().execute(next_path=None, browser_tokens=[])
    approval = h.discord.approve(started.authorize_url, DiscordId(discord_id))
    browser = BrowserCookies(bindings=started.browser_tokens)
    done = await h.container.complete_discord_auth().execute(
        state=approval.state, code=approval.code, error=None, browser=browser
    )
    assert done.session_token is not None
    return done.session_token, started.browser_tokens[0]


def contention_noted(monkeypatch: pytest.MonkeyPatch) -> list[errors.DomainError]:
    """The ``StorageContention`` errors the SQL repositories raise from now on (in the test),
    in a list that fills as they come."""
    contended: list[errors.DomainError] = []
    translate = sql_errors.translate

    def noted(exc: Exception) -> errors.DomainError:
        translated = translate(exc)
        if isinstance(translated, errors.StorageContention):
            contended.append(translated)
        return translated

    monkeypatch.setattr(repositories, "translate", noted)
    return contended
