"""Which gateway connections get an event: Discord's sharding rules
(https://discord.com/developers/docs/events/gateway#sharding).

A connection says which shard it is in its IDENTIFY (``shard: [shard_id, num_shards]``); an
event of a server goes to shard ``(guild_id >> 22) % num_shards``, and an event without a server
(a DM) to shard 0. ``num_shards`` only routes traffic: connections may repeat a shard or use
different counts (Discord's way to hand traffic to a new deployment started in parallel), and
each connection gets what its own ``[shard_id, num_shards]`` covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

UNSHARDED = (0, 1)  # what a connection that sends no ``shard`` is


class ShardedConnection(Protocol):
    @property
    def shard(self) -> tuple[int, int] | None:
        """``(shard_id, num_shards)`` once identified."""


ConnectionT = TypeVar("ConnectionT", bound=ShardedConnection)


def shard_for(guild_id: int | None, shard_count: int) -> int:
    """The shard that receives the events of this server (``None``: a DM, always shard 0)."""
    if shard_count < 1:
        raise ValueError("a shard count is at least 1")
    if guild_id is None:
        return 0
    return (guild_id >> 22) % shard_count


def parse_shard(value: object) -> tuple[int, int] | None:
    """IDENTIFY's ``shard`` as ``(shard_id, num_shards)``, or ``None`` when Discord would close
    the connection with 4010 Invalid shard. No ``shard`` at all means one unsharded connection."""
    if value is None:
        return UNSHARDED
    if not isinstance(value, list) or len(value) != 2:
        return None
    shard_id, count = value
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (shard_id, count)):
        return None
    if count < 1 or not 0 <= shard_id < count:
        return None
    return shard_id, count


def connections_for(connections: Sequence[ConnectionT], guild_id: int | None) -> list[ConnectionT]:
    """The connections an event of this server (``None``: a DM) is sent to: every connection
    whose shard, by its own ``num_shards``, covers it.

    With shards that split the servers between them (``[0, n]`` … ``[n - 1, n]``, one
    connection each) that is exactly one connection. Two connections that identified as the
    same shard both get the event, as on Discord: copies of a bot that are not sharded all
    receive every interaction, and all but the first answer get 40060."""
    return [
        connection
        for connection in connections
        if connection.shard is not None
        and shard_for(guild_id, connection.shard[1]) == connection.shard[0]
    ]
