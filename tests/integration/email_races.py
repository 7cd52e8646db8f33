"""One address, many simultaneous claims: sign-ups, first Discord sign-ins and email changes.
Run on Postgres (``test_races_postgres``) and SQLite (``test_sqlite_concurrency``): whoever
wins, exactly one account ends up with the address, and every loser gets a clear refusal.
And many simultaneous requests for emailed links: the per-account limit holds."""

from __future__ import annotations

import asyncio
from datetime import timedelta
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


async def simultaneous_reset_requests(h: Harness, n: int) -> None:
    """The limit on emailed links (one a minute, five an hour per account) holds however many
    ask at once: nobody floods an inbox through it."""
    await h.sign_up("victim", ADDRESS)
    reset = h.container.request_password_reset()
    await asyncio.gather(*(reset.execute(ADDRESS) for _ in range(n)))
    await h.deliver()
    resets = [m for m in h.emails_to(ADDRESS) if "/password/reset/" in m.text]
    assert len(resets) == 1


async def simultaneous_confirmation_resends(h: Harness, n: int) -> None:
    person = await h.sign_up("resender", ADDRESS)  # its confirmation email is queued
    h.clock.advance(timedelta(minutes=2))  # one more is allowed now: one
    resend = h.container.resend_verification()
    results = await asyncio.gather(
        *(resend.execute(person.account.id) for _ in range(n)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == n - 1
    assert all(isinstance(r, errors.TooManyRequests) for r in refused), refused
    await h.deliver()
    assert len(h.emails_to(ADDRESS)) == 2  # the sign-up's and one resent


async def simultaneous_emails_to_one_unconfirmed_address(h: Harness, n: int) -> None:
    """Accounts that share one unconfirmed address (imported before addresses were unique)
    each ask for a confirmation link at once, beside requests for reset links to the address:
    each account's own limit allows one, the address's (five of each kind an hour, across
    accounts) holds however many instances and transactions ask at once. None waits for
    ever: every use case locks its accounts first and the address last (a reset request
    locks all n accounts)."""
    sharers = [await h.legacy_account(f"sharer{i}", ADDRESS, verified=False) for i in range(n)]
    resend = h.container.resend_verification()
    reset = h.container.request_password_reset()
    results = await asyncio.gather(
        *(resend.execute(sharer.id) for sharer in sharers),
        *(reset.execute(ADDRESS) for _ in range(max(n // 4, 2))),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, BaseException)]
    # The address's limit said no (each account's own allowed its one).
    limited = [r for r in refused if isinstance(r, errors.TooManyRequests)]
    assert limited == refused, refused
    assert all("This address got as many" in r.message for r in limited)
    await h.deliver()
    sent = h.emails_to(ADDRESS)
    assert len([m for m in sent if "/verify-email/" in m.text]) == 5
    assert len([m for m in sent if "/password/reset/" in m.text]) == 5
