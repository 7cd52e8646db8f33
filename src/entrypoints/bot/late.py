"""Interactions that come after Discord stopped waiting for them are not run.

Discord takes an interaction's first answer for 3 seconds; past them it invalidates the token,
so neither that answer nor a follow-up reaches the person, who was shown "The application did
not respond". An interaction can still reach the bot later: a gateway session resumed after an
outage replays what it missed, a process that stalled (a long pause, a starved CPU) works
through a queue of them, a proxy holds an HTTP request. Run then, its effects came unannounced:
a late ``/unlink`` unlinked, a late ``/link`` ended the button shown without showing a new one.

Discord writes when it created an interaction into its id (a snowflake: milliseconds since
2015-01-01 in its upper bits). One that reaches the service more than
``TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS`` after that (by this host's clock) is not
run: logged once, with its age, and counted. The default, 5 s, is Discord's 3 plus 2 for the
difference between this host's clock and Discord's: a clock that runs ahead by more would make
every interaction look late, which the log then says. A clock that runs behind lets late ones
through, as before.
"""

from __future__ import annotations

import re

from adapters.metrics import PrometheusMetrics
from domain.ports import Clock

DISCORD_EPOCH_MS = 1_420_070_400_000
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


def created_at(snowflake: int) -> float:
    """When Discord made the id, in seconds since 1970 (Unix time)."""
    return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000


class LateInteractions:
    """Tells an interaction that came too late to be run, counting it (``via``: gateway or
    http)."""

    def __init__(
        self, seconds: float, clock: Clock, metrics: PrometheusMetrics | None, *, via: str
    ) -> None:
        self.seconds = seconds
        self._clock = clock
        self._metrics = metrics
        self._via = via

    def refusal(self, interaction_id: int, command: object = None) -> str | None:
        """Why the interaction is not run (to log, once), or ``None`` when it is in time."""
        age = self._clock.now().timestamp() - created_at(interaction_id)
        if age <= self.seconds:
            return None
        if self._metrics is not None:
            self._metrics.interaction_late(self._via)
        name = f" (/{command})" if isinstance(command, str) and _COMMAND_NAME.match(command) else ""
        return (
            f"interaction {interaction_id}{name} not run: it came {age:.1f} s after Discord "
            f"created it, more than TASKFLOW_LINK_DISCORD_LATE_INTERACTION_SECONDS "
            f"({self.seconds:g}); Discord takes no answer after 3 s, so its effects would come "
            "unannounced. If every interaction comes so late, this host's clock is ahead of "
            "Discord's (keep it synchronised, NTP)"
        )
