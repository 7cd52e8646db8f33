"""Fault injection for the unit of work: a links repository that dies on ``add``."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from dependency_injector import providers

from domain.model import Link
from domain.ports import UnitOfWork, UnitOfWorkFactory
from entrypoints.container import Container


class InjectedCrash(RuntimeError):
    pass


class _CrashingLinks:
    def __init__(self, real: Any) -> None:
        self._real = real

    async def add(self, link: Link) -> None:
        raise InjectedCrash("process died between creating the account and the link")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class CrashingUnitOfWork:
    def __init__(self, real: UnitOfWork) -> None:
        self._real = real
        self.links = _CrashingLinks(real.links)

    async def __aenter__(self) -> Self:
        await self._real.__aenter__()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._real.__aexit__(t, e, tb)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def crash_on_link(container: Container) -> None:
    real: UnitOfWorkFactory = container.uow()
    container.uow.override(providers.Object(lambda: CrashingUnitOfWork(real())))
