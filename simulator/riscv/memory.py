"""Host memory: frames with a state, an owner, a count and an allocation generation.

This is the ground truth the oracle trusts.  Two numbers make stale use
detectable without trusting Xen:

* ``gen[mfn]`` increments each time the frame is handed out (heap -> domain,
  heap -> pool, pool -> p2m table ...); it is what users read in reports.
* ``stamp[mfn]`` is the value of a global allocation clock when the frame was
  last handed out.  Every PTE store also records the clock (the *ghost* of the
  PTE).  A translation built from a PTE whose ghost is older than its target's
  stamp points at a frame that was freed and handed out again since the mapping
  was made: that is the definition of a use-after-reuse.

Only table frames store contents, as ``array('Q')`` of 512 PTEs.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.riscv.observer import Observer

# frame states
FREE = 0  # in the heap
XEN = 1  # Xen's own (xenheap)
DOMAIN = 2  # a domain's page (RAM)
TABLE = 3  # a P2M page-table page (root pages included)
METADATA = 4  # a P2M metadata page (external types)
POOL = 5  # in a domain's P2M pool freelist: allocated from the heap, unused

STATE_NAMES = ("free", "xen", "domain", "table", "metadata", "pool")
NO_OWNER = -1
ENTRIES = 512


class Memory:
    def __init__(self, nr_frames: int, observer: Observer) -> None:
        if nr_frames <= 0 or nr_frames & (nr_frames - 1):
            raise ValueError(f"memory must be a power of two number of frames, not {nr_frames}")
        self.nr_frames = nr_frames
        self.state = bytearray(nr_frames)
        self.owner = array("i", [NO_OWNER]) * nr_frames
        self.count = array("q", [0]) * nr_frames  # Xen's count_info, see xen/mm.py
        self.gen = array("L", [0]) * nr_frames
        self.stamp = array("Q", [0]) * nr_frames
        self.clock = 0
        self.tables: dict[int, array[int]] = {}
        self.ghosts: dict[int, array[int]] = {}
        self.observer = observer

    # -- ownership ---------------------------------------------------------------

    def hand_out(self, mfn: int, state: int, owner: int, why: str) -> None:
        """The frame starts a new life: new generation, new stamp."""
        self.clock += 1
        self.gen[mfn] += 1
        self.stamp[mfn] = self.clock
        self.state[mfn] = state
        self.owner[mfn] = owner
        self.observer.on_hand_out(mfn, state, owner, self.gen[mfn], why)

    def retire(self, mfn: int, state: int, why: str) -> None:
        """The frame's life ends (to the heap, or back to a pool freelist)."""
        old = self.state[mfn]
        self.state[mfn] = state
        if state == FREE:
            self.owner[mfn] = NO_OWNER
        self.observer.on_retire(mfn, old, state, self.gen[mfn], why)

    def set_owner(self, mfn: int, owner: int) -> None:
        self.owner[mfn] = owner

    # -- table contents ----------------------------------------------------------

    def table(self, mfn: int) -> array[int]:
        t = self.tables.get(mfn)
        if t is None:
            t = self.tables[mfn] = array("Q", bytes(8 * ENTRIES))
            self.ghosts[mfn] = array("Q", bytes(8 * ENTRIES))
        return t

    def read_pte(self, mfn: int, idx: int) -> tuple[int, int]:
        """(PTE value, ghost clock) - what a walker or Xen reads."""
        t = self.tables.get(mfn)
        if t is None:
            return 0, 0
        return t[idx], self.ghosts[mfn][idx]

    def write_pte(self, mfn: int, idx: int, value: int) -> int:
        """One atomic 64-bit store; returns the old value."""
        t = self.table(mfn)
        old = t[idx]
        t[idx] = value
        self.ghosts[mfn][idx] = self.clock
        self.observer.on_pte_write(mfn, idx, old, value)
        return old

    def clear_page(self, mfn: int) -> None:
        """clear_page()/scrub: a frame's contents become zero."""
        t = self.tables.get(mfn)
        if t is not None:
            t[:] = array("Q", bytes(8 * ENTRIES))
            self.ghosts[mfn][:] = array("Q", bytes(8 * ENTRIES))

    def describe(self, mfn: int) -> str:
        st = STATE_NAMES[self.state[mfn]]
        own = self.owner[mfn]
        who = f" of dom{own}" if own != NO_OWNER else ""
        return f"{st}{who} (gen {self.gen[mfn]})"
