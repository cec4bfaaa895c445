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

Whether such a use does harm depends on where the frame is in its new life,
so the machine keeps three facts per frame (each one byte):

* ``scrubbed``: its contents were zeroed and nobody has stored into it since it
  was last freed - whatever lands now survives into the next owner;
* ``assigned``: the new owner has it (``assign_page`` for RAM; for Xen's own
  tables and metadata, the clear that makes them live);
* ``written``: something legitimate stored into it in this life (a guest write
  through a current translation, a PTE or metadata store): it holds data a
  stale reader must not see.

Only table frames store contents, as 512 PTEs each: an ``array('Q')`` per frame, or (``contiguous``,
when a Xen tree's C runs as the hypervisor) a slice of one buffer laid out as the direct map is,
so that C which reads past the end of a table reads the next frame, as it would on the machine.
"""

from __future__ import annotations

import mmap
from array import array
from typing import TYPE_CHECKING, Any

from simulator.riscv.costs import ZERO, Costs

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
    def __init__(self, nr_frames: int, observer: Observer, contiguous: bool = False) -> None:
        if nr_frames <= 0 or nr_frames % 512:
            raise ValueError(f"memory must be a whole number of 2 MiB superpages (512 frames), not {nr_frames}")
        self.nr_frames = nr_frames
        self.state = bytearray(nr_frames)
        self.owner = array("i", [NO_OWNER]) * nr_frames
        self.count = array("q", [0]) * nr_frames  # Xen's count_info, see xen/mm.py
        self.gen = array("L", [0]) * nr_frames
        self.stamp = array("Q", [0]) * nr_frames
        self.scrubbed = bytearray(nr_frames)
        self.assigned = bytearray(nr_frames)
        self.written = bytearray(nr_frames)
        self.clock = 0
        self.tables: dict[int, array[int]] = {}
        self.ghosts: dict[int, array[int]] = {}
        self.observer = observer
        # virtual time (the timed strategy): who is charged for the stores and scrubs, at what cost
        self.charge_to: Any = None
        self.costs: Costs = ZERO
        # the direct map (contiguous): every frame's 4 KiB, plus 3 frames of zeros past the last one,
        # so that a read of a 16 KiB root-sized table at the end stays in the buffer
        self.direct_map: mmap.mmap | None = mmap.mmap(-1, (nr_frames + 3) * 4096) if contiguous else None
        self._words = memoryview(self.direct_map).cast("Q") if self.direct_map is not None else None

    # -- ownership ---------------------------------------------------------------

    def hand_out(self, mfn: int, state: int, owner: int, why: str) -> None:
        """The frame starts a new life: new generation, new stamp, nobody has it yet.

        ``owner`` is whom it is meant for (for the narrative); the frame is the
        owner's only from ``assign`` on, as in Xen, where ``assign_pages`` runs
        after ``alloc_heap_pages`` returns.
        """
        self.clock += 1
        self.gen[mfn] += 1
        self.stamp[mfn] = self.clock
        self.state[mfn] = state
        self.owner[mfn] = NO_OWNER
        self.assigned[mfn] = 0
        self.written[mfn] = 0
        self.observer.on_hand_out(mfn, state, owner, self.gen[mfn], why)

    def assign(self, mfn: int, owner: int) -> None:
        """The new owner has the frame (``owner`` is NO_OWNER for Xen's own pages)."""
        self.owner[mfn] = owner
        self.assigned[mfn] = 1
        self.observer.on_assign(mfn, owner)

    def retire(self, mfn: int, state: int, why: str) -> None:
        """The frame's life ends (to the heap, or back to a pool freelist): its contents are the old owner's."""
        old = self.state[mfn]
        self.state[mfn] = state
        self.assigned[mfn] = 0
        self.scrubbed[mfn] = 0
        if state == FREE:
            self.owner[mfn] = NO_OWNER
        self.observer.on_retire(mfn, old, state, self.gen[mfn], why)

    # -- table contents ----------------------------------------------------------

    def table(self, mfn: int) -> array[int]:
        t = self.tables.get(mfn)
        if t is None:
            if self._words is not None:
                t = self.tables[mfn] = self._words[mfn * ENTRIES : (mfn + 1) * ENTRIES]  # type: ignore[assignment]
            else:
                t = self.tables[mfn] = array("Q", bytes(8 * ENTRIES))
            self.ghosts[mfn] = array("Q", bytes(8 * ENTRIES))
        return t

    def load(self, mfn: int, idx: int = -1) -> array[int]:
        """The hypervisor's own load from a table or metadata frame (through its direct map).

        A frame in the heap or a pool freelist is nobody's table: the access is
        reported (``idx`` -1: the whole table is about to be read).
        """
        if self.state[mfn] in (FREE, POOL):
            self.observer.on_hyp_access(mfn, idx, False)
        return self.table(mfn)

    def load_pte(self, mfn: int, idx: int) -> tuple[int, int]:
        """A load of one PTE by the hypervisor (see ``load``)."""
        if self.state[mfn] in (FREE, POOL):
            self.observer.on_hyp_access(mfn, idx, False)
        t = self.tables.get(mfn)  # (read_pte, inline: the model loads a dozen PTEs per page it maps)
        if t is None:
            return 0, 0
        return t[idx], self.ghosts[mfn][idx]

    def read_pte(self, mfn: int, idx: int) -> tuple[int, int]:
        """(PTE value, ghost clock): an implicit read by a walker."""
        t = self.tables.get(mfn)
        if t is None:
            return 0, 0
        return t[idx], self.ghosts[mfn][idx]

    def write_pte(self, mfn: int, idx: int, value: int) -> int:
        """One atomic 64-bit store by the hypervisor; returns the old value."""
        if self.state[mfn] in (FREE, POOL):
            self.observer.on_hyp_access(mfn, idx, True)
        t = self.tables.get(mfn) or self.table(mfn)
        old = t[idx]
        t[idx] = value
        self.ghosts[mfn][idx] = self.clock
        if self.charge_to is not None:
            self.charge_to.charge(self.costs.pte_store)
        self.written[mfn] = 1
        self.scrubbed[mfn] = 0
        self.observer.on_pte_write(mfn, idx, old, value)
        return old

    def update_ad(self, mfn: int, idx: int, value: int) -> None:
        """A hart's hardware A/D update (an atomic CAS, Svadu): the mapping and the PTE's ghost are
        unchanged, and nothing the owner stored is replaced but two bits (the walker reports where)."""
        self.tables[mfn][idx] = value

    def stored(self, mfn: int) -> None:
        """A table frame was filled by plain stores before anyone could walk it (a private table)."""
        self.written[mfn] = 1
        self.scrubbed[mfn] = 0
        self.observer.on_table_stored(mfn)

    def store_data(self, mfn: int, idx: int, value: int) -> None:
        """A plain 64-bit store that is not a PTE (a metadata slot, say): data, never walked as such by Xen."""
        if self.state[mfn] in (FREE, POOL):
            self.observer.on_hyp_access(mfn, idx, True)
        self.table(mfn)[idx] = value
        self.written[mfn] = 1
        self.scrubbed[mfn] = 0

    def clear_page(self, mfn: int, why: str = "clear_page") -> None:
        """clear_page()/scrub: a frame's contents become zero; what is stored after it survives."""
        t = self.tables.get(mfn)
        if t is not None:
            t[:] = array("Q", bytes(8 * ENTRIES))
            self.ghosts[mfn][:] = array("Q", bytes(8 * ENTRIES))
        self.scrubbed[mfn] = 1
        self.written[mfn] = 0
        if self.charge_to is not None:
            self.charge_to.charge(self.costs.scrub_4k)
        self.observer.on_scrub(mfn, why)

    def describe(self, mfn: int) -> str:
        st = STATE_NAMES[self.state[mfn]]
        own = self.owner[mfn]
        who = f" of dom{own}" if own != NO_OWNER else ""
        return f"{st}{who} (gen {self.gen[mfn]})"
