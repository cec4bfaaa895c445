"""The oracle's history (a frame's life, a PTE slot's stores, a frame's puts), compact for guests of many GiB.

The oracle explains a stale use from the history of what it reached, so it
must keep the history of every frame and every PTE slot, not only of those
that will matter; a Python tuple in a list per event cost 100-250 bytes, and
a mapped page has several.  Here an event is one row of typed parallel arrays
(``Chained``: 30-50 bytes), the events of one key are chained from the newest
backwards, a string (a reason, a caller) is kept once however many rows share
it, and the head of each chain sits in a per-frame array (``FrameHeads``) or,
for PTE slots, in a 512-entry array per table (``SlotHeads``).  ``get`` gives
a key's events back as the tuples the explanations read, oldest first.

Invariant: rows are only appended (a field of a ``Rows`` may change, as the count of a run of
flushes does; a chain never does); a key's chain runs through rows of that
key alone, newest first (-1 ends it).
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Callable
from typing import Any

KINDS = ("alloc", "reuse", "assign", "scrub", "free")


# The reasons the model's frees give (``Memory.retire``'s ``why``) that do not begin with the C function
# that freed the frame: free_domheap_page's of an owned page, p2m_final_teardown's root,
# free_xenheap_pages' struct domain.  Every other reason begins with it (``p2m_free_page -> dom1 p2m pool
# (tail)``); a double free's is ``double free (<the reason>)``.
_FREED_BY = (
    ("last reference to a page of ", "free_domheap_page"),
    ("p2m root of ", "p2m_final_teardown"),
    ("struct domain of ", "free_xenheap_pages"),
)


def freed_by(why: str, default: str) -> str:
    """The C function that freed a frame, from its free's reason (``default`` if the reason names none)."""
    if why.startswith("double free (") and why.endswith(")"):
        why = why[len("double free (") : -1]
    for prefix, fn in _FREED_BY:
        if why.startswith(prefix):
            return fn
    head = why.split(" ")[0].split("(")[0]
    return head if head.isidentifier() else default


class FrameHeads:
    """The newest row of each frame, in a per-frame array (a frame beyond memory, MMIO, in a dict)."""

    def __init__(self, nr_frames: int) -> None:
        self._a = array("q", [-1]) * nr_frames
        self._far: dict[int, int] = {}

    def get(self, key: int) -> int:
        return self._a[key] if 0 <= key < len(self._a) else self._far.get(key, -1)

    def set(self, key: int, row: int) -> None:
        if 0 <= key < len(self._a):
            self._a[key] = row
        else:
            self._far[key] = row


class SlotHeads:
    """The newest row of each PTE slot (``table << 9 | idx``), in a 512-entry array per table."""

    def __init__(self) -> None:
        self._t: dict[int, array[int]] = {}

    def get(self, key: int) -> int:
        a = self._t.get(key >> 9)
        return -1 if a is None else a[key & 511]

    def set(self, key: int, row: int) -> None:
        a = self._t.get(key >> 9)
        if a is None:
            a = self._t[key >> 9] = array("q", [-1]) * 512
        a[key & 511] = row


@functools.cache
def _append_maker(kinds: str) -> Any:
    """The maker of ``Rows.append`` for columns of these kinds, compiled once per kind string."""
    cols = [f"c{i}" for i in range(len(kinds))]
    args = ", ".join(f"v{i}" for i in range(len(kinds)))
    body = []
    for i, kind in enumerate(kinds):
        if kind == "s":
            body.append(f"        i = ids.get(v{i})\n        c{i}(intern(v{i}) if i is None else i)")
        elif kind == "o":
            body.append(f"        c{i}(-1 if v{i} is None else v{i})")
        else:
            body.append(f"        c{i}(v{i})")
    source = f"def make({', '.join(cols)}, ids, intern):\n    def append({args}):\n" + "\n".join(body)
    scope: dict[str, Any] = {}
    exec(source + "\n    return append", scope)  # (the kinds are ours: no input reaches it)
    return scope["make"]


