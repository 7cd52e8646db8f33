"""Discord Linked Roles: the verification URL's round trip, and keeping each user's role
connection on Discord current with the tokens kept for it.

Only this feature keeps a Discord token, sealed by the ``SecretBox`` port (the adapter
encrypts; the core never sees a key). A row is pushed again when ``linked_days`` changes, at
once after an unlink (``linked: 0``, then the tokens are deleted) and after failures with a
back-off; ``invalid_grant`` deletes it. Writers of a row compare before they write (its
version, or the sealed tokens they refreshed), so concurrent workers, a new grant and an
unlink never undo each other: the loser reads the row again and goes on from there. Only the
row's claimant pushes it (``claimed_until``): two pushes of one user at once could reach
Discord in either order, and the older state would stay.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

from domain import errors
from domain.model import (
    ROLE_CONNECTIONS_SCOPE,
    Account,
    AuditEvent,
    AuditKind,
    AuthPurpose,
    DiscordId,
    DiscordProfile,
    EmailKind,
    Link,
    LinkedRole,
    PendingLogin,
    RoleConnection,
    RoleConnectionLoss,
    RoleConnectionToken,
    RoleSync,
    SignInMethod,
)
from domain.names import isolated_handle
from domain.policies import (
    ROLE_GIVE_UP_UNLINKED_AFTER,
    next_role_push,
    role_connection,
    role_retry_at,
)
from domain.ports import (
    Clock,
    DiscordRoleConnections,
    DiscordTokens,
    IssuedSecret,
    SecretBox,
    TokenIssuer,
    UnitOfWork,
    UnitOfWorkFactory,
)
from domain.use_cases._claims import Claims, Stopping
from domain.use_cases._shared import (
    SESSION_TTL,
    BrowserCookies,
    apply_link,
    for_the_same_account,
    not_signed_out_since,
    queue_notice,
    retry_on_conflict,
    session_of_pending,
    sign_out_browser,
    signed_in,
    start_session,
)
from domain.use_cases._uncut import uncut
from domain.use_cases._webhooks import NO_WEBHOOKS, WebhookOutbox
from domain.use_cases.discord_auth import (
    AuthCompleted,
    AuthOutcome,
    AuthStarted,
    _StartLinking,
    purpose_of,
)
from domain.use_cases.discord_pauses import DiscordOutage, DiscordPauses, FailuresInARow

# An access token this close to its expiry is refreshed before use (Discord says how long a
# token lives, 7 days; without that, it is refreshed at its next use).
REFRESH_MARGIN = timedelta(minutes=1)
# The longest lifetime taken at its word: a larger ``expires_in`` (not Discord's: a broken
# stand-in, a proxy) would overflow the date; Discord refuses a token that has ended anyway,
# and a refused one is refreshed.
LIFETIME_MAX = timedelta(days=365)
# How long a refresh cut off by a stop may still take, by default: Discord's answer (its
# call's own timeout, 10 s by default), then storing it (the container passes the settings').
REFRESH_FINISH_SECONDS = 20.0
# A worker's claim on a due row: one that dies lets it go after this.
CLAIM_LEASE = timedelta(minutes=5)
# Tokens a configured key fails to open (altered, or copied from another row) are tried again
# this much later. Those sealed with a key not configured here are tried again as after a
# failed push (1 min, 5 min, ... up to 6 h): an instance given a new key before this one pushes
# them meanwhile (a rotation's rollout), and a key removed everywhere costs no more than that.
UNREADABLE_RETRY = timedelta(hours=6)
# Tries in a row that met tokens sealed with a key not configured here, after which a linked
# member is told their connection needs making again: their 1, 5, 30 min and 2 h tries, with
# no instance that has the key pushing it meanwhile (one would have, and counted no failure).
# A rotation's rollout lasts minutes; past this, the key is most likely gone.
KEY_MISSING_LOST_AFTER = 4
# The audit's reason for tokens deleted as given up (``role-connections status`` counts them).
GIVEN_UP = "given_up"
# Times one sync reads the row again after another writer changed it, before backing off.
_ATTEMPTS = 3
# What Discord's global 429 to a refresh grant (the application's credentials), or a push's
# shared one, holds (a ``DiscordPauses`` scope): every Linked Roles call of the process (the
# push and the refresh grant; with Redis, of every instance), not the bot's role calls.
# Cloudflare's block holds for both. (A push's global 429 is its member's token's: ``_user``.)
_SCOPE = "role_connections"
# What the refresh grant's own limit holds, used up (X-RateLimit-Remaining: 0) or met (a 429
# that is not the global one): the refresh grants only. They carry the application's
# credentials, so their limit is every user's (with Redis, every instance's); the pushes carry
# each user's own token, and Discord limits them per user (``_user``), so they go on.
_REFRESHES = "role_connection_refreshes"
T = TypeVar("T")


def _user(discord_id: DiscordId) -> tuple[str, DiscordId]:
    """The scope of one user's pushes: Discord limits a route, and globally, per token
    ("individuals are determined using a request's authentication"; ``X-RateLimit-Scope:
    global`` is "per bot or user"), and each push carries the user's own bearer token, so
    a push's 429, global or not, holds that user's pushes only (unless it says ``shared``).
    (The refresh grant carries the application's credentials: its limit is every user's,
    ``_REFRESHES``, and its global one every Linked Roles call's, ``_SCOPE``.)"""
    return (_SCOPE, discord_id)


# How long a row waits after a 429 of its own limit (the user's pushes, the refreshes) whose
# retry_after was over by the time the row was let go (0, or a moment spent telling the other
# instances): not pushed again at once (the pass would claim it back, a call each time), and
# no stop of the pass either (only the global limit, or a block, holds the others).
_OWN_LIMIT_OVER = timedelta(seconds=1)


class _Paused(Exception):
    """A call to Discord not made, or answered with a pause (``RoleConnectionPusher._call``):
    ``held``, the scope Discord's answer paused (``None``: no call was made)."""

    def __init__(self, held: Hashable | None = None) -> None:
        super().__init__()
        self.held = held


def _context(discord_id: DiscordId) -> str:
    """What the sealed tokens are bound to: moved to another user's row they do not open."""
    return f"discord-role-connection:{discord_id}"


@dataclass(frozen=True, slots=True)
class _Opened:
    access: str = field(repr=False)
    refresh: str = field(repr=False)


class RoleConnectionPusher:
    """Seals a user's tokens into a row, and brings one row's role connection up to date on
    Discord (``sync``). Shared by the verification URL's callback, the worker and the CLI.

    Discord's rate limits and Cloudflare's blocks hold for the process (``pauses``, shared
    with the role for linked members): while one holds, no call is made, and a row met by
    one is let go as it was, due, without counting a failure (nothing it did). So is one
    met by a pause after Discord failed ``OUTAGE_THRESHOLD`` calls of a pass in a row (5xx,
    timeouts: ``DiscordOutage``, this pusher's own), instead of a call for each row of a
    backlog while Discord is down."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        box: SecretBox,
        discord: DiscordRoleConnections,
        pauses: DiscordPauses | None = None,
        *,
        finish_seconds: float = REFRESH_FINISH_SECONDS,
    ) -> None:
        """``pauses``: the process's (a fresh one: this pusher's only). ``finish_seconds``:
        how long a refresh under way when its caller is cut off (a stop) may still take to
        get its answer and store it (see ``_refresh``)."""
        self._uow, self._clock, self._box, self._discord = uow, clock, box, discord
        self._pauses = pauses if pauses is not None else DiscordPauses()
        self.finish_seconds = finish_seconds
        self._down = DiscordOutage()  # the process's Linked Roles calls', never shared
        # Calls in a row that found Discord unavailable, since the pass began (``new_pass``).
        self._failures = FailuresInARow(self._down)

    # -- Discord's rate limits ----------------------------------------------------------------

    def paused_until(self, now: datetime) -> datetime | None:
        """When this process may call Discord for Linked Roles again; ``None``: now."""
        ends = [self._pauses.until((_SCOPE,), now), self._down.until(now)]
        return max((end for end in ends if end is not None), default=None)

    def down(self, now: datetime) -> bool:
        """Whether what holds at ``now`` is the pause after Discord failed too many calls
        in a row (5xx, timeouts), not a 429 nor a block."""
        return self._down.until(now) is not None and self._pauses.until((_SCOPE,), now) is None

    def new_pass(self) -> None:
        """A pass begins: failures of an earlier one are not in a row with its own."""
        self._failures.new_pass()

    def blocked(self, now: datetime) -> bool:
        """Whether what holds at ``now`` is a block of the address (Cloudflare's), not a
        429 that said how long."""
        return self._pauses.block_ends(now) is not None

    async def _call(
        self,
        call: Callable[[], Awaitable[T]],
        scope: Hashable,
        *,
        shared: Hashable = _SCOPE,
        own_global: Hashable = _SCOPE,
    ) -> T:
        """``call`` to Discord, within the process's pauses: ``_Paused`` while one holds (no
        call is made: every call meanwhile would get the same answer, and prolong a block),
        or when Discord's answer starts one (``DiscordRateLimited``, recorded). A call that
        goes through ends a run of blocks; Discord's other refusals pass as they are.

        ``scope``: what the caller's own limit of the route holds (a 429 that is neither
        global nor shared): the refresh grants (``_REFRESHES``), or one user's pushes
        (``_user``). ``shared``: what a resource's limit holds (``X-RateLimit-Scope:
        shared``, every caller's, whatever its token): by default every Linked Roles call (a
        push's: every user's push would meet it; a refresh is made only to push).
        ``own_global``: what Discord's global limit holds, the token's (a bot's or a user's):
        by default every Linked Roles call (the refresh grant's, the application's
        credentials); a push's, that user's pushes (``_user``: their own bearer token). A 429
        that says both global and shared is taken as shared (the safe side), and
        Cloudflare's block (no ``retry_after``) holds every call."""
        await self._pauses.catch_up((_SCOPE,), self._clock.now())  # other instances' 429s
        if self.paused_until(self._clock.now()) is not None:
            raise _Paused
        try:
            answer = await call()
        except errors.DiscordRateLimited as limited:
            self._failures.answered()  # an answer: Discord is up
            if limited.shared_limit:
                held = _SCOPE if limited.global_limit else shared
            else:
                held = own_global if limited.global_limit else scope
            self._pauses.limited(held, limited.retry_after, self._clock.now())
            await self._pauses.share(self._clock.now())  # the other instances wait too
            raise _Paused(held) from None
        except errors.DiscordUnavailable:
            # Down (5xx, a timeout, no connection): the ``OUTAGE_THRESHOLD``-th in a row
            # pauses every call of the process (the rest of the pass is held back).
            self._failures.unavailable(self._clock.now())
            raise
        except errors.DomainError:
            self._failures.answered()  # a refusal (a token ended, a grant revoked): up
            raise
        self._failures.answered()
        self._pauses.went_through()
        # An answer that used up a limit (``_used_up``): the other instances wait too, not
        # only this process (nothing to tell otherwise: no call to Redis).
        await self._pauses.share(self._clock.now())
        return answer

    async def _hold(self, row: RoleConnectionToken, scope: Hashable, paused: _Paused) -> RoleSync:
        """Rate limited, or the address blocked, at a call in ``scope``: the row is let go as
        it is, with no failure counted (nothing it did). When only ``scope`` is paused (the
        refresh grants' limit, the user's), it is due when that pause ends (``WAITING``: the
        pass goes on with the others), ``_OWN_LIMIT_OVER`` from now when that 429's pause
        is over already; otherwise it is due now, for the first pass after the pause
        (``PAUSED``: the pass stops there)."""
        now = self._clock.now()
        if self.paused_until(now) is None:
            resets = self._pauses.paused(now).get(scope)
            if resets is None and paused.held == scope:
                resets = now + _OWN_LIMIT_OVER
                self._pauses.pause(scope, resets)  # the scope's next rows wait with it
            if resets is not None:
                await self._schedule(row, resets, failures=row.failures)
                return RoleSync.WAITING
        await _release(self._uow, row)
        return RoleSync.PAUSED

    # -- sealing ------------------------------------------------------------------------------

    def _seal(self, discord_id: DiscordId, access: str, refresh: str) -> str:
        plaintext = json.dumps({"access_token": access, "refresh_token": refresh})
        return self._box.seal(plaintext, context=_context(discord_id))

    def _open(self, row: RoleConnectionToken) -> _Opened:
        plaintext = self._box.open(row.sealed, context=_context(row.discord_id))
        try:
            found = json.loads(plaintext)
            return _Opened(str(found["access_token"]), str(found["refresh_token"]))
        except (ValueError, KeyError, TypeError):
            raise errors.SecretUnreadable() from None

    @staticmethod
    def _expiry(tokens: DiscordTokens, now: datetime) -> datetime:
        lifetime = min(max(0, tokens.expires_in or 0), LIFETIME_MAX // timedelta(seconds=1))
        return now + timedelta(seconds=lifetime)

    def new_row(
        self,
        discord_id: DiscordId,
        tokens: DiscordTokens,
        now: datetime,
        existing: RoleConnectionToken | None,
    ) -> RoleConnectionToken:
        """A fresh grant's row (replacing ``existing``), due now: if the push that follows
        fails, or the process stops first, a worker pushes it."""
        if not tokens.refresh_token:
            raise errors.DiscordUnavailable()  # Discord always gives one with the code grant
        return RoleConnectionToken(
            discord_id=discord_id,
            sealed=self._seal(discord_id, tokens.access_token, tokens.refresh_token),
            expires_at=self._expiry(tokens, now),
            next_push_at=now,
            created_at=existing.created_at if existing else now,
            updated_at=now,
            version=existing.version if existing else 1,
        )

    # -- one row -------------------------------------------------------------------------------

    async def sync(
        self,
        row: RoleConnectionToken,
        *,
        forget: bool = False,
        drop_unreadable: bool = False,
        claims: Claims[RoleConnectionToken] | None = None,
    ) -> RoleSync:
        """Push what Discord should show now: refresh the access token first when it has
        expired (or Discord just refused it), delete the tokens on ``invalid_grant`` or once
        Discord knows the user is no longer linked, and schedule the next push.

        ``forget`` (Linked Roles turned off): tell Discord "not linked" whatever the link,
        then delete the tokens. ``drop_unreadable``: delete tokens no configured key opens
        (otherwise they are kept, in case the key comes back; those sealed with a key not
        configured here are tried again soon, as another instance may have it).
        ``claims``: the pass's, told of each renewed claim (cut off, the pass lets go of the
        row as it holds it then)."""
        force_refresh = False
        pushed_with: _Opened | None = None
        for _ in range(_ATTEMPTS):
            now = self._clock.now()
            # Before each call to Discord: a pusher whose lease ran out must not push beside
            # the one that took over. The row comes back as it is now (an unlink, new tokens).
            held = await _take(self._uow, row, now, claims)
            if held is None:  # another pusher has it now, or deleted it
                return await self._gone(row, pushed_with, forget=forget)
            row = held
            try:
                tokens = self._open(row)
            except errors.SecretUnreadable:
                return await self._unreadable(row, now, drop=drop_unreadable)
            if force_refresh or row.expires_at <= now + REFRESH_MARGIN:
                refreshed = await self._refresh(row, tokens, now, forget=forget)
                if isinstance(refreshed, RoleSync):
                    return refreshed
                if refreshed is None:  # a new grant replaced the tokens meanwhile: use it
                    force_refresh = False
                    continue
                row, tokens = refreshed
                # The refresh was a call to Discord too: renewed before the push (one that
                # stalled in it past its lease must not push beside the one that took over).
                now = self._clock.now()
                held = await _take(self._uow, row, now, claims)
                if held is None:
                    return await self._gone(row, pushed_with, forget=forget)
                row = held
            link, account = (None, None) if forget else await self._current(row.discord_id)
            pushed = await self._push(row, tokens, role_connection(link, account, now), now)
            if isinstance(pushed, RoleSync):
                return pushed
            if not pushed:  # Discord refused the access token
                if force_refresh:  # even right after a refresh
                    return await self._failed(row, now)
                force_refresh = True  # Discord ended the access token early: refresh it
                continue
            pushed_with = tokens
            finished = await self._finish(row, link, now, why="forgotten" if forget else None)
            if finished is not None:
                return finished
            force_refresh = False  # the row changed while we pushed: push its new state
        return await self._failed(row, self._clock.now())

    def _used_up(self, scope: object) -> Callable[[float], None]:
        """Told that Discord's answer left no call in ``scope``'s limit (``UsedUp``): none
        is made there before it resets (it would be answered 429, and each 429 counts
        towards Discord's limit of invalid requests per address), as for the bot's role
        calls."""

        def used_up(seconds: float) -> None:
            self._pauses.limited(scope, seconds, self._clock.now())

        return used_up

    async def _push(
        self, row: RoleConnectionToken, tokens: _Opened, connection: RoleConnection, now: datetime
    ) -> RoleSync | bool:
        """Push ``connection`` (``row`` held): ``True`` when Discord took it, ``False`` when
        it refused the access token, else how the sync ends (paused, waiting, failed)."""
        user = _user(row.discord_id)
        # Another instance's push may have used up this user's limit (the verification URL's,
        # on the instance that answered the callback), or met its 429.
        await self._pauses.catch_up((user,), now)
        resets = self._pauses.paused(now).get(user)
        if resets is not None:
            # This user's limit is used up (a push a moment ago, by the callback or this
            # sync): pushed when it resets, what is current then; the others go on.
            await self._schedule(row, resets, failures=row.failures)
            return RoleSync.WAITING
        used_up = self._used_up(user)
        try:
            await self._call(
                lambda: self._discord.push(tokens.access, connection, used_up=used_up),
                user,
                own_global=user,  # the member's own token's global limit
            )
        except _Paused as paused:
            return await self._hold(row, user, paused)
        except errors.DiscordDenied:
            return False
        except errors.DiscordUnavailable:
            return await self._failed(row, now)
        return True

    async def _gone(
        self, row: RoleConnectionToken, pushed_with: _Opened | None, *, forget: bool
    ) -> RoleSync:
        """Another pusher holds the row now, or it was deleted."""
        if pushed_with is not None:
            await self._after_a_late_push(
                row.discord_id, pushed_with, forget=forget, expires_at=row.expires_at
            )
        return RoleSync.GONE

    async def _after_a_late_push(
        self, discord_id: DiscordId, tokens: _Opened, *, forget: bool, expires_at: datetime
    ) -> None:
        """This pusher's lease ran out while its push was on the way (a stall), and another
        took the row over: the late push may have reached Discord after the other's (an
        unlink's "not linked", then "linked" for good). It has returned, so whatever is
        pushed from now on lands after it; and only a claimant pushes beside others. A row
        that is still there is made due: its claimant pushes what is current. A row that is
        gone leaves nobody to: with the member not linked (or Linked Roles being forgotten),
        "not linked" goes out once more with the tokens in hand (a linked member's "linked"
        is what the late push said), then a row a new grant made meanwhile is made due, so
        its claimant's push lands last. When Discord does not take that "not linked" (down,
        a 429, a pause holding), or the member's own pushes are waiting (``_push``: not
        sent), the tokens in hand, the only ones left to tell it, are kept
        (``_keep``): a later pass pushes it and deletes them. When it refused the access
        token, a refresh tells an ended one from a revoked grant (``_keep_refreshed``).
        ``expires_at``: when their access token ends, as known."""
        if await self._mark_due(discord_id):
            return
        if not forget and (await self._current(discord_id))[0] is not None:
            return
        user = _user(discord_id)
        now = self._clock.now()
        # The member's own pushes may be waiting (their limit used up, or a 429 to them, by
        # this instance or another): that push would be one more 429, each counted towards
        # Discord's limit of invalid requests per address. Kept for a later pass instead.
        await self._pauses.catch_up((user,), now)
        if self._pauses.paused(now).get(user) is not None:
            await self._keep(discord_id, tokens, expires_at)
            return
        unlinked = role_connection(None, None, now)
        used_up = self._used_up(user)
        try:
            await self._call(
                lambda: self._discord.push(tokens.access, unlinked, used_up=used_up),
                user,
                own_global=user,
            )
        except errors.DiscordDenied:
            await uncut(
                self._keep_refreshed(discord_id, tokens, expires_at), within=self.finish_seconds
            )
            return
        except (_Paused, errors.DiscordUnavailable):
            await self._keep(discord_id, tokens, expires_at)
            return
        await self._mark_due(discord_id)

    async def _keep_refreshed(
        self, discord_id: DiscordId, tokens: _Opened, expires_at: datetime
    ) -> None:
        """Discord refused a late push's access token as it was to say "not linked": ended
        (its time, or early), or its grant revoked (the member removed the app). Refreshed:
        ``invalid_grant`` keeps nothing (Discord dropped the connection with the grant;
        keeping the revoked tokens until a pass met ``invalid_grant`` stored them again, an
        attacker's second look); new tokens are kept in their place (the refresh spent the
        old refresh token); no answer (down, a 429, the refreshes' limit used up) keeps
        these."""
        now = self._clock.now()
        await self._pauses.catch_up((_REFRESHES,), now)
        if self._pauses.paused(now).get(_REFRESHES) is None:
            try:
                fresh, renewed = await self._refreshed(tokens)
            except errors.DiscordGrantRevoked:
                return
            except (_Paused, errors.DiscordUnavailable, errors.DiscordDenied):
                pass
            else:
                await self._keep(discord_id, renewed, self._expiry(fresh, now))
                return
        await self._keep(discord_id, tokens, expires_at)

    async def _keep(self, discord_id: DiscordId, tokens: _Opened, expires_at: datetime) -> None:
        """Keep ``tokens`` (a late push's) as the row of ``discord_id``, due, so that a pass
        pushes what is current with them; a row there already (a new grant's) is made due."""
        now = self._clock.now()
        row = RoleConnectionToken(
            discord_id=discord_id,
            sealed=self._seal(discord_id, tokens.access, tokens.refresh),
            expires_at=expires_at,
            next_push_at=now,
            created_at=now,
            updated_at=now,
        )
        with contextlib.suppress(errors.Conflict):  # a new grant's row came first
            async with self._uow() as uow:
                if await uow.role_connection_tokens.get(discord_id) is None:
                    await uow.role_connection_tokens.add(row)
                    await uow.audit.record(
                        AuditEvent(
                            AuditKind.ROLE_TOKENS_STORED,
                            now,
                            None,
                            discord_id,
                            {"reason": "late_push"},
                        )
                    )
                    await uow.commit()
                    return
        await self._mark_due(discord_id)

    async def _mark_due(self, discord_id: DiscordId) -> bool:
        async with self._uow() as uow:
            marked = await uow.role_connection_tokens.mark_due(discord_id, self._clock.now())
            await uow.commit()
        return marked

    async def _refresh(
        self, row: RoleConnectionToken, tokens: _Opened, now: datetime, *, forget: bool
    ) -> tuple[RoleConnectionToken, _Opened] | RoleSync | None:
        """New tokens, stored; a final outcome; or ``None`` when other tokens replaced them
        meanwhile (a new grant, or those of a pusher that took over once this one's lease
        ran out).

        The refresh and the storing of its answer are one step that a stop does not cut in
        the middle (``uncut``, for ``finish_seconds`` at most): Discord spends the refresh
        token as it answers, so a pair it issued and nobody stored would leave the row with
        the spent token, and the next try would get ``invalid_grant`` and delete it (for a
        member unlinked meanwhile, Discord would go on showing "linked").

        While the refresh grant's limit is used up (``_REFRESHES``, by any instance), no
        refresh is asked for: the row is left, due when the limit resets, with no failure
        counted (``WAITING``, as a user's used-up push), and the pass goes on with the others:
        those whose access token still works are pushed."""
        await self._pauses.catch_up((_REFRESHES,), now)  # another instance's refreshes
        resets = self._pauses.paused(now).get(_REFRESHES)
        if resets is not None:
            await self._schedule(row, resets, failures=row.failures)
            return RoleSync.WAITING
        try:
            written, opened, gone = await uncut(
                self._refresh_and_store(row, tokens, now), within=self.finish_seconds
            )
        except _Paused as paused:  # the refresh token was not spent
            return await self._hold(row, _REFRESHES, paused)
        except errors.DiscordGrantRevoked:
            async with self._uow() as uow:
                gone = await uow.role_connection_tokens.remove_sealed(row.discord_id, row.sealed)
                if gone:
                    await _audit_deleted(uow, row.discord_id, now, "invalid_grant")
                    if not forget:  # Linked Roles turned off: nothing to connect again
                        await _lost(uow, row.discord_id, now, RoleConnectionLoss.REVOKED)
                await uow.commit()
            return RoleSync.REVOKED if gone else None
        except (errors.DiscordUnavailable, errors.DiscordDenied):
            return await self._failed(row, now)
        if gone:
            # Deleted while the answer was on its way, past this pusher's lease: most likely
            # by the pusher that took over, whose refresh with the token Discord had just
            # spent got invalid_grant (it pushed nothing). These tokens are the only live
            # ones: an unlinked member hears "not linked" with them, as after a late push.
            # (The new access token's expiry is not at hand: taken as ended, refreshed first.)
            await self._after_a_late_push(
                row.discord_id, opened, forget=forget, expires_at=self._clock.now()
            )
            return RoleSync.GONE
        return (written, opened) if written is not None else None

    async def _refreshed(self, tokens: _Opened) -> tuple[DiscordTokens, _Opened]:
        """The refresh grant for ``tokens``: Discord's answer and the tokens it gives (its
        refresh token, or the one in hand when it gives none). Under the application's
        limit: every refresh waits, not the pushes (their own tokens)."""
        used_up = self._used_up(_REFRESHES)
        fresh = await self._call(
            lambda: self._discord.refresh(tokens.refresh, used_up=used_up),
            _REFRESHES,
            shared=_REFRESHES,  # the token endpoint's resource: the refreshes
        )
        return fresh, _Opened(fresh.access_token, fresh.refresh_token or tokens.refresh)

    async def _refresh_and_store(
        self, row: RoleConnectionToken, tokens: _Opened, now: datetime
    ) -> tuple[RoleConnectionToken | None, _Opened, bool]:
        """The refresh grant, then its answer stored in a transaction of its own before
        anything else: the row as written (``None``: other tokens replaced them), the new
        tokens, and whether the row was deleted meanwhile."""
        fresh, opened = await self._refreshed(tokens)
        sealed = self._seal(row.discord_id, opened.access, opened.refresh)
        gone = False
        async with self._uow() as uow:
            repository = uow.role_connection_tokens
            written = await repository.swap_sealed(row, sealed, self._expiry(fresh, now), now)
            if written is None:
                # Resealed meanwhile (a key rotation, once a stalled pusher's lease ran out):
                # the same tokens, the refresh token just spent. Ours replace them.
                current = await repository.get(row.discord_id)
                gone = current is None
                if current is not None and self._holds(current, tokens.refresh):
                    written = await repository.swap_sealed(
                        current, sealed, self._expiry(fresh, now), now
                    )
            await uow.commit()
        return written, opened, gone

    def _holds(self, row: RoleConnectionToken, refresh_token: str) -> bool:
        try:
            return self._open(row).refresh == refresh_token
        except errors.SecretUnreadable:
            return False

    async def _current(self, discord_id: DiscordId) -> tuple[Link | None, Account | None]:
        async with self._uow(read_only=True) as uow:
            link = await uow.links.get_by_discord_id(discord_id)
            account = await uow.accounts.get(link.account_id) if link else None
        return link, account

    async def _finish(
        self, row: RoleConnectionToken, link: Link | None, now: datetime, *, why: str | None
    ) -> RoleSync | None:
        """After a push of the state read with ``row``: schedule the next one (linked), or
        delete the tokens (not linked: Discord now knows), letting go of the claim. ``None``:
        the row changed (the claim is still ours)."""
        if link is None:
            removed = await self._remove(row, now, why or "unlinked")
            return RoleSync.CLEARED if removed else None
        async with self._uow() as uow:
            scheduled = replace(
                row,
                next_push_at=next_role_push(link, now),
                failures=0,
                updated_at=now,
                claimed_until=None,
            )
            done = await uow.role_connection_tokens.replace(scheduled) is not None
            if done and link.role_connection_lost_at is not None:
                # Said lost while its tokens were kept unreadable, and the key came back.
                await uow.links.set_role_connection_lost(row.discord_id, None, None)
            await uow.commit()
        return RoleSync.PUSHED if done else None

    async def _failed(self, row: RoleConnectionToken, now: datetime) -> RoleSync:
        failures = row.failures + 1
        if await self._given_up(row, failures, now):
            return RoleSync.GIVEN_UP
        await self._schedule(row, role_retry_at(failures, now), failures=failures)
        return RoleSync.FAILED

    async def _given_up(self, row: RoleConnectionToken, failures: int, now: datetime) -> bool:
        """Someone no longer linked, whose "not linked" failed to go out ``failures`` times
        in a row: their tokens are deleted (audited ``given_up``), not kept for good."""
        if failures < ROLE_GIVE_UP_UNLINKED_AFTER:
            return False
        link, _ = await self._current(row.discord_id)
        return link is None and await self._remove(row, now, GIVEN_UP)

    async def _unreadable(self, row: RoleConnectionToken, now: datetime, *, drop: bool) -> RoleSync:
        """Tokens this instance cannot open: deleted (``drop``), or tried again later."""
        if drop:
            return await self._forget_unreadable(row, now)
        if not self._box.has_key(row.sealed):
            # Most likely sealed by an instance already given a newer key (a rotation's
            # rollout: an unlink's row, a refresh): left to one that has it, tried again soon
            # rather than in 6 h. Counted as a failure, so that a key removed everywhere backs
            # off to 6 h as well, and an unlinked member's tokens are given up after a week
            # as when Discord fails (kept for good, they would open again with the key).
            failures = row.failures + 1
            if await self._given_up(row, failures, now):
                return RoleSync.GIVEN_UP
            if failures >= KEY_MISSING_LOST_AFTER:
                await self._said_lost(row.discord_id, now)
            await self._schedule(row, role_retry_at(failures, now), failures=failures)
            return RoleSync.KEY_MISSING
        # A configured key that fails to open them (altered, copied from another row) never
        # will: the connection needs making again.
        await self._said_lost(row.discord_id, now)
        await self._schedule(row, now + UNREADABLE_RETRY, failures=row.failures)
        return RoleSync.UNREADABLE

    async def _said_lost(self, discord_id: DiscordId, now: datetime) -> None:
        """Tokens kept (the key may come back) that nothing here can open: their connection
        is not kept current any more (days linked, an unlink's "not linked"). A linked
        member is told as for a loss (``_lost``), once; it was silent until an operator ran
        ``tokens rotate --drop-unreadable``. Connecting again replaces the tokens and ends it,
        and so does a push that goes through (the key came back)."""
        async with self._uow() as uow:
            await _lost(uow, discord_id, now, RoleConnectionLoss.UNREADABLE)
            await uow.commit()

    async def _forget_unreadable(self, row: RoleConnectionToken, now: datetime) -> RoleSync:
        """Tokens no key opens cannot tell Discord anything, now or later: deleted (when the
        row is still as read; otherwise it is left for another run)."""
        if await self._remove(row, now, "unreadable"):
            return RoleSync.UNREADABLE
        await _release(self._uow, row)
        return RoleSync.FAILED

    async def _remove(self, row: RoleConnectionToken, now: datetime, why: str) -> bool:
        """Delete the tokens as read with ``row`` (audited); ``False``: they changed."""
        async with self._uow() as uow:
            done = await uow.role_connection_tokens.remove(row)
            if done:
                await _audit_deleted(uow, row.discord_id, now, why)
            await uow.commit()
        return done

    async def _schedule(self, row: RoleConnectionToken, at: datetime, *, failures: int) -> None:
        """The next try, and the claim let go."""
        async with self._uow() as uow:
            scheduled = await uow.role_connection_tokens.replace(
                replace(
                    row,
                    next_push_at=at,
                    failures=failures,
                    updated_at=self._clock.now(),
                    claimed_until=None,
                )
            )
            await uow.commit()
        if scheduled is None:  # lost to another writer: its schedule stands (an unlink's: now)
            await _release(self._uow, row)


async def _take(
    uow_factory: UnitOfWorkFactory,
    row: RoleConnectionToken,
    now: datetime,
    claims: Claims[RoleConnectionToken] | None = None,
) -> RoleConnectionToken | None:
    """Claim (or renew the claim on) ``row`` for ``CLAIM_LEASE``; see the port's ``take``.
    ``claims``: the pass's, told of the claim as renewed."""
    async with uow_factory() as uow:
        held = await uow.role_connection_tokens.take(row, now + CLAIM_LEASE, now)
        await uow.commit()
        if held is not None and claims is not None:
            claims.holding(held)
    return held


async def _let_go(uow: UnitOfWork, row: RoleConnectionToken, now: datetime) -> bool:
    return await uow.role_connection_tokens.release(row)


async def _release(uow_factory: UnitOfWorkFactory, row: RoleConnectionToken) -> None:
    async with uow_factory() as uow:
        await uow.role_connection_tokens.release(row)
        await uow.commit()


async def every_row(
    uow_factory: UnitOfWorkFactory, page_size: int
) -> AsyncIterator[RoleConnectionToken]:
    """Every kept row, in Discord id order, a page per short read."""
    after: DiscordId | None = None
    while True:
        async with uow_factory(read_only=True) as uow:
            rows = await uow.role_connection_tokens.page(after, page_size)
        for row in rows:
            yield row
        if len(rows) < page_size:
            return
        after = rows[-1].discord_id


async def _audit_deleted(uow: UnitOfWork, discord_id: DiscordId, now: datetime, why: str) -> None:
    await uow.audit.record(
        AuditEvent(AuditKind.ROLE_TOKENS_DELETED, now, None, discord_id, {"reason": why})
    )


async def _lost(
    uow: UnitOfWork, discord_id: DiscordId, now: datetime, why: RoleConnectionLoss
) -> None:
    """The tokens of ``discord_id`` were deleted (in ``uow``) with the connection still
    wanted: a linked member's Discord roles that need it go once Discord notices, and nothing
    here can push it again. Said on their account page until they connect again, and emailed
    to a confirmed address (a notice: the words only, never a token). Nothing for a member
    no longer linked: they asked for it to end."""
    link = await uow.links.get_by_discord_id(discord_id)
    if link is None:
        return
    if link.role_connection_lost_at is not None:  # told already: emailed once
        # (The tokens said unreadable, then dropped; or the key came back and Discord then
        # answered invalid_grant: the page says the latest why.)
        if link.role_connection_lost_why is not why:
            await uow.links.set_role_connection_lost(discord_id, now, why)
        return
    await uow.links.set_role_connection_lost(discord_id, now, why)
    account = await uow.accounts.get(link.account_id)
    if account is not None:
        await queue_notice(
            uow,
            account,
            EmailKind.ROLE_CONNECTION_LOST,
            now,
            discord_username=link.discord_username,
            discord_id=str(link.discord_id),
            why=why.value,
        )


# -- the verification URL ----------------------------------------------------------------------


class StartLinkedRole(_StartLinking):
    """``/discord/linked-role``, where Discord sends someone who wants a role that needs
    TaskFlow. A round trip with ``identify role_connections.write``:

    - nobody signed in: it will sign in the TaskFlow account linked to the Discord account
      that comes back (and refuse one that is not linked: sign in first, then come back);
    - signed in to a linked account: Discord must come back as the linked account;
    - signed in to an account without a link: it links, so it needs the same proof as "Link
      Discord" on the account page (the password, or a recent proof).
    """

    async def execute(
        self,
        *,
        session_token: str | None,
        browser_tokens: Sequence[str],
        current_password: str | None = None,
    ) -> AuthStarted:
        async with self._uow(read_only=True) as uow:
            try:
                _, account = await signed_in(uow, self._tokens, session_token, self._clock.now())
            except errors.NotSignedIn:
                account = None
            link = await uow.links.get_by_account(account.id) if account else None
        if account is None or link is not None:
            purpose = AuthPurpose.ROLES
        else:
            account = await self._prove(session_token, current_password)
            purpose = AuthPurpose.ROLES_LINK
        return await self._start(
            purpose,
            destination="/account",
            browser_tokens=browser_tokens,
            account_id=account.id if account else None,
            # Always Discord's consent screen, which names the Discord account signed in in
            # this browser (with "Not you?"): without it, a returning Discord account that
            # granted these scopes before is sent straight back, and on a shared computer
            # the one left signed in in the browser would be connected (signed out of
            # TaskFlow, its TaskFlow account signed in), not the person's who clicked in
            # Discord. It happens once per connection, not at every sign-in.
            ask_again=True,
        )


class RoleConnectionFlow:
    """The callback's part for the verification URL (``CompleteDiscordAuth`` hands over):
    sign in or link as the flow allows, keep the tokens (sealed), then push the connection.
    Exists only with ``TASKFLOW_LINK_DISCORD_ROLE_CONNECTIONS=true``."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: TokenIssuer,
        clock: Clock,
        pusher: RoleConnectionPusher,
        session_ttl: timedelta = SESSION_TTL,
        *,
        linked_roles: Sequence[LinkedRole] = (),
        webhooks: WebhookOutbox = NO_WEBHOOKS,
    ) -> None:
        self._uow, self._tokens, self._clock = uow, tokens, clock
        self._pusher, self._session_ttl = pusher, session_ttl
        self._roles, self._webhooks = tuple(linked_roles), webhooks

    async def complete(
        self,
        pending: PendingLogin,
        profile: DiscordProfile,
        granted: DiscordTokens,
        browser: BrowserCookies,
        made: IssuedSecret,
        *,
        binding: str | None = None,
    ) -> AuthCompleted:
        """``binding``: the round trip's binding value (see ``sign_out_browser``'s
        ``completing``). ``made``: the token of the session it starts when it signs in,
        derived from the round trip's binding value as a plain sign-in's (``binding_of``):
        its callback loaded twice is handed that session (``FinishDiscordConfirmation``),
        and signing out in that browser ends it (``sign_in_successors``). Signing in, it
        ends the session this ``browser`` had, the email-linking offer waiting in it and
        what its other Discord sign-ins (its binding cookie's values) made without their
        answer reaching it, in the same transaction (see ``sign_out_browser``)."""
        if ROLE_CONNECTIONS_SCOPE not in granted.scopes:
            raise errors.DiscordDenied(
                "Discord did not let TaskFlow update your connection (role_connections.write), "
                "so nothing was changed. Allow it when you start again."
            )
        done, row = await retry_on_conflict(
            lambda: self._connect(pending, profile, granted, browser, made, binding=binding)
        )
        if row is None:  # a worker is pushing this user's connection: it pushes the new grant
            return done
        return replace(done, role_sync=await self._pusher.sync(row))

    async def _connect(
        self,
        pending: PendingLogin,
        profile: DiscordProfile,
        granted: DiscordTokens,
        browser: BrowserCookies,
        made: IssuedSecret,
        *,
        binding: str | None = None,
    ) -> tuple[AuthCompleted, RoleConnectionToken | None]:
        now = self._clock.now()
        new_session: str | None = None
        async with self._uow() as uow:
            if pending.account_id is None:
                # As a Discord sign-in: its round trip held first, and no session if its
                # browser signed out since it started (see ``stop_sign_ins_under_way``).
                held = await not_signed_out_since(uow, self._tokens, pending, browser)
                link = await uow.links.get_by_discord_id(profile.id)
                if link is None:
                    raise errors.DiscordNotLinkedYet()
                # As a Discord sign-in: lock the account, then look at the link again (an
                # unlink that committed meanwhile must not be followed by a session).
                await uow.accounts.lock(link.account_id)
                again = await uow.links.get_by_discord_id(profile.id)
                if again is None or again.account_id != link.account_id:
                    raise errors.Conflict()
                account_id, outcome = link.account_id, AuthOutcome.SIGNED_IN
                await for_the_same_account(uow, self._tokens, held, browser, account_id)
                new_session = await start_session(
                    uow,
                    self._tokens,
                    account_id,
                    now,
                    self._session_ttl,
                    method=SignInMethod.DISCORD,
                    discord_id=profile.id,
                    secret=made,
                )
                # Its callback loaded again once this session has ended is told so at once.
                await uow.pending_logins.mark_signed_in(pending.state_digest, account_id)
                await sign_out_browser(
                    uow, self._tokens, browser, now, keeping=new_session, completing=binding
                )
            else:
                await session_of_pending(uow, self._tokens, now, pending, browser.session_token)
                account_id = pending.account_id
                if pending.purpose is AuthPurpose.ROLES_LINK:
                    result = await apply_link(
                        uow,
                        discord=profile.user,
                        account_id=account_id,
                        now=now,
                        via="linked_role",
                        roles=self._roles,
                        webhooks=self._webhooks,
                    )
                    outcome = AuthOutcome.LINKED if result.created else AuthOutcome.ALREADY_LINKED
                else:  # nothing may be linked by this flow: it needed no proof
                    link = await uow.links.get_by_account(account_id)
                    if link is None:
                        raise errors.NotLinked(
                            "Discord was unlinked from your account meanwhile. Start again."
                        )
                    if link.discord_id != profile.id:
                        raise errors.WrongDiscordAccount(
                            "You signed in to Discord as "
                            f"{isolated_handle(profile.username)} (id {profile.id}), but this "
                            "TaskFlow account is linked to "
                            f"{isolated_handle(link.discord_username)} "
                            f"(id {link.discord_id}). Sign in to Discord "
                            "as the linked account, then try again."
                        )
                    outcome = AuthOutcome.ALREADY_LINKED
            row = await self._store(uow, profile.id, granted, now)
            # Connected again: a loss the account page reported is over.
            await uow.links.set_role_connection_lost(profile.id, None, None)
            await uow.audit.record(
                AuditEvent(AuditKind.ROLE_TOKENS_STORED, now, account_id, profile.id)
            )
            await uow.commit()
        done = AuthCompleted(
            purpose_of(pending), outcome, account_id, pending.destination, new_session
        )
        return done, row

    async def _store(
        self, uow: UnitOfWork, discord_id: DiscordId, granted: DiscordTokens, now: datetime
    ) -> RoleConnectionToken | None:
        """The new grant's row, claimed for this callback's push; ``None`` when another
        pusher holds the row: its write after the push finds the new version, and it pushes
        again with the new tokens (two pushes at once could reach Discord in either order)."""
        repository = uow.role_connection_tokens
        existing = await repository.get(discord_id)
        held = existing.claimed_until if existing is not None else None
        if held is not None and held <= now:
            held = None  # a lease run out: its pusher stopped
        row = self._pusher.new_row(discord_id, granted, now, existing)
        row = replace(row, claimed_until=held or now + CLAIM_LEASE)
        if existing is None:
            await repository.add(row)  # a concurrent first grant: Conflict, and again
            return replace(row, version=1)
        written = await repository.replace(row)
        if written is None:
            raise errors.Conflict()
        return None if held is not None else written


# -- keeping it current: the worker and the CLI ------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoleSyncReport:
    pushed: int = 0
    cleared: int = 0
    revoked: int = 0
    failed: int = 0
    unreadable: int = 0
    key_missing: int = 0  # sealed with a key not configured here: left to an instance with it
    gone: int = 0
    given_up: int = 0
    # Left due, untried (or met by the rate limit), when Discord rate limited the pass or
    # the address was blocked: the pass stopped there.
    paused: int = 0
    # Not pushed now: Discord said the user's own limit of the push, or the application's
    # limit of the refresh grant (for a row that needs its token refreshed first), has no
    # call left; due when it resets (the pass went on with the others).
    waiting: int = 0
    held: int = 0  # forgetting: left to another pusher that holds them (run again)
    # The pause holding when the pass ended: when the next call may be made, and whether it
    # is a block of the address (Cloudflare's), not a 429 that said how long, or the pause
    # after Discord failed ``OUTAGE_THRESHOLD`` calls in a row (``down``: 5xx, timeouts).
    paused_until: datetime | None = None
    blocked: bool = False
    down: bool = False

    @property
    def total(self) -> int:
        """How many rows the pass (or the forgetting) counted."""
        counted: list[int] = [getattr(self, outcome.value) for outcome in RoleSync]
        return sum(counted) + self.held


class _RoleConnectionPasses:
    """Passes over the kept role connections, in batches claimed so that concurrent workers
    never push the same one."""

    def __init__(
        self, uow: UnitOfWorkFactory, clock: Clock, pusher: RoleConnectionPusher, batch: int = 50
    ) -> None:
        self._uow, self._clock, self._pusher, self._batch = uow, clock, pusher, batch

    async def _pass(
        self,
        *,
        everything: bool,
        forget: bool = False,
        drop_unreadable: bool = False,
        stopping: Stopping | None = None,
    ) -> RoleSyncReport:
        """Batch after batch, until nothing is due; or until Discord rate limits the
        process (or its address is blocked, or it failed ``OUTAGE_THRESHOLD`` calls in a
        row: 5xx, timeouts): then what is left stays due, unclaimed, with
        no failure counted, for the first pass after the pause (a pass during it claims
        nothing). Every call meanwhile would get the same answer, and prolong a block.
        ``stopping``: the worker's, when its process stops; the pass then pushes nothing
        more, and lets go of the rest of its batch (see ``Claims``)."""
        counts = dict.fromkeys(RoleSync, 0)
        self._pusher.new_pass()
        if everything:
            async with self._uow() as uow:
                await uow.role_connection_tokens.mark_all_due(self._clock.now())
                await uow.commit()
        while not counts[RoleSync.PAUSED] and self._pusher.paused_until(self._clock.now()) is None:
            if stopping is not None and stopping.asked:
                break
            now = self._clock.now()
            async with Claims(self._uow, self._clock, _let_go, stopping) as claims:
                async with self._uow() as uow:
                    rows = await uow.role_connection_tokens.claim_due(
                        now, now + CLAIM_LEASE, self._batch
                    )
                    claims.took(rows)
                    await uow.commit()
                for row in claims:
                    outcome = await self._pusher.sync(
                        row, forget=forget, drop_unreadable=drop_unreadable, claims=claims
                    )
                    counts[outcome] += 1
                    if outcome is RoleSync.PAUSED:
                        # Stopped, even when the pause has ended already (a retry_after of
                        # 0): the rows left are the ones it would claim again at once. They
                        # are let go as the pass leaves them.
                        counts[outcome] += claims.left
                        break
            if len(rows) < self._batch:
                break  # every row pushed is scheduled later or deleted: the loop ends
        now = self._clock.now()
        return RoleSyncReport(
            **{outcome.value: n for outcome, n in counts.items()},
            paused_until=self._pusher.paused_until(now),
            blocked=self._pusher.blocked(now),
            down=self._pusher.down(now),
        )


class RefreshRoleConnections(_RoleConnectionPasses):
    """Push every role connection that is due (``everything``: every one kept)."""

    async def execute(
        self, *, everything: bool = False, stopping: Stopping | None = None
    ) -> RoleSyncReport:
        return await self._pass(everything=everything, stopping=stopping)


@dataclass(frozen=True, slots=True)
class ForgetPreview:
    """What forgetting would do now: the users whose tokens are kept, and how many of them
    a pusher holds (left for a later run)."""

    kept: int
    held: int


class ForgetRoleConnections(_RoleConnectionPasses):
    """Linked Roles turned off: tell Discord that every user whose tokens are kept is no
    longer connected (their role goes), and delete the tokens. Those Discord does not take
    now stay, for another run; those no configured key opens stay too, unless
    ``drop_unreadable`` (nothing can open them to tell Discord: the key is gone for good)."""

    async def execute(self, *, drop_unreadable: bool = False) -> RoleSyncReport:
        report = await self._pass(everything=True, forget=True, drop_unreadable=drop_unreadable)
        return replace(report, held=(await self.preview()).held)

    async def preview(self) -> ForgetPreview:
        """The counts, changing nothing. Held: rows another pusher holds, left out of a
        pass: a worker stopped mid-pass (its claim ends within 5 minutes), or one still
        running somewhere with Linked Roles on. Taken from it, its push of "linked" could
        land after this one's "not linked"."""
        kept, held, now = 0, 0, self._clock.now()
        async for row in every_row(self._uow, self._batch):
            kept += 1
            held += row.claimed_until is not None and row.claimed_until > now
        return ForgetPreview(kept, held)


@dataclass(frozen=True, slots=True)
class KeyRotationReport:
    rotated: int  # now sealed with the newest key
    current: int  # already were
    unreadable: int  # no configured key opens them
    skipped: int = 0  # being pushed (a pusher holds it), or rewritten at every try: run again


class RotateTokenKeys:
    """``taskflow-link tokens rotate``: seal every kept token with the newest key, so the
    older keys can be removed from the configuration.

    ``drop_unreadable``: delete the tokens no configured key opens (audited ``unreadable``,
    with the Discord id), once their key is known to be gone for good. Otherwise they are
    kept, and tried and reported by every pass, for good: nothing else removes a still
    linked member's (``forget`` needs Linked Roles off, and tells everyone "not linked")."""

    def __init__(
        self, uow: UnitOfWorkFactory, clock: Clock, box: SecretBox, page_size: int = 200
    ) -> None:
        self._uow, self._clock, self._box, self._page = uow, clock, box, page_size
        self._drop = False

    async def execute(self, *, drop_unreadable: bool = False) -> KeyRotationReport:
        self._drop = drop_unreadable
        counts = {"rotated": 0, "current": 0, "unreadable": 0, "skipped": 0}
        async for row in every_row(self._uow, self._page):
            counts[await self._rotate(row)] += 1
        return KeyRotationReport(**counts)

    async def _rotate(self, found: RoleConnectionToken) -> str:
        """Reseal one row, claimed as a pusher claims it: a pusher may be spending its
        refresh token at Discord, and the row resealed meanwhile would make it read the
        spent one again (``invalid_grant``: the tokens deleted). A row a pusher holds is
        skipped (run again)."""
        if self._box.is_current(found.sealed) and not (self._drop and self._unreadable(found)):
            return "current"  # every write seals with the newest key
        row = replace(found, claimed_until=None)  # taken only if nobody holds it
        for _ in range(_ATTEMPTS):
            now = self._clock.now()
            held = await _take(self._uow, row, now)
            if held is None:
                async with self._uow(read_only=True) as uow:
                    gone = await uow.role_connection_tokens.get(found.discord_id) is None
                return "current" if gone else "skipped"
            row = held
            outcome = await self._reseal(row, now)
            if outcome is not None:
                return outcome
        await _release(self._uow, row)
        return "skipped"

    async def _reseal(self, row: RoleConnectionToken, now: datetime) -> str | None:
        """Write ``row`` (held) resealed, letting go of the claim; ``None``: it changed
        meanwhile (still held: try again)."""
        current = self._box.is_current(row.sealed)
        if current and not self._drop:
            await _release(self._uow, row)
            return "current"
        context = _context(row.discord_id)
        try:
            plaintext = self._box.open(row.sealed, context=context)
        except errors.SecretUnreadable:
            if not self._drop:
                await _release(self._uow, row)
                return "unreadable"
            async with self._uow() as uow:
                dropped = await uow.role_connection_tokens.remove(row)
                if dropped:
                    await _audit_deleted(uow, row.discord_id, now, "unreadable")
                    await _lost(uow, row.discord_id, now, RoleConnectionLoss.UNREADABLE)
                await uow.commit()
            # Not dropped: it changed meanwhile (a new grant, an unlink): look again.
            return "unreadable" if dropped else None
        if current:  # readable after all (a new grant meanwhile)
            await _release(self._uow, row)
            return "current"
        resealed = self._box.seal(plaintext, context=context)
        # Made due while held (an unlink): let go through release, which wakes the
        # workers (their passes meanwhile left the row to this one).
        due = row.next_push_at <= now
        done = replace(
            row,
            sealed=resealed,
            updated_at=now,
            claimed_until=row.claimed_until if due else None,
        )
        async with self._uow() as uow:
            written = await uow.role_connection_tokens.replace(done)
            if written is not None and due:
                await uow.role_connection_tokens.release(written)
            await uow.commit()
        return "rotated" if written is not None else None

    def _unreadable(self, row: RoleConnectionToken) -> bool:
        """Sealed with the newest key's id, yet not opening: altered, or copied from
        another row (the Discord id is bound to the value)."""
        try:
            self._box.open(row.sealed, context=_context(row.discord_id))
        except errors.SecretUnreadable:
            return True
        return False
