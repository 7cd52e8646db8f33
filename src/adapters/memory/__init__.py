"""In-memory adapters: the whole store lives in one process, one transaction at a time."""

from adapters.memory.store import MemoryDatabase, MemoryUnitOfWork

__all__ = ["MemoryDatabase", "MemoryUnitOfWork"]
