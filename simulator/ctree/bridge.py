"""Await the conductor from inside C: the C runs in a greenlet, and each callback it makes into Python
switches to the coroutine that started it, which awaits the step and switches back.

This is SQLAlchemy's ``greenlet_spawn`` / ``await_only`` shape: one OS thread,
no event loop of the C's own, so a run is as deterministic with C in it as
without, on trio and on asyncio.  Invariants: a callback calls ``await_only``
only while the C was started by ``greenlet_spawn`` (else it is refused with
the reason); an exception in the awaited coroutine is raised inside the
greenlet, at the callback, so the C's caller sees it when the C returns to
Python (cffi reports an exception in a callback and returns its error value:
the harness records the exception and the spawn re-raises it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")


class BridgeError(RuntimeError):
    """await_only outside greenlet_spawn: C called back into the simulation from where nothing can await."""


class _Spawned(greenlet.greenlet):  # type: ignore[misc]
    """A greenlet started by greenlet_spawn: the only kind from which await_only may switch."""

    failure: BaseException | None = None  # an exception a C callback could not raise through the C
    frames: Callable[[], list[str]] | None = None  # the C functions it is in now, innermost first


def await_only(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` from synchronous code running under greenlet_spawn (a C callback)."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Spawned):
        raise BridgeError("await_only() called outside greenlet_spawn(): run the C through greenlet_spawn")
    return current.parent.switch(awaitable)  # type: ignore[no-any-return]


def fail(exc: BaseException) -> None:
    """From a C callback: remember ``exc`` (cffi cannot raise it through the C); greenlet_spawn raises it."""
    current = greenlet.getcurrent()
    if isinstance(current, _Spawned) and current.failure is None:
        current.failure = exc


async def greenlet_spawn(
    fn: Callable[..., T],
    *args: Any,
    enter: Callable[[], object] | None = None,
    frames: Callable[[], list[str]] | None = None,
) -> T:
    """Run ``fn(*args)`` (a C function) so that its callbacks may ``await_only``; return its result.

    ``enter`` runs before every switch into the C (to make its context current:
    other harts' C runs between two callbacks of this one); ``frames`` names the
    C functions it is in, for ``spawned_frames``.
    """
    g = _Spawned(fn)
    g.frames = frames
    if enter is not None:
        enter()
    result = g.switch(*args)
    while not g.dead:
        try:
            value = await result
        except BaseException as exc:  # the step failed (a stop, a deadlock): raise it at the callback
            if enter is not None:
                enter()
            result = g.throw(exc)
        else:
            if enter is not None:
                enter()
            result = g.switch(value)
    if g.failure is not None:
        raise g.failure
    return result  # type: ignore[no-any-return]


def spawned_frames(frame: Any) -> list[str] | None:
    """The C functions a suspended greenlet_spawn ``frame`` is in (innermost first), None for any other frame."""
    if frame.f_code is not greenlet_spawn.__code__:
        return None
    g = frame.f_locals.get("g")
    if not isinstance(g, _Spawned) or g.frames is None:
        return []
    return g.frames()


def callback_origin() -> tuple[list[str], Any] | None:
    """From a C callback (the code runs in a greenlet_spawn greenlet): the C functions it was called from
    (innermost first) and the frame where the Python that started the C waits; None elsewhere."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Spawned) or current.parent is None:
        return None
    return (current.frames() if current.frames is not None else []), current.parent.gr_frame
