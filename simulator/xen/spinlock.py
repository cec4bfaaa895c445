"""Xen's locks (xen/common/spinlock.c, xen/include/xen/rwlock.h), blocking through the conductor.

A lock that is taken is a scheduling choice: ``wait`` is the conductor's
block, handed in by the caller, so these classes know nothing of the engine
beyond something with ``notify()`` to wake the actors waiting on them, and a
clock to charge (the model's: a lock's atomic and its cache line cost cycles
under the ``timed`` strategy; a write hold's length is reported).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

Cond = Callable[[], bool]


class Notifier(Protocol):
    costs: Any

    def notify(self) -> None: ...
    def charge(self, cycles: int) -> None: ...
    def now(self) -> int: ...
    def held(self, name: str, cycles: int) -> None: ...


class LockError(Exception):
    """A lock used the wrong way (taken twice, released by another): a bug in the model, not a race."""


class SpinLock:
    """A lock that blocks through the conductor, so contention is a scheduling choice."""

    __slots__ = ("conductor", "holder", "name")

    def __init__(self, conductor: Notifier, name: str) -> None:
        self.conductor = conductor
        self.name = name
        self.holder: str | None = None

    async def acquire(self, who: str, wait: Callable[[Cond, str], Awaitable[None]]) -> None:
        if self.holder is not None:
            if self.holder == who:
                raise LockError(f"{who} takes {self.name} twice")
            await wait(lambda: self.holder is None, f"{self.name} held by {self.holder}")
            self.conductor.charge(self.conductor.costs.lock_contended)
        else:
            self.conductor.charge(self.conductor.costs.lock)
        self.holder = who

    def release(self, who: str) -> None:
        if self.holder != who:
            raise LockError(f"{who} releases {self.name} held by {self.holder}")
        self.holder = None
        self.conductor.notify()


class RwLock:
    """p2m->lock: many readers or one writer; writers are not starved by design here."""

    __slots__ = ("conductor", "name", "readers", "since", "writer")

    def __init__(self, conductor: Notifier, name: str) -> None:
        self.conductor = conductor
        self.name = name
        self.writer: str | None = None
        self.readers: list[str] = []
        self.since = 0  # when the writer took it (virtual cycles)

    def _desc(self) -> str:
        if self.writer:
            return f"{self.name} (write-held by {self.writer})"
        return f"{self.name} (read-held by {', '.join(self.readers)})"

    async def write_lock(self, who: str, wait: Callable[[Cond, str], Awaitable[None]]) -> None:
        if self.writer == who:
            raise LockError(f"{who} write-locks {self.name} twice")
        if self.writer is not None or self.readers:
            await wait(lambda: self.writer is None and not self.readers, self._desc())
            self.conductor.charge(self.conductor.costs.lock_contended)
        else:
            self.conductor.charge(self.conductor.costs.lock)
        self.writer = who
        self.since = self.conductor.now()

    def write_unlock(self, who: str) -> None:
        if self.writer != who:
            raise LockError(f"{who} write-unlocks {self.name} held by {self.writer}")
        self.writer = None
        self.conductor.held(self.name, self.conductor.now() - self.since)
        self.conductor.notify()

    async def read_lock(self, who: str, wait: Callable[[Cond, str], Awaitable[None]]) -> None:
        if self.writer is not None:
            await wait(lambda: self.writer is None, self._desc())
            self.conductor.charge(self.conductor.costs.lock_contended)
        else:
            self.conductor.charge(self.conductor.costs.lock)
        self.readers.append(who)

    def read_unlock(self, who: str) -> None:
        self.readers.remove(who)
        self.conductor.notify()
