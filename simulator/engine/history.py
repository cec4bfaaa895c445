"""Each frame's life (handed out, assigned, scrubbed, freed), kept compact for guests of many GiB.

The oracle explains a stale use from the history of the frame it reached,
so it must keep every frame's, not only the ones that will matter; a Python
tuple in a list per event cost about 120 bytes, several per mapped page.
Here an event is one row of parallel arrays (about 44 bytes), the events of
a frame are chained from its latest backwards, and a reason string is kept
once, however many frames share it.  ``get`` rebuilds a frame's events as
the tuples the explanations read: ``(seq, hart, kind, stamp, why, gen,
state, owner)``, oldest first.

Invariant: rows are only appended; a frame's chain runs through rows of
that frame alone, newest first (``prev`` -1 ends it).
"""

from __future__ import annotations

from array import array
from typing import Any

KINDS = ("alloc", "reuse", "assign", "scrub", "free")
_KIND = {k: i for i, k in enumerate(KINDS)}

Event = tuple[int, int | None, str, int, str, int, int, int]


class FrameHistory:
    def __init__(self, nr_frames: int) -> None:
        self._last = array("q", [-1]) * nr_frames  # frame -> its newest row, -1: no history
        self._prev = array("q")
        self._seq = array("Q")
        self._hart = array("h")  # -1: the workload driver (None)
        self._kind = array("B")
        self._stamp = array("Q")
        self._why = array("I")
        self._gen = array("Q")
        self._state = array("B")
        self._owner = array("i")
        self._whys: list[str] = []
        self._why_id: dict[str, int] = {}

    def add(self, mfn: int, seq: int, hart: int | None, kind: str, stamp: int, why: str, gen: int, state: int,
            owner: int) -> None:  # fmt: skip
        w = self._why_id.get(why)
        if w is None:
            w = self._why_id[why] = len(self._whys)
            self._whys.append(why)
        self._prev.append(self._last[mfn])
        self._last[mfn] = len(self._seq)
        self._seq.append(seq)
        self._hart.append(-1 if hart is None else hart)
        self._kind.append(_KIND[kind])
        self._stamp.append(stamp)
        self._why.append(w)
        self._gen.append(gen)
        self._state.append(state)
        self._owner.append(owner)

    def __contains__(self, mfn: int) -> bool:
        return 0 <= mfn < len(self._last) and self._last[mfn] >= 0

    def _row(self, i: int) -> Event:
        h = self._hart[i]
        return (
            self._seq[i],
            None if h < 0 else h,
            KINDS[self._kind[i]],
            self._stamp[i],
            self._whys[self._why[i]],
            self._gen[i],
            self._state[i],
            self._owner[i],
        )

    def get(self, mfn: int, default: Any = None) -> list[Event] | Any:
        """The frame's events, oldest first (``default`` if it has none)."""
        if mfn not in self:
            return default
        rows = []
        i = self._last[mfn]
        while i >= 0:
            rows.append(self._row(i))
            i = self._prev[i]
        rows.reverse()
        return rows

    def last(self, mfn: int, kind: str) -> int:
        """The step of the frame's latest event of ``kind``, -1 if none (without rebuilding its events)."""
        if mfn not in self:
            return -1
        k = _KIND[kind]
        i = self._last[mfn]
        while i >= 0:
            if self._kind[i] == k:
                return self._seq[i]
            i = self._prev[i]
        return -1
