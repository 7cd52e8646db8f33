"""Readiness: is this instance fit to take traffic? The database answers, its schema is the one
this version needs, and Redis answers when it is configured. Each check gets a deadline: a
database that hangs makes the instance "not ready" at once instead of holding the probe.

A check may only *degrade* the instance (``degrading``): Redis, without which each instance
counts its limits in its own memory and serves on. Its problem is reported, but the instance
stays ready: every instance shares the one Redis, so a probe that failed for it took every
instance out of service at once, an outage of the whole service for what costs none."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any

# A check answers ``None`` when all is well, else what is wrong (shown to the prober).
Check = Callable[[], Coroutine[Any, Any, str | None]]
_SQLSTATE = re.compile(r"[0-9A-Z]{5}")


def failure_kind(exc: BaseException) -> str:
    """What kind of failure a check met, for the prober: the class of the error the driver
    raised, below its wrappers (SQLAlchemy's ``orig``, the DB-API adapter's cause), and its
    SQLSTATE when it has one: ``InsufficientPrivilegeError (SQLSTATE 42501)``. Never the
    error's words: a driver's message may carry the database URL, a host or a user's name,
    and the probe's answer is read by whoever can reach it."""
    chain: list[BaseException] = []
    found: BaseException | None = exc
    while found is not None and found not in chain and len(chain) < 10:
        chain.append(found)
        inner = getattr(found, "orig", None)
        found = inner if isinstance(inner, BaseException) else found.__cause__
    deepest = chain[-1]
    states = (getattr(e, "sqlstate", None) for e in reversed(chain))
    state = next((s for s in states if isinstance(s, str) and _SQLSTATE.fullmatch(s)), None)
    return type(deepest).__name__ + (f" (SQLSTATE {state})" if state else "")


class Readiness:
    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        timeout: float,
        needs: Mapping[str, str] | None = None,
        degrading: Collection[str] = (),
    ) -> None:
        """``needs`` maps a check to the one it cannot answer without (``schema`` to
        ``database``): while that one is not "ok", what this one says is no news of its own
        (a schema check against a database that is down "failed"), so it says it is unknown.
        ``degrading``: the checks whose problems leave the instance ready (see the module's
        doc)."""
        self._checks = dict(checks)
        self._degrading = frozenset(degrading)
        self._timeout = timeout
        self._needs = dict(needs or {})
        # A check still running from an earlier probe (a hung database) is awaited again,
        # never started twice.
        self._running: dict[str, asyncio.Task[str | None]] = {}

    async def report(self) -> tuple[bool, dict[str, str]]:
        """``(ready, {check: "ok" or the problem})`` within the timeout; ready unless a check
        that is not only degrading has a problem."""
        tasks = {name: self._start(name) for name in self._checks}
        await asyncio.wait(tasks.values(), timeout=self._timeout)
        results: dict[str, str] = {}
        for name, task in tasks.items():
            if not task.done():
                results[name] = f"no answer within {self._timeout:g} s"
            elif task.cancelled():
                results[name] = "failed"
            elif (failure := task.exception()) is not None:
                results[name] = f"failed: {failure_kind(failure)}"
            else:
                results[name] = task.result() or "ok"
        for name, needed in self._needs.items():
            if results.get(name, "ok") != "ok" and results.get(needed, "ok") != "ok":
                results[name] = f"unknown: the {needed} is not ready"
        ready = all(r == "ok" for n, r in results.items() if n not in self._degrading)
        return ready, results

    def _start(self, name: str) -> asyncio.Task[str | None]:
        task = self._running.get(name)
        if task is None or task.done():
            task = asyncio.create_task(self._checks[name](), name=f"readiness: {name}")
            self._running[name] = task
            task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[str | None]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            task.exception()  # retrieved: never "exception was never retrieved"
        for name, running in list(self._running.items()):
            if running is task:
                del self._running[name]

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        self._running.clear()
