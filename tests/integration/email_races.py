"""One address, many simultaneous claims: sign-ups, first Discord sign-ins and email changes.
Run on Postgres (``test_races_postgres``) and SQLite (``test_sqlite_concurrency``): whoever
wins, exactly one account ends up with the address, and every loser gets a clear refusal."""

from __future__ import annotations

import asyncio
from typing import Any

from domain import errors
from tests.harness import Browser, Harness

ADDRESS = "race@example.com"
# What a loser may be told: the address is taken, or it belongs to an account that must link
# Discord from its page, or that account already has another Discord account.
CLEAR_REFUSALS = (
    errors.EmailTaken,
    errors.EmailBelongsToAccount,
    errors.AccountLinkedToOtherDiscord,
)


async def _holders(h: Harness) -> int:
    return len(await h.all_accounts_with_email(ADDRESS))


def _refusals(results: list[Any]) -> list[BaseException]:
    refused = [r for r in results if isinstance(r, BaseException)]
    unclear = [r for r in refused if not isinstance(r, CLEAR_REFUSALS)]
    assert unclear == [], unclear
    return refused


async def simultaneous_sign_ups(h: Harness, n: int) -> None:
    results = await asyncio.gather(
        *(h.sign_up(f"racer{i}", ADDRESS.upper() if i % 2 else ADDRESS) for i in range(n)),
        return_exceptions=True,
    )
    assert len(_refusals(results)) == n - 1
    assert await _holders(h) == 1


async def sign_ups_and_first_discord_sign_ins(h: Harness, n: int) -> None:
    profiles = [h.discord_user(40_000 + i, email=ADDRESS, verified=True) for i in range(n)]
    browsers = [Browser() for _ in profiles]
    approvals = []
    for browser, profile in zip(browsers, profiles, strict=True):
        started = await h.start_login(browser)
        approvals.append(h.discord.approve(started.authorize_url, profile.id))
    sign_ins = [
        h.complete(browser, state=a.state, code=a.code)
        for browser, a in zip(browsers, approvals, strict=True)
    ]
    sign_ups = [h.sign_up(f"signup{i}", ADDRESS) for i in range(n)]
    results = await asyncio.gather(*sign_ins, *sign_ups, return_exceptions=True)
    _refusals(results)
    assert await _holders(h) == 1


async def simultaneous_email_changes(h: Harness, n: int) -> None:
    people = [await h.sign_up(f"changer{i}", f"changer{i}@example.com") for i in range(n)]
    results = await asyncio.gather(
        *(
            h.container.change_email().execute(
                session_token=person.session_token, new_email=ADDRESS, current_password=None
            )
            for person in people
        ),
        return_exceptions=True,
    )
    assert len(_refusals(results)) == n - 1
    assert await _holders(h) == 1
