"""What a timed run measured: how long hypercalls, flushes and lock holds took, in virtual cycles.

The conductor's clocks say when each action ran (``TimedConductor``); this is
the summary a Xen developer asks of a strategy: a hypercall's duration and how
much of it went on flushes, the p2m write lock's hold, each flush from its
call to its last acknowledgement, and the cycles incoming fences took from the
vCPUs.  Each is kept as count, total and maximum per name.

Invariant: a flush that runs inside a hypercall (on the same actor) adds its
duration to that hypercall's ``flushing``, and no span ends before it begins,
so ``flushing <= total`` for every hypercall (tests/test_timed.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

KINDS = ("hypercalls", "flushes", "lock_holds")


class Timing:
    def __init__(self) -> None:
        self.spans: dict[str, dict[str, list[int]]] = {k: {} for k in KINDS}
        self._open: dict[int, list[int]] = {}  # per actor: the flush cycles of each hypercall it is inside

    def add(self, kind: str, name: str, cycles: int, inner: int = 0) -> None:
        s = self.spans[kind].get(name)
        if s is None:
            self.spans[kind][name] = [1, cycles, cycles, inner]
        else:
            s[0] += 1
            s[1] += cycles
            s[3] += inner
            if cycles > s[2]:
                s[2] = cycles

    def to_json(self, end: int, stalled: list[int], fences_sent: int) -> dict[str, Any]:
        """``end``: the latest clock when the run ended; ``stalled``: per hart, cycles its guest lost to fences."""
        body: dict[str, Any] = {"cycles": end}
        for kind in KINDS:
            body[kind] = {
                name: {"count": n, "total": total, "max": mx, "mean": total // n}
                | ({"flushing": inner} if kind == "hypercalls" else {})
                for name, (n, total, mx, inner) in sorted(self.spans[kind].items())
            }
        body["guest_stall"] = {"total": sum(stalled), "per_hart": stalled}
        body["ipis"] = fences_sent  # one IPI per remote request
        return body

    def timed(self, conductor: Any, kind: str, name: str, fn: Callable[..., Awaitable[Any]]) -> Any:
        """``fn`` with its duration (from its call to its return, on the clock of the actor it ran on) added."""
        stacks = self._open

        async def call(*args: Any, **kwargs: Any) -> Any:
            actor = conductor.current.index
            t0 = conductor.now()
            stack = stacks.setdefault(actor, [])
            if kind == "hypercalls":
                stack.append(0)
            try:
                return await fn(*args, **kwargs)
            finally:
                cycles = conductor.now() - t0
                if kind == "hypercalls":
                    self.add(kind, name, cycles, stack.pop())
                else:
                    self.add(kind, name, cycles)
                    if kind == "flushes" and stack:
                        stack[-1] += cycles

        return call
