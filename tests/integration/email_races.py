"""One address, many simultaneous claims and proofs: sign-ups, email changes, confirmation
links, and first Discord sign-ins beside them. Run on Postgres (``test_races_postgres``) and
SQLite (``test_sqlite_concurrency``): claims (sign-ups, email changes) all stand beside each
other, and of the proofs (confirmation links) exactly one wins: one account ends up with the
address, confirmed, and every loser gets a clear refusal. A first Discord sign-in takes
nothing (DESIGN.md's table): it makes an account only while no account has the address, else
links or refuses. And many simultaneous requests for emailed links: the per-account limit
holds."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from domain import errors
from domain.model import AccountId, AuditKind
from domain.use_cases import AuthCompleted, SignedIn
from tests.harness import PASSWORD, Browser, Harness

ADDRESS = "race@example.com"
# What a loser may be told: the address is taken, or it belongs to an account that must link
# Discord from its page, or that account already has another Discord account.
CLEAR_REFUSALS = (
    errors.EmailTaken,
    errors.EmailBelongsToAccount,
    errors.AccountLinkedToOtherDiscord,
    # A Discord sign-in while several accounts claim the address.
    errors.AmbiguousEmail,
    # A confirmation link of an account that the winner took the address from.
    errors.EmailLinkOutdated,
)


async def _holders(h: Harness) -> int:
    return len(await h.all_accounts_with_email(ADDRESS))


def _refusals(results: list[Any]) -> list[BaseException]:
    refused = [r for r in results if isinstance(r, BaseException)]
    unclear = [r for r in refused if not isinstance(r, CLEAR_REFUSALS)]
    assert unclear == [], unclear
    return refused


async def simultaneous_sign_ups(h: Harness, n: int) -> None:
    """Nobody proved the address: each sign-up is a claim, none keeps the others out."""
    results = await asyncio.gather(
        *(h.sign_up(f"racer{i}", ADDRESS.upper() if i % 2 else ADDRESS) for i in range(n)),
        return_exceptions=True,
    )
    assert _refusals(results) == []
    assert await _holders(h) == n


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
    refused = _refusals(results)
    signed_in = [r for r in results[:n] if isinstance(r, AuthCompleted)]
    signed_up = [r for r in results[n:] if isinstance(r, SignedIn)]
    assert len(signed_in) + len(signed_up) + len(refused) == 2 * n
    holders = await h.all_accounts_with_email(ADDRESS)
    # Whichever came first holds the address, never both kinds: a Discord sign-in's new
    # account, confirmed (then every sign-up was refused as taken, and the other Discord
    # accounts as that account's is linked), or sign-ups' claims (then every Discord sign-in
    # was refused: an account has the address, or several do). Discord's verified email took
    # nothing from a claim, and no claim stands beside the Discord account.
    if any(holder.email_verified for holder in holders):
        [holder] = holders
        assert [done.account_id for done in signed_in] == [holder.id]
        assert signed_up == []
    else:
        assert signed_in == []
        assert sorted(str(a.id.value) for a in holders) == sorted(
            str(person.account.id.value) for person in signed_up
        )


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
    assert _refusals(results) == []  # claims, each beside the others
    assert await _holders(h) == n


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


async def _claimants_with_links(h: Harness, n: int) -> dict[AccountId, str]:
    """``n`` accounts that signed up with the address, each with its confirmation link (each
    from a client of its own, an hour apart every ten: within the address's limits)."""
    claimants: list[AccountId] = []
    for i in range(n):
        if i and i % 10 == 0:
            h.clock.advance(timedelta(hours=1, seconds=1))
        done = await h.container.sign_up().execute(
            username=f"claimant{i}", email=ADDRESS, password=PASSWORD, client=f"client:10.0.0.{i}"
        )
        assert done.confirmation_sent
        claimants.append(done.account.id)
    await h.deliver()
    links: dict[AccountId, str] = {}
    tokens = h.container.tokens()
    async with h.uow() as uow:
        for message in h.emails_to(ADDRESS):
            token = h.link_token(message, "/verify-email/")
            stored = await uow.email_tokens.get(tokens.digest(token))
            assert stored is not None
            links[stored.account_id] = token
    assert sorted(links, key=str) == sorted(claimants, key=str)
    return links


async def simultaneous_confirmations(h: Harness, n: int) -> None:
    """``n`` accounts claim the address and follow their confirmation links at once: one
    takes it; every other one's link is refused as sent to an address it no longer has."""
    links = await _claimants_with_links(h, n)
    verify = h.container.verify_email()
    order = list(links)
    results = await asyncio.gather(
        *(verify.execute(links[a], a) for a in order), return_exceptions=True
    )
    refused = _refusals(results)
    assert len(refused) == n - 1
    assert all(isinstance(r, errors.EmailLinkOutdated) for r in refused), refused
    [winner] = [a for a, r in zip(order, results, strict=True) if not isinstance(r, BaseException)]
    [holder] = await h.all_accounts_with_email(ADDRESS)
    assert (holder.id, holder.email_verified) == (winner, True)


async def confirmations_beside_discord_sign_ins_and_claims(h: Harness, n: int) -> None:
    """Every kind of proof and claim of one address at once: confirmation links, sign-ups
    and email changes, and beside them first Discord sign-ins with it verified (which take
    nothing: refused while several accounts claim it, then linked to the one that confirmed
    it, for one of them). One owner, confirmed, and no account made by Discord."""
    links = await _claimants_with_links(h, n)
    profiles = [h.discord_user(41_000 + i, email=ADDRESS, verified=True) for i in range(n)]
    browsers = [Browser() for _ in profiles]
    approvals = []
    for browser, profile in zip(browsers, profiles, strict=True):
        started = await h.start_login(browser)
        approvals.append(h.discord.approve(started.authorize_url, profile.id))
    changers = [await h.sign_up(f"mover{i}", f"mover{i}@example.com") for i in range(n)]
    verify = h.container.verify_email()
    results = await asyncio.gather(
        *(verify.execute(token, account) for account, token in links.items()),
        *(
            h.complete(browser, state=a.state, code=a.code)
            for browser, a in zip(browsers, approvals, strict=True)
        ),
        *(h.sign_up(f"late{i}", ADDRESS) for i in range(n)),
        *(
            h.container.change_email().execute(
                session_token=person.session_token, new_email=ADDRESS, current_password=None
            )
            for person in changers
        ),
        return_exceptions=True,
    )
    _refusals(results)
    [holder] = await h.all_accounts_with_email(ADDRESS)
    assert holder.email_verified
    by_discord = results[len(links) : len(links) + n]
    linked = [done for done in by_discord if isinstance(done, AuthCompleted)]
    assert all(done.account_id == holder.id for done in linked), linked
    assert len(linked) <= 1


async def declines_beside_confirmations_and_changes(h: Harness, n: int) -> None:
    """On every claimant's link at once: its account confirms it, the address's holder says
    "This is not my account", and half of the accounts change their address away. Each link
    is used once (confirmed or declined, never both); one account at most ends with the
    address, confirmed; a declined account lost the address and has one ``email_disowned``; an
    account whose change went through has the new address (a decline of it, if any, went
    first); every loser is refused clearly."""
    links = await _claimants_with_links(h, n)
    order = list(links)
    movers = order[: n // 2]
    sessions = [await h.session_for(a) for a in movers]
    verify, disown, change = (
        h.container.verify_email(),
        h.container.disown_email(),
        h.container.change_email(),
    )
    # Interleaved (a link's decline before its confirmation, then the other way round), so
    # that each kind comes first for some links.
    first, second = order[::2], order[1::2]
    results = await asyncio.gather(
        *(disown.execute(links[a]) for a in first),
        *(
            change.execute(
                session_token=session,
                new_email=f"moved{i}@example.com",
                current_password=PASSWORD,
            )
            for i, session in enumerate(sessions)
        ),
        *(verify.execute(links[a], a) for a in order),
        *(disown.execute(links[a]) for a in second),
        return_exceptions=True,
    )
    ending = iter(results)
    declines = dict(zip(first, ending, strict=False))
    changes = [next(ending) for _ in movers]
    verifies = [next(ending) for _ in order]
    declines |= dict(zip(second, ending, strict=True))
    refused = [r for r in results if isinstance(r, BaseException)]
    unclear = [
        r
        for r in refused
        if not isinstance(r, errors.EmailLinkOutdated | errors.SecretConsumed | errors.Conflict)
    ]
    assert unclear == [], unclear
    verified = {a for a, r in zip(order, verifies, strict=True) if not isinstance(r, Exception)}
    declined = {a for a, r in declines.items() if not isinstance(r, Exception)}
    moved = {
        a: f"moved{i}@example.com"
        for i, (a, r) in enumerate(zip(movers, changes, strict=True))
        if not isinstance(r, Exception)
    }
    assert len(verified) <= 1
    assert not verified & declined
    # Its confirmation came after the decline, and is told so (the decline spent the link).
    refused_after = dict(zip(order, verifies, strict=True))
    assert all(isinstance(refused_after[a], errors.EmailLinkDeclined) for a in declined)
    async with h.uow() as uow:
        for a in order:
            account = await uow.accounts.get(a)
            assert account is not None
            disowned = [
                e for e in await uow.audit.for_account(a) if e.kind is AuditKind.EMAIL_DISOWNED
            ]
            assert len(disowned) == (1 if a in declined else 0), (a, disowned)
            if a in moved:  # a decline too went first: the change saw no address
                assert (account.email, account.email_verified) == (moved[a], False)
            elif a in declined:
                assert (account.email, account.email_verified) == (None, False)
            elif a in verified:
                assert (account.email, account.email_verified) == (ADDRESS, True)
            else:  # taken by the one that confirmed it, or still a claim
                assert not account.email_verified
                assert account.email in (None, ADDRESS)
    holders = await h.all_accounts_with_email(ADDRESS)
    if any(holder.email_verified for holder in holders):
        assert [holder.id for holder in holders] == list(verified)