class Rows:
    """Rows of typed parallel arrays.  ``columns``: an array typecode per field, or ``s`` for a string
    (kept once) and ``o`` for a small int that may be None (a hart: the workload driver is None)."""

    append: Callable[..., None]  # (values...): one row; made per instance by ``_appender``

    def __init__(self, columns: str) -> None:
        self._kinds = columns
        self._cols = [array("I" if c == "s" else "h" if c == "o" else c) for c in columns]
        self._strs: list[str] = []
        self._str_id: dict[str, int] = {}
        self.append = self._appender()

    def _appender(self) -> Any:
        """``append(*values)`` written out for these columns, one statement per column: rows are appended
        millions of times, and a loop over the columns testing each one's kind cost 5% of a big guest's
        instructions per page more (callgrind, big-guest -p mib=32).  Too few or too many values raise
        TypeError, as a call with the wrong arguments does."""
        return _append_maker(self._kinds)(*(col.append for col in self._cols), self._str_id, self._intern)

    def _intern(self, v: str) -> int:
        i = self._str_id[v] = len(self._strs)
        self._strs.append(v)
        return i

    def __len__(self) -> int:
        return len(self._cols[0])

    def row(self, row: int) -> tuple[Any, ...]:
        """Row ``row`` as the values it was given."""
        return self._row(row)

    def value(self, row: int, c: int) -> Any:
        """Field ``c`` of row ``row``."""
        return self._value(c, row)

    def put(self, row: int, c: int, v: int | None) -> None:
        """Change an int field of a row (a run's count); a string field is not changed this way."""
        if self._kinds[c] == "s":
            raise TypeError("put: a string column is kept once per string; append a new row instead")
        self._cols[c][row] = -1 if v is None and self._kinds[c] == "o" else v

    def _value(self, c: int, row: int) -> Any:
        v = self._cols[c][row]
        kind = self._kinds[c]
        if kind == "s":
            return self._strs[v]
        if kind == "o" and v < 0:
            return None
        return v

    def _row(self, row: int) -> tuple[Any, ...]:
        return tuple(self._value(c, row) for c in range(len(self._cols)))


class Chained(Rows):
    """Events keyed by an int, each key's rows chained from its newest (see ``Rows`` for ``columns``)."""

    def __init__(self, columns: str, heads: FrameHeads | SlotHeads) -> None:
        super().__init__(columns)
        self._heads = heads
        self._prev = array("q")

    def add(self, key: int, *values: Any) -> None:
        self._prev.append(self._heads.get(key))
        self._heads.set(key, len(self._prev) - 1)
        self.append(*values)

    def __contains__(self, key: int) -> bool:
        return self._heads.get(key) >= 0

    def _rows(self, key: int) -> list[int]:
        """The key's rows, newest first."""
        out = []
        row = self._heads.get(key)
        while row >= 0:
            out.append(row)
            row = self._prev[row]
        return out

    def get(self, key: int, default: Any = None) -> list[tuple[Any, ...]] | Any:
        """The key's events, oldest first (``default`` if it has none)."""
        rows = self._rows(key)
        if not rows:
            return default
        return [ev for r in reversed(rows) for ev in self._events(r)]

    def _events(self, row: int) -> list[tuple[Any, ...]]:
        """The events a row holds, oldest first: itself (a subclass may keep a second one on it)."""
        return [self._row(row)]


