"""What the command line needs of the settings before it reads any: their error and the
largest shard count an option takes. Standard library only, so that ``taskflow-link --help``
loads neither pydantic-settings nor SQLAlchemy (``entrypoints.settings`` does)."""

from __future__ import annotations

# Far more shards than the largest bots run (one per 1,000 to 2,500 servers): a count alone
# runs every shard here, and a mistyped one (a shard id, a server id) stopped the bot with a
# MemoryError's traceback while it listed them.
MAX_SHARD_COUNT = 100_000


class SettingsError(Exception):
    """Start-up configuration problem; the message names every offending variable."""
