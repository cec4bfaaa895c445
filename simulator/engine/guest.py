"""Guest access streams: which GFNs a vCPU touches, and how often it writes.

Races are rare if guests touch memory uniformly, so a pattern has a *hot*
set the workload can aim at the region being torn down.  Both sets are
lists of (first gfn, count) ranges; the draw is a bisect over cumulative sizes.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence

Ranges = Sequence[tuple[int, int]]


class _Table:
    __slots__ = ("starts", "cum", "total")

    def __init__(self, ranges: Ranges) -> None:
        self.starts: list[int] = []
        self.cum: list[int] = []
        total = 0
        for start, n in ranges:
            if n <= 0:
                continue
            self.starts.append(start - total)  # gfn = starts[i] + x for x in [cum[i-1], cum[i])
            total += n
            self.cum.append(total)
        self.total = total


class AccessPattern:
    """``next_access`` returns ``gfn << 1 | is_write`` (see riscv.hart.GuestProgram)."""

    def __init__(self, ranges: Ranges, hot: Ranges = (), hot_prob: float = 0.0, write_ratio: float = 0.25) -> None:
        self._all = _Table(ranges)
        if not self._all.total:
            raise ValueError("an access pattern needs at least one non-empty range")
        self.write_ratio = write_ratio
        self.aim(hot, hot_prob)

    def aim(self, hot: Ranges, hot_prob: float) -> None:
        """Point the hot set somewhere else (e.g. at the region about to be torn down)."""
        self._hot = _Table(hot)
        self.hot_prob = hot_prob if self._hot.total else 0.0

    def next_access(self, rng: random.Random) -> int:
        rnd = rng.random
        t = self._hot if self.hot_prob and rnd() < self.hot_prob else self._all
        x = int(rnd() * t.total)
        gfn = t.starts[bisect_right(t.cum, x)] + x
        return gfn << 1 | (rnd() < self.write_ratio)