class FrameHistory(Chained):
    """A frame's life: ``(seq, hart, kind, stamp, why, gen, state, owner)``; a free also keeps what the
    freeing hart was doing (``free_op``).

    Nearly every frame is assigned to its owner just after it is handed out (assign_pages after
    alloc_domheap_pages): that assign is kept on the hand-out's row, as the steps between the two,
    not as a row of its own, and ``get`` gives it back as its own event.
    """

    _ASSIGNED = 9  # the column: steps from the hand-out to the assign, plus one (0: not assigned on this row)

    def __init__(self, nr_frames: int) -> None:
        super().__init__("QosQsQBisI", FrameHeads(nr_frames))

    def add(  # type: ignore[override]
        self, mfn: int, seq: int, hart: int | None, kind: str, stamp: int, why: str, gen: int, state: int,
        owner: int, op: str = "",
    ) -> None:  # fmt: skip
        super().add(mfn, seq, hart, kind, stamp, why, gen, state, owner, op, 0)

    def add_assign(self, mfn: int, seq: int, hart: int | None, gen: int, state: int, owner: int) -> None:
        """``(seq, hart, "assign", 0, "", gen, state, owner)``: on the hand-out's row when it is the frame's
        newest and says the same of it (hart, generation, state, owner), else a row of its own."""
        row = self._heads.get(mfn)
        if row >= 0 and self._value(2, row) in ("alloc", "reuse") and not self._cols[self._ASSIGNED][row]:
            steps = seq - self._cols[0][row]
            if (self._value(1, row), self._cols[5][row], self._cols[6][row], self._cols[7][row]) == (
                hart, gen, state, owner,
            ) and 0 <= steps < 0xFFFFFFFE:  # fmt: skip
                self._cols[self._ASSIGNED][row] = steps + 1
                return
        self.add(mfn, seq, hart, "assign", 0, "", gen, state, owner)

    def _events(self, row: int) -> list[tuple[Any, ...]]:
        """The row's event, and the assign kept on it as an event of its own."""
        ev = self._row(row)
        steps = self._cols[self._ASSIGNED][row]
        if not steps:
            return [ev]
        seq, hart, _kind, _stamp, _why, gen, state, owner = ev
        return [ev, (seq + steps - 1, hart, "assign", 0, "", gen, state, owner)]

    def _row(self, row: int) -> tuple[Any, ...]:
        return super()._row(row)[:8]

    def last(self, mfn: int, kind: str) -> int:
        """The step of the frame's latest event of ``kind``, -1 if none."""
        row = self._heads.get(mfn)
        while row >= 0:
            if kind == "assign" and self._cols[self._ASSIGNED][row]:
                return self._cols[0][row] + self._cols[self._ASSIGNED][row] - 1
            if self._value(2, row) == kind:
                return self._cols[0][row]
            row = self._prev[row]
        return -1

    def free_op(self, mfn: int, seq: int, default: str) -> str:
        """What the hart that freed ``mfn`` at step ``seq`` was doing."""
        row = self._heads.get(mfn)
        while row >= 0:
            if self._value(2, row) == "free" and self._cols[0][row] == seq:
                return self._value(8, row)
            row = self._prev[row]
        return default


class SlotLast:
    """The last store into each PTE slot: ``(seq, hart, value)``, in 512-entry arrays per table."""

    def __init__(self) -> None:
        self._t: dict[int, tuple[array[int], array[int], array[int]]] = {}

    def set(self, table: int, idx: int, seq: int, hart: int | None, value: int) -> None:
        cols = self._t.get(table)
        if cols is None:
            cols = self._t[table] = (array("q", [-1]) * 512, array("h", [-1]) * 512, array("Q", [0]) * 512)
        cols[0][idx] = seq
        cols[1][idx] = -1 if hart is None else hart
        cols[2][idx] = value

    def get(self, table: int, idx: int) -> tuple[int, int | None, int] | None:
        cols = self._t.get(table)
        if cols is None or cols[0][idx] < 0:
            return None
        h = cols[1][idx]
        return cols[0][idx], (None if h < 0 else h), cols[2][idx]


class PutPaths:
    """The C call path of each frame's last put_page, innermost first: a per-frame index into the
    distinct paths (a teardown puts millions of frames through a handful of paths)."""

    def __init__(self, nr_frames: int) -> None:
        self._a = array("I", [0]) * nr_frames  # 0: no put yet; else the path's index + 1
        self._far: dict[int, int] = {}
        self._paths: list[list[str]] = []
        self._ids: dict[tuple[str, ...], int] = {}

    def set(self, mfn: int, path: list[str]) -> None:
        i = self._ids.get(tuple(path))
        if i is None:
            i = self._ids[tuple(path)] = len(self._paths)
            self._paths.append(list(path))
        if 0 <= mfn < len(self._a):
            self._a[mfn] = i + 1
        else:
            self._far[mfn] = i + 1

    def get(self, mfn: int, default: list[str]) -> list[str]:
        """The path (never to be changed: every frame put that way shares it), or ``default``."""
        i = self._a[mfn] if 0 <= mfn < len(self._a) else self._far.get(mfn, 0)
        return self._paths[i - 1] if i else default
