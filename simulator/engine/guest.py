"""Guest access streams: which GFNs a vCPU touches, and how often it writes.

Races are rare if guests touch memory uniformly, so a pattern has a *hot*
set the workload can aim at the region being torn down.  Both sets are
lists of (first gfn, count) ranges; the draw is a bisect over cumulative sizes.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence

try:
    import numpy as np
except ImportError:  # the draw below has a pure-Python twin that gives the same accesses
    np = None  # type: ignore[assignment]

Ranges = Sequence[tuple[int, int]]


def subtract(ranges: Ranges, holes: Ranges) -> list[tuple[int, int]]:
    """``ranges`` minus ``holes`` (both lists of (first gfn, count)): what a guest still has."""
    out = list(ranges)
    for h0, hn in holes:
        nxt = []
        for g, k in out:
            if g + k <= h0 or h0 + hn <= g:
                nxt.append((g, k))
                continue
            if g < h0:
                nxt.append((g, h0 - g))
            if h0 + hn < g + k:
                nxt.append((h0 + hn, g + k - h0 - hn))
        out = nxt
    return out


class _Table:
    __slots__ = ("cum", "starts", "total")

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


_VECTOR_MAX = 1 << 31  # (r >> 8) * total stays within 64 bits
if np is not None:
    _U5, _U8, _U24, _U32, _U38, _U56, _U255 = (np.uint64(x) for x in (5, 8, 24, 0xFFFFFFFF, 38, 56, 255))


class AccessPattern:
    """``next_access`` returns ``gfn << 1 | is_write`` (see riscv.hart.GuestProgram).

    One 40-bit draw per access: the low 8 bits decide read or write, the high
    32 bits the page (a multiply-shift, no modulo bias worth speaking of).
    """

    def __init__(self, ranges: Ranges, hot: Ranges = (), hot_prob: float = 0.0, write_ratio: float = 0.25) -> None:
        if not 0.0 <= write_ratio <= 1.0 or not 0.0 <= hot_prob <= 1.0:
            raise ValueError("write_ratio and hot_prob are probabilities")
        self.write_ratio = write_ratio
        self._w256 = round(write_ratio * 256)
        self.cover(ranges)
        self.aim(hot, hot_prob)

    def cover(self, ranges: Ranges) -> None:
        """Replace the whole set (e.g. after the guest gave memory back)."""
        table = _Table(ranges)
        if not table.total:
            raise ValueError("an access pattern needs at least one non-empty range")
        self._all = table

    def aim(self, hot: Ranges, hot_prob: float) -> None:
        """Point the hot set somewhere else (e.g. at the region about to be torn down)."""
        self._hot = _Table(hot)
        self.hot_prob = hot_prob if self._hot.total else 0.0

    def next_accesses(self, rng: random.Random, n: int) -> list[int]:
        """The next ``n`` accesses at once (the hart's hot loop consumes them): the same values,
        and the same state of ``rng`` after, as ``n`` calls of ``next_access``."""
        if np is not None and n > 0 and self._all.total < _VECTOR_MAX and self._hot.total < _VECTOR_MAX:
            return self._vector(rng, n)
        t = self._all
        if self.hot_prob or len(t.cum) != 1:
            return [self.next_access(rng) for _ in range(n)]
        bits = rng.getrandbits
        start, total, w = t.starts[0], t.total, self._w256
        return [(start + (((r >> 8) * total) >> 32)) << 1 | ((r & 255) < w) for r in map(bits, [40] * n)]

    def _vector(self, rng: random.Random, n: int) -> list[int]:
        """``next_accesses`` from one draw of the Mersenne Twister's words, in numpy.

        CPython's ``getrandbits(k)`` for k > 32 takes ceil(k/32) 32-bit words, least
        significant first, the last shifted right to k's remainder; ``random()`` takes
        two words a, b and returns ((a >> 5) * 2**26 + (b >> 6)) / 2**53, exact in a double.
        So an access is 2 words (4 with a hot set: random() first), and one
        ``getrandbits(32 * words)`` yields the very words the calls would have taken.
        """
        per = 2 if self.hot_prob else 1  # 64-bit pairs of words per access
        q = np.frombuffer(rng.getrandbits(64 * per * n).to_bytes(8 * per * n, "little"), dtype="<u8")
        if per == 2:
            q = q.reshape(n, 2)
            ab, q = q[:, 0], q[:, 1]
        # getrandbits(40) >> 8: the first word's high 24 bits under the second word's top 8
        high = (q & _U32) >> _U8 | (q >> _U56) << _U24
        gfn = self._gfns(self._all, high)
        if per == 2:
            u = ((ab & _U32) >> _U5).astype(np.float64) * 67108864.0 + (ab >> _U38)
            hot = u < self.hot_prob * 9007199254740992.0  # u / 2**53 < p, exactly
            if hot.any():
                gfn = np.where(hot, self._gfns(self._hot, high), gfn)
        gfn <<= 1
        gfn |= (q & _U255) < self._w256
        return gfn.tolist()  # type: ignore[no-any-return]

    @staticmethod
    def _gfns(t: _Table, high: object) -> object:
        x = ((high * np.uint64(t.total)) >> np.uint64(32)).astype(np.int64)
        if len(t.cum) == 1:
            return x + t.starts[0]
        return np.asarray(t.starts, dtype=np.int64)[np.searchsorted(t.cum, x, side="right")] + x

    def next_access(self, rng: random.Random) -> int:
        t = self._hot if self.hot_prob and rng.random() < self.hot_prob else self._all
        r = rng.getrandbits(40)
        x = ((r >> 8) * t.total) >> 32
        cum = t.cum
        gfn = t.starts[0 if len(cum) == 1 else bisect_right(cum, x)] + x
        return gfn << 1 | ((r & 255) < self._w256)
