"""The role queue's contract (``RoleChangeRepository``): the in-memory adapter and the SQL
adapters run the same tests. Subclass ``RoleChangeContract`` with a ``uow_factory``."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from domain.model import (
    DiscordId,
    LinkedRole,
    RoleAction,
    RoleChange,
    RoleChangeStatus,
)
from domain.ports import RoleCallOutcome, UnitOfWork, UnitOfWorkFactory
from tests.contracts.repositories import LATER, NOW, account, link, write

ROLE = LinkedRole(DiscordId(900), DiscordId(901))
OTHER_ROLE = LinkedRole(DiscordId(900), DiscordId(902))
LEASE = timedelta(minutes=2)


def change(discord_id: int, action: RoleAction = RoleAction.ADD, **changes: object) -> RoleChange:
    row = RoleChange(DiscordId(discord_id), ROLE, action, NOW, NOW)
    return replace(row, **changes)  # type: ignore[arg-type]


class RoleChangeContract:
    @pytest.fixture
    def uow_factory(self) -> UnitOfWorkFactory:
        raise NotImplementedError

    async def test_a_request_is_queued_once_per_member_and_role(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        owner = account()
        await write(uow_factory, lambda uow: uow.accounts.add(owner))
        await write(
            uow_factory, lambda uow: uow.role_changes.request(change(1, account_id=owner.id))
        )
        async with uow_factory() as uow:
            queued = await uow.role_changes.get(DiscordId(1), ROLE)
            assert queued == change(1, account_id=owner.id)
            assert await uow.role_changes.get(DiscordId(1), OTHER_ROLE) is None
            assert await uow.role_changes.pending() == (1, NOW)

    async def test_a_newer_request_replaces_what_an_older_one_asked(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        await write(uow_factory, lambda uow: uow.role_changes.request(change(1)))
        async with uow_factory() as uow:  # delivered, then Discord refused it
            [held] = await uow.role_changes.claim_due(NOW, NOW + LEASE, 10)
            refused = replace(
                held,
                status=RoleChangeStatus.REFUSED,
                attempts=1,
                finished_at=NOW,
                last_error="not_a_member",
            )
            assert await uow.role_changes.finish(refused)
            await uow.commit()
        unlink = change(1, RoleAction.REMOVE, requested_at=LATER, next_attempt_at=LATER)
        await write(uow_factory, lambda uow: uow.role_changes.request(unlink))
        async with uow_factory() as uow:
            assert await uow.role_changes.get(DiscordId(1), ROLE) == replace(unlink, version=2)
            assert await uow.role_changes.pending() == (1, LATER)

    async def test_only_due_unclaimed_pending_changes_are_claimed(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        async def queue(uow: UnitOfWork) -> None:
            await uow.role_changes.request(change(1))
            await uow.role_changes.request(change(2, next_attempt_at=LATER))  # not due yet
            await uow.role_changes.request(change(3))

        await write(uow_factory, queue)
        async with uow_factory() as uow:
            first = await uow.role_changes.claim_due(NOW, NOW + LEASE, 1)
            assert [c.discord_id for c in first] == [DiscordId(1)]
            assert first[0].claimed_until == NOW + LEASE
            rest = await uow.role_changes.claim_due(NOW, NOW + LEASE, 10)
            assert [c.discord_id for c in rest] == [DiscordId(3)]  # 1 is held, 2 not due
            assert await uow.role_changes.claim_due(NOW, NOW + LEASE, 10) == []
            await uow.commit()
        async with uow_factory() as uow:  # the holders died: their claims run out
            again = await uow.role_changes.claim_due(LATER, LATER + LEASE, 10)
            assert sorted(c.discord_id.value for c in again) == [1, 2, 3]

    async def test_a_claim_skips_the_servers_told_to_wait(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """Discord rate limited the calls for a server: its changes stay unclaimed."""
        elsewhere = LinkedRole(DiscordId(800), DiscordId(801))

        async def queue(uow: UnitOfWork) -> None:
            await uow.role_changes.request(change(1))
            await uow.role_changes.request(replace(change(2), role=elsewhere))
            await uow.role_changes.request(replace(change(3), role=OTHER_ROLE))

        await write(uow_factory, queue)
        async with uow_factory() as uow:
            batch = await uow.role_changes.claim_due(
                NOW, NOW + LEASE, 10, skip_guilds=frozenset({ROLE.guild_id})
            )
            assert [(c.discord_id.value, c.role) for c in batch] == [(2, elsewhere)]
            rest = await uow.role_changes.claim_due(NOW, NOW + LEASE, 10)
            assert [c.discord_id.value for c in rest] == [1, 3]

    async def test_a_claim_and_the_count_of_pending_may_be_of_some_roles_only(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """`roles sync` takes only the changes of the roles its setting names."""
        elsewhere = LinkedRole(DiscordId(800), DiscordId(901))  # ROLE's role id, elsewhere

        async def queue(uow: UnitOfWork) -> None:
            await uow.role_changes.request(change(1))
            await uow.role_changes.request(replace(change(2), role=elsewhere))
            await uow.role_changes.request(replace(change(3, next_attempt_at=LATER), role=ROLE))
            await uow.role_changes.request(replace(change(4), role=OTHER_ROLE))

        await write(uow_factory, queue)
        async with uow_factory() as uow:
            assert await uow.role_changes.pending({ROLE}) == (2, NOW)
            assert await uow.role_changes.pending({elsewhere, OTHER_ROLE}) == (2, NOW)
            assert await uow.role_changes.pending(frozenset()) == (0, None)
            assert await uow.role_changes.pending() == (4, NOW)
            assert await uow.role_changes.claim_due(NOW, NOW + LEASE, 10, roles=()) == []
            batch = await uow.role_changes.claim_due(NOW, NOW + LEASE, 10, roles={ROLE})
            assert [(c.discord_id.value, c.role) for c in batch] == [(1, ROLE)]
            rest = await uow.role_changes.claim_due(NOW, NOW + LEASE, 10)
            assert [c.discord_id.value for c in rest] == [2, 4]

    async def test_the_queued_changes_of_a_role_are_refused_at_once(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """Discord refused the role for every member: its changes in the queue, due or not,
        are finished as refused; one another worker holds, another role's, and finished ones
        are left as they are."""
        soon, refused_at = NOW + timedelta(seconds=30), NOW + timedelta(minutes=1)

        async def queue(uow: UnitOfWork) -> None:
            await uow.role_changes.request(change(1, next_attempt_at=soon))
            await uow.role_changes.request(change(2, next_attempt_at=LATER))  # retrying
            await uow.role_changes.request(change(3))
            await uow.role_changes.request(replace(change(4), role=OTHER_ROLE))
            await uow.role_changes.request(change(5))

        await write(uow_factory, queue)
        async with uow_factory() as uow:  # a worker sending 3 (and done with 5)
            held = await uow.role_changes.claim_due(NOW, NOW + LEASE, 10, roles={ROLE})
            assert [c.discord_id.value for c in held] == [3, 5]
            done = replace(held[1], status=RoleChangeStatus.DONE, finished_at=NOW)
            assert await uow.role_changes.finish(done)
            await uow.commit()
        async with uow_factory() as uow:  # a worker that died holding 1: its claim ran out
            [stale] = await uow.role_changes.claim_due(
                soon, soon + timedelta(seconds=20), 1, roles={ROLE}
            )
            assert stale.discord_id.value == 1
            await uow.commit()
        async with uow_factory() as uow:
            refused = await uow.role_changes.refuse_queued(ROLE, refused_at, "missing_permissions")
            await uow.commit()
        assert [c.discord_id.value for c in refused] == [1, 2]
        async with uow_factory() as uow:
            rows = {n: await uow.role_changes.get(DiscordId(n), ROLE) for n in (1, 2, 3, 5)}
            other = await uow.role_changes.get(DiscordId(4), OTHER_ROLE)
        for n in (1, 2):
            row = rows[n]
            assert row is not None
            assert row == refused[n - 1]
            assert (row.status, row.last_error, row.finished_at, row.claimed_until) == (
                RoleChangeStatus.REFUSED,
                "missing_permissions",
                refused_at,
                None,
            )
            assert row.attempts == 0
        three, five = rows[3], rows[5]
        assert three is not None
        assert five is not None
        assert other is not None
        assert three.status is RoleChangeStatus.PENDING  # still held...
        assert three.claimed_until == NOW + LEASE  # ...by the worker sending it
        assert five.status is RoleChangeStatus.DONE
        assert other.status is RoleChangeStatus.PENDING

    async def test_finishing_writes_back_and_releases_the_claim(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        await write(uow_factory, lambda uow: uow.role_changes.request(change(1)))
        async with uow_factory() as uow:
            [held] = await uow.role_changes.claim_due(NOW, NOW + LEASE, 10)
            renewed = await uow.role_changes.renew_claim(held, LATER)
            assert renewed == replace(held, claimed_until=LATER)
            assert await uow.role_changes.renew_claim(held, LATER) is None  # not that claim now
            done = replace(renewed, status=RoleChangeStatus.DONE, attempts=1, finished_at=NOW)
            assert await uow.role_changes.finish(done)
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.role_changes.get(DiscordId(1), ROLE) == replace(
                done, claimed_until=None
            )
            assert await uow.role_changes.pending() == (0, None)
            assert await uow.role_changes.claim_due(LATER, LATER + LEASE, 10) == []
            assert await uow.role_changes.renew_claim(renewed, LATER + LEASE) is None
            assert not await uow.role_changes.finish(done)  # a claim can be used once

    async def test_a_claim_let_go_leaves_the_change_as_it_was_for_any_worker(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """A worker whose process stops lets go of what it claimed and did not apply: taken
        again at once, not after the claim's lease. Only the holder's claim lets go."""
        await write(uow_factory, lambda uow: uow.role_changes.request(change(1)))
        async with uow_factory() as uow:
            [held] = await uow.role_changes.claim_due(NOW, NOW + LEASE, 10)
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.role_changes.claim_due(NOW, NOW + LEASE, 10) == []  # held
            other = replace(held, claimed_until=NOW + 2 * LEASE)  # not this claim
            assert not await uow.role_changes.release(other)
            assert await uow.role_changes.release(held)
            assert not await uow.role_changes.release(held)  # let go already
            await uow.commit()
        async with uow_factory() as uow:
            [again] = await uow.role_changes.claim_due(NOW, NOW + LEASE, 10)
            assert again == replace(change(1), claimed_until=NOW + LEASE)
            await uow.commit()

    async def test_a_request_during_a_delivery_is_not_finished_by_it_and_waits_for_it(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        await write(uow_factory, lambda uow: uow.role_changes.request(change(1)))
        async with uow_factory() as uow:
            [held] = await uow.role_changes.claim_due(NOW, NOW + LEASE, 10)
            await uow.commit()
        # While the add is with Discord, the member unlinks.
        unlink = change(1, RoleAction.REMOVE)
        await write(uow_factory, lambda uow: uow.role_changes.request(unlink))
        async with uow_factory() as uow:
            # Nobody else may send the removal before the add in flight has finished...
            assert await uow.role_changes.claim_due(NOW, NOW + LEASE, 10) == []
            done = replace(held, status=RoleChangeStatus.DONE, attempts=1, finished_at=NOW)
            assert not await uow.role_changes.finish(done)  # ...which cannot mark it done
            await uow.commit()
        async with uow_factory() as uow:
            [removal] = await uow.role_changes.claim_due(NOW, NOW + LEASE, 10)
            assert removal.action is RoleAction.REMOVE
            assert removal.version == 2
            assert removal.status is RoleChangeStatus.PENDING

    async def test_the_changes_asked_for_since_a_moment_are_counted_as_they_are_now(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """``roles sync`` counts what it asked for, whoever applied it."""
        earlier = NOW - timedelta(seconds=1)

        async def queue(uow: UnitOfWork) -> None:
            await uow.role_changes.request(change(1, requested_at=earlier))  # before: left out
            for member in (2, 3, 4):
                await uow.role_changes.request(change(member))
            await uow.role_changes.request(change(5, RoleAction.REMOVE))
            await uow.role_changes.request(replace(change(6), role=OTHER_ROLE))

        await write(uow_factory, queue)
        outcomes = {
            2: (RoleChangeStatus.DONE, None),
            3: (RoleChangeStatus.REFUSED, "missing_permissions"),
            4: (RoleChangeStatus.DONE, None),
            5: (RoleChangeStatus.DONE, None),
        }
        async with uow_factory() as uow:
            for held in await uow.role_changes.claim_due(NOW, NOW + LEASE, 10):
                after = held  # the others are let go, pending
                if held.discord_id.value in outcomes:
                    status, error = outcomes[held.discord_id.value]
                    after = replace(held, status=status, last_error=error, finished_at=NOW)
                assert await uow.role_changes.finish(after)
            await uow.commit()
        async with uow_factory(read_only=True) as uow:
            counts = await uow.role_changes.counts_since(NOW)
            assert await uow.role_changes.counts_since(LATER) == []
        assert sorted(
            (c.role.role_id.value, str(c.action), str(c.status), c.last_error, c.count)
            for c in counts
        ) == [
            (901, "add", "done", None, 2),
            (901, "add", "refused", "missing_permissions", 1),
            (901, "remove", "done", None, 1),
            (902, "add", "pending", None, 1),
        ]

    async def test_refused_and_given_up_removals_are_asked_for_again(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """``roles sync``: an unlinked member whose removal Discord refused (no permission,
        a wrong token) or that was given up must not keep the role for good. One who was not
        in the server holds none of its roles: not asked again (each is a refused call)."""
        outcomes = {
            1: (RoleChangeStatus.REFUSED, "missing_permissions"),
            2: (RoleChangeStatus.FAILED, "x"),
            3: (RoleChangeStatus.DONE, None),  # removed: nothing to do
            6: (RoleChangeStatus.REFUSED, RoleCallOutcome.NOT_A_MEMBER.value),
        }

        async def queue(uow: UnitOfWork) -> None:
            for n in (1, 2, 3, 6):
                await uow.role_changes.request(change(n, RoleAction.REMOVE))
            await uow.role_changes.request(change(4, RoleAction.REMOVE))  # still pending
            await uow.role_changes.request(replace(change(5), role=OTHER_ROLE))

        await write(uow_factory, queue)
        async with uow_factory() as uow:
            for held in await uow.role_changes.claim_due(NOW, NOW + LEASE, 10):
                n = held.discord_id.value
                if n in outcomes:
                    status, error = outcomes[n]
                    finished = replace(held, status=status, attempts=3, last_error=error)
                    assert await uow.role_changes.finish(finished)
                else:
                    assert await uow.role_changes.finish(held)  # released untouched
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.role_changes.retry_removals(ROLE, LATER) == 2
            assert await uow.role_changes.retry_removals(OTHER_ROLE, LATER) == 0
            await uow.commit()
        async with uow_factory(read_only=True) as uow:
            for n, retried in ((1, True), (2, True), (3, False), (4, False), (6, False)):
                row = await uow.role_changes.get(DiscordId(n), ROLE)
                assert row is not None
                assert row.action is RoleAction.REMOVE
                if retried:
                    assert row.status is RoleChangeStatus.PENDING
                    assert (row.attempts, row.last_error, row.version) == (0, None, 2)
                    assert row.next_attempt_at == LATER
                else:
                    assert row.next_attempt_at == NOW
            done = await uow.role_changes.get(DiscordId(3), ROLE)
            assert done is not None
            assert done.status is RoleChangeStatus.DONE
            left = await uow.role_changes.get(DiscordId(6), ROLE)
            assert left is not None
            assert (left.status, left.last_error) == (RoleChangeStatus.REFUSED, "not_a_member")

    async def test_adds_left_to_unlinked_members_become_removals(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """``roles sync``: an unlink made by an instance whose settings named no role queued
        no removal, so the row still says "added" (helper-62's review). A row keeps only its
        last action: an add refused (the permission missing, the role not configured then)
        may come after one that went through, so the member may hold the role; removing a
        role a member does not hold is a no-op for Discord (helper-67's review). Only an add
        refused because the member was not in the server says they hold none of its roles
        (leaving a server drops them)."""
        owner = account()
        outcomes = {
            1: (RoleChangeStatus.DONE, None),  # unlinked: asked to remove
            2: (RoleChangeStatus.FAILED, "unavailable"),  # given up (may have gone through)
            3: (RoleChangeStatus.REFUSED, "missing_permissions"),  # an earlier add may have
            7: (RoleChangeStatus.REFUSED, "not_configured"),  # ... and so may this one's
            8: (RoleChangeStatus.REFUSED, "not_a_member"),  # not in the server: no role
            5: (RoleChangeStatus.DONE, None),  # still linked: left alone
        }

        async def queue(uow: UnitOfWork) -> None:
            await uow.accounts.add(owner)
            await uow.links.add(link(5, owner.id))
            for n in (1, 2, 3, 5, 7, 8):
                await uow.role_changes.request(change(n, account_id=owner.id))
            await uow.role_changes.request(change(4))  # unlinked, still pending
            await uow.role_changes.request(replace(change(6), role=OTHER_ROLE))

        await write(uow_factory, queue)
        async with uow_factory() as uow:
            for held in await uow.role_changes.claim_due(NOW, NOW + LEASE, 10):
                n = held.discord_id.value
                status, error = outcomes.get(n, (RoleChangeStatus.DONE, None))
                finished = replace(held, status=status, last_error=error)
                assert await uow.role_changes.finish(finished if n != 4 else held)
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.role_changes.request_for_unlinked(ROLE, LATER) == 4
            await uow.commit()
        async with uow_factory(read_only=True) as uow:
            for n in (1, 2, 3, 7):
                row = await uow.role_changes.get(DiscordId(n), ROLE)
                assert row is not None
                assert (row.action, row.status, row.version) == (
                    RoleAction.REMOVE,
                    RoleChangeStatus.PENDING,
                    2,
                )
                assert (row.requested_at, row.next_attempt_at) == (LATER, LATER)
                assert row.account_id == owner.id
            for n, status in ((8, RoleChangeStatus.REFUSED), (4, RoleChangeStatus.PENDING)):
                row = await uow.role_changes.get(DiscordId(n), ROLE)
                assert row is not None
                assert (row.action, row.status, row.version) == (RoleAction.ADD, status, 1)
            row = await uow.role_changes.get(DiscordId(5), ROLE)
            assert row is not None
            assert (row.action, row.status) == (RoleAction.ADD, RoleChangeStatus.DONE)
            row = await uow.role_changes.get(DiscordId(6), OTHER_ROLE)
            assert row is not None
            assert row.action is RoleAction.ADD

    async def test_roles_are_requested_for_linked_members_missing_them(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        owners = [account(f"user{n}", f"user{n}@example.com") for n in range(4)]

        async def link_all(uow: UnitOfWork) -> None:
            for n, owner in enumerate(owners, start=1):
                await uow.accounts.add(owner)
                await uow.links.add(link(n, owner.id))
            await uow.role_changes.request(
                change(1, account_id=owners[0].id)
            )  # pending add: left alone
            await uow.role_changes.request(change(2, RoleAction.REMOVE))  # asked again
            await uow.role_changes.request(change(7))  # not linked: left alone

        await write(uow_factory, link_all)
        async with uow_factory() as uow:  # 3 was added already
            await uow.role_changes.request(change(3, account_id=owners[2].id))
            for held in await uow.role_changes.claim_due(NOW, NOW + LEASE, 10):
                if held.discord_id == DiscordId(3):
                    done = replace(held, status=RoleChangeStatus.DONE, attempts=1)
                    assert await uow.role_changes.finish(done)
                else:  # release the others untouched
                    assert await uow.role_changes.finish(held)
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.role_changes.request_for_links(ROLE, LATER, every=False) == 2
            await uow.commit()
        async with uow_factory() as uow:
            for n, requested_again in ((1, False), (2, True), (3, False), (4, True)):
                row = await uow.role_changes.get(DiscordId(n), ROLE)
                assert row is not None
                assert row.action is RoleAction.ADD
                assert row.account_id == owners[n - 1].id
                assert (row.requested_at == LATER) is requested_again, n
            assert await uow.role_changes.get(DiscordId(4), OTHER_ROLE) is None
            assert await uow.role_changes.request_for_links(OTHER_ROLE, LATER, every=True) == 4
            assert await uow.role_changes.request_for_links(ROLE, LATER, every=True) == 4
            await uow.commit()
        async with uow_factory() as uow:
            row = await uow.role_changes.get(DiscordId(3), ROLE)
            assert row is not None
            assert row.status is RoleChangeStatus.PENDING
            assert row.attempts == 0

    async def test_concurrent_claims_take_every_change_exactly_once(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        async def queue(uow: UnitOfWork) -> None:
            for n in range(1, 13):
                await uow.role_changes.request(change(n))

        await write(uow_factory, queue)

        async def claim() -> list[int]:
            async with uow_factory() as uow:
                batch = await uow.role_changes.claim_due(NOW, LATER, 3)
                await uow.commit()
            return [c.discord_id.value for c in batch]

        batches = await asyncio.gather(*(claim() for _ in range(6)))  # room for 18
        claimed = sorted(n for batch in batches for n in batch)
        assert claimed == list(range(1, 13))  # all of them, none twice
        assert all(len(batch) <= 3 for batch in batches)

    async def test_concurrent_requests_for_one_member_all_count(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        async def request(n: int) -> None:
            action = RoleAction.ADD if n % 2 else RoleAction.REMOVE
            await write(uow_factory, lambda uow: uow.role_changes.request(change(1, action)))

        await asyncio.gather(*(request(n) for n in range(8)))
        async with uow_factory() as uow:
            row = await uow.role_changes.get(DiscordId(1), ROLE)
            assert row is not None
            assert row.version == 8

    async def test_the_purge_drops_only_finished_rows_of_unlinked_members_with_nothing_left(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """A member who unlinked left a row for good (one per Discord account ever linked,
        and per role): the purge deletes it once its removal was done (or Discord said the
        member was not in the server, whose leaving dropped the role) before the cut-off.
        Rows `roles sync` may still ask again stay (a removal refused or given up, an add
        finished for someone no longer linked), as do linked members', pending ones, and
        those finished since."""
        owner = account()
        rows = {
            # n: (action, status, last error, finished at, linked, purged)
            1: (RoleAction.REMOVE, RoleChangeStatus.DONE, None, NOW, False, True),
            2: (RoleAction.REMOVE, RoleChangeStatus.DONE, None, LATER, False, False),
            3: (RoleAction.REMOVE, RoleChangeStatus.FAILED, "unavailable", NOW, False, False),
            4: (RoleAction.REMOVE, RoleChangeStatus.REFUSED, "rejected", NOW, False, False),
            5: (RoleAction.REMOVE, RoleChangeStatus.REFUSED, "not_a_member", NOW, False, True),
            6: (RoleAction.ADD, RoleChangeStatus.REFUSED, "not_a_member", NOW, False, True),
            7: (RoleAction.ADD, RoleChangeStatus.DONE, None, NOW, False, False),
            8: (RoleAction.REMOVE, RoleChangeStatus.DONE, None, NOW, True, False),
            9: (RoleAction.ADD, RoleChangeStatus.REFUSED, "not_a_member", NOW, True, False),
        }

        async def queue(uow: UnitOfWork) -> None:
            await uow.accounts.add(owner)
            for n, (action, *_, linked, _purged) in rows.items():
                if linked:
                    other = account(f"user{n}", f"user{n}@example.com")
                    await uow.accounts.add(other)
                    await uow.links.add(link(n, other.id))
                await uow.role_changes.request(change(n, action, account_id=owner.id))
            await uow.role_changes.request(change(10, RoleAction.REMOVE))  # still pending

        await write(uow_factory, queue)
        async with uow_factory() as uow:
            for held in await uow.role_changes.claim_due(NOW, NOW + LEASE, 20):
                n = held.discord_id.value
                if n not in rows:
                    assert await uow.role_changes.release(held)
                    continue
                _, status, error, at, *_ = rows[n]
                finished = replace(held, status=status, last_error=error, finished_at=at)
                assert await uow.role_changes.finish(finished)
            await uow.commit()
        async with uow_factory() as uow:
            assert await uow.role_changes.purge_finished(LATER) == 3
            await uow.commit()
        async with uow_factory(read_only=True) as uow:
            for n, (*_, purged) in rows.items():
                row = await uow.role_changes.get(DiscordId(n), ROLE)
                assert (row is None) is purged, n
            assert await uow.role_changes.get(DiscordId(10), ROLE) is not None
        # A member purged who links again is asked for as anyone new.
        await write(uow_factory, lambda uow: uow.role_changes.request(change(1)))
        async with uow_factory(read_only=True) as uow:
            again = await uow.role_changes.get(DiscordId(1), ROLE)
            assert again is not None
            assert (again.status, again.version) == (RoleChangeStatus.PENDING, 1)

    async def test_the_purge_of_role_changes_deletes_at_most_its_limit(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """In batches: at most ``limit`` rows per call, fewer only when none is left."""

        async def queue(uow: UnitOfWork) -> None:
            for n in range(1, 6):
                await uow.role_changes.request(change(n, RoleAction.REMOVE))

        await write(uow_factory, queue)
        async with uow_factory() as uow:
            for held in await uow.role_changes.claim_due(NOW, NOW + LEASE, 20):
                done = replace(held, status=RoleChangeStatus.DONE, finished_at=NOW)
                assert await uow.role_changes.finish(done)
            await uow.commit()
        counts = []
        for _ in range(4):
            async with uow_factory() as uow:
                counts.append(await uow.role_changes.purge_finished(LATER, 2))
                await uow.commit()
        assert counts == [2, 2, 1, 0]

    async def test_added_names_the_roles_discord_took_an_add_of(
        self, uow_factory: UnitOfWorkFactory
    ) -> None:
        """What an unlink must take away whatever the setting names: the member's rows whose
        last action is an add Discord took (done) or may have (given up after timeouts); not
        an add pending or refused, not a removal, not another member's."""
        third = LinkedRole(DiscordId(900), DiscordId(903))
        fourth = LinkedRole(DiscordId(904), DiscordId(905))
        fifth = LinkedRole(DiscordId(908), DiscordId(909))
        outcomes = {
            ROLE: (RoleAction.ADD, RoleChangeStatus.DONE),
            OTHER_ROLE: (RoleAction.ADD, RoleChangeStatus.REFUSED),
            third: (RoleAction.REMOVE, RoleChangeStatus.DONE),
            fourth: (RoleAction.ADD, RoleChangeStatus.DONE),
            fifth: (RoleAction.ADD, RoleChangeStatus.FAILED),
        }

        async def queue(uow: UnitOfWork) -> None:
            for role, (action, _) in outcomes.items():
                await uow.role_changes.request(replace(change(1, action), role=role))
            await uow.role_changes.request(
                replace(change(1), role=LinkedRole(DiscordId(906), DiscordId(907)))
            )
            await uow.role_changes.request(change(2))  # another member's, done below

        await write(uow_factory, queue)
        async with uow_factory() as uow:
            for held in await uow.role_changes.claim_due(NOW, NOW + LEASE, 10):
                if held.discord_id.value == 1 and held.role not in outcomes:
                    assert await uow.role_changes.release(held)  # left pending
                    continue
                status = outcomes[held.role][1] if held.discord_id.value == 1 else None
                done = replace(held, status=status or RoleChangeStatus.DONE)
                assert await uow.role_changes.finish(done)
            await uow.commit()
        async with uow_factory(read_only=True) as uow:
            assert sorted(await uow.role_changes.added(DiscordId(1)), key=str) == sorted(
                [ROLE, fourth, fifth], key=str
            )
            assert await uow.role_changes.added(DiscordId(2)) == [ROLE]
            assert await uow.role_changes.added(DiscordId(3)) == []
