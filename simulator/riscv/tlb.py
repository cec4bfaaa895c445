"""A hart-private, incoherent G-stage translation cache.

The spec lets a hart cache leaf AND non-leaf PTEs, tagged by VMID, and keep
them across traps, privilege changes and hgatp writes until a local
HFENCE.GVMA removes them.  Emulators that flush more eagerly (QEMU, Spike)
hide exactly the bugs p2msim hunts, so this cache never drops an entry
except by a fence or by capacity eviction.

Keys are plain ints, ``((vmid << 3 | level) << 48) | (gfn >> 9*level)``, so a
lookup is one dict probe per level.
"""

from __future__ import annotations

import random
from array import array
from typing import Any

from simulator.riscv.pte import PTE_W


class TlbEntry:
    """One cached PTE and what it was derived from.

    ``ghost`` is the allocation clock when the PTE was stored (see
    ``riscv.memory``); ``src_mfn``/``src_idx``/``src_pte`` say where it was read,
    so a later use can tell whether the PTE has changed since.
    """

    __slots__ = (
        "delta",
        "faults",
        "fill_seq",
        "gfn_base",
        "ghost",
        "hot",
        "key",
        "leaf",
        "level",
        "marks",
        "negative",
        "path",
        "perms",
        "ppn",
        "reported",
        "root_mfn",
        "spec",
        "src_idx",
        "src_mfn",
        "src_pte",
        "src_table",
        "via",
        "vmid",
    )

    def __init__(
        self,
        key: int,
        leaf: bool,
        vmid: int,
        level: int,
        gfn_base: int,
        ppn: int,
        perms: int,
        ghost: int,
        src_mfn: int,
        src_idx: int,
        src_pte: int,
        root_mfn: int,
        fill_seq: int,
        path: tuple[tuple[int, int, int], ...],
    ) -> None:
        self.key = key
        self.leaf = leaf
        self.vmid = vmid
        self.level = level
        self.gfn_base = gfn_base
        self.ppn = ppn
        self.delta = ppn - gfn_base  # mfn = gfn + delta, one load on the hot path
        self.perms = perms
        self.ghost = ghost
        self.src_mfn = src_mfn
        self.src_idx = src_idx
        self.src_pte = src_pte
        self.src_table: array[int] | None = None  # the source table's contents, for a cheap re-read
        self.root_mfn = root_mfn
        self.fill_seq = fill_seq
        self.path = path  # ((level, table mfn, gen), ...) as walked
        self.reported = False
        self.spec = False  # filled by a speculative walk
        self.via: TlbEntry | None = None  # the cached non-leaf entry the walk started from
        self.negative = False  # an invalid PTE, cached (see Tlb)
        self.faults = 0  # for a negative entry: the faults it raised once the PTE was valid
        self.marks = 0  # bits an observer sets (engine.windows); the hardware never reads them
        self.hot: tuple[Any, ...] = ()  # what a TLB hit reads, in one load (see Hart.run_guest)

    def set_source(self, table: array[int], clean: bool = False) -> None:
        """Remember the source table's contents, and pack the hot-path fields (``clean``: D is clear and
        the hardware updates A/D, so a store must first set it)."""
        self.src_table = table
        # the last field: 0 read-only, 1 writable, 2 a 4K entry whose frame a write already marked,
        # 3 writable but D clear (hardware A/D updating: see Hart.set_dirty)
        w = (3 if clean else 1) if self.perms & PTE_W else 0
        self.hot = (self.delta, self.ghost, table, self.src_idx, self.src_pte, self.root_mfn, w)

    def written_through(self) -> None:
        """A write went through this 4K entry: later writes need not mark its frame again."""
        self.hot = (*self.hot[:6], 2)


def tlb_key(vmid: int, level: int, gfn: int) -> int:
    return (((vmid << 3) | level) << 48) | (gfn >> (9 * level))


MAX_SHADOWS = 3  # older translations kept per key when the TLB holds several (Tlb.multi)


class _Cache:
    """A dict with O(1) random eviction; iteration order is insertion order, never hash order.

    With ``shadows`` (a TLB that holds several entries for one address) a refill
    with a different translation does not replace the entry: the old one is kept
    beside it, and goes with it when the key is evicted.
    """

    __slots__ = ("capacity", "entries", "gone", "keys", "pos", "shadows")

    def __init__(self, capacity: int, multi: bool = False, gone: list[TlbEntry] | None = None) -> None:
        # gone: where every entry this cache drops is appended, for an observer to judge (Tlb.gone)
        self.gone = gone
        self.entries: dict[int, TlbEntry] = {}
        self.keys: list[int] = []
        self.pos: dict[int, int] = {}
        self.capacity = capacity
        self.shadows: dict[int, list[TlbEntry]] | None = {} if multi else None

    def insert(self, e: TlbEntry, rng: random.Random) -> TlbEntry | None:
        evicted = None
        if e.key in self.entries:
            old = self.entries[e.key]
            if self.shadows is not None and (old.src_pte, old.src_mfn, old.root_mfn) != (
                e.src_pte,
                e.src_mfn,
                e.root_mfn,
            ):
                kept = self.shadows.setdefault(e.key, [])
                kept.append(old)
                if len(kept) > MAX_SHADOWS:
                    if self.gone is not None:
                        self.gone.append(kept[0])
                    del kept[0]
            elif self.gone is not None:
                self.gone.append(old)  # replaced by the refill
            self.entries[e.key] = e
            return None
        n = len(self.keys)
        if n >= self.capacity:
            # rng.randrange(n), inline: the same draws (random.Random._randbelow_with_getrandbits)
            getrandbits = rng.getrandbits
            k = n.bit_length()
            r = getrandbits(k)
            while r >= n:
                r = getrandbits(k)
            victim = self.keys[r]
            evicted = self.entries[victim]
            self.remove(victim)
        self.entries[e.key] = e
        self.pos[e.key] = len(self.keys)
        self.keys.append(e.key)
        return evicted

    def remove(self, key: int) -> None:
        i = self.pos.pop(key)
        last = self.keys.pop()
        if last != key:
            self.keys[i] = last
            self.pos[last] = i
        e = self.entries.pop(key)
        if self.shadows:
            kept = self.shadows.pop(key, None)
            if kept and self.gone is not None:
                self.gone.extend(kept)
        if self.gone is not None:
            self.gone.append(e)

    def remove_if(self, pred) -> int:  # type: ignore[no-untyped-def]
        shadows = self.shadows
        removed = 0
        if shadows:
            for k in [k for k in self.keys if k in shadows]:
                kept = [s for s in shadows[k] if not pred(s)]
                if self.gone is not None:
                    self.gone.extend(s for s in shadows[k] if pred(s))
                removed += len(shadows[k]) - len(kept)
                if kept:
                    shadows[k] = kept
                else:
                    del shadows[k]
        doomed = [k for k in self.keys if pred(self.entries[k])]
        for k in doomed:
            if shadows and k in shadows:
                if self.gone is not None:
                    self.gone.append(self.entries[k])
                self.entries[k] = shadows[k].pop()  # an older translation the fence did not cover stays
                if not shadows[k]:
                    del shadows[k]
            else:
                self.remove(k)
        return removed + len(doomed)

    def all(self, key: int) -> list[TlbEntry]:
        """Every entry held for ``key``: the newest first."""
        e = self.entries.get(key)
        if e is None:
            return []
        return [e, *self.shadows.get(key, ())] if self.shadows else [e]

    def clear(self) -> int:
        n = len(self.keys) + (sum(len(v) for v in self.shadows.values()) if self.shadows else 0)
        if self.gone is not None:
            self.gone.extend(self.entries[k] for k in self.keys)
            if self.shadows:
                for k in self.keys:
                    self.gone.extend(self.shadows.get(k, ()))
        self.entries.clear()
        self.keys.clear()
        self.pos.clear()
        if self.shadows:
            self.shadows.clear()
        return n


class Tlb:
    """Leaf entries, non-leaf (walk-cache) entries and, optionally, negative entries.

    A negative entry is an invalid PTE the hart cached when a walk faulted on it
    (the spec allows it: "a page-fault exception might occur" after an invalid
    PTE is made valid, until a fence).  It is kept apart from the leaf dict, so the
    hot path never sees it; a miss consults it before walking.  An
    address-specific fence removes it as it removes a leaf (the walk ended
    there: an inference, as for SFENCE.VMA).
    """

    def __init__(
        self,
        leaf_capacity: int,
        nonleaf_capacity: int,
        rng: random.Random,
        negative: int = 0,
        multi: bool = False,
        watched: bool = False,
    ) -> None:
        if leaf_capacity < 1 or nonleaf_capacity < 0 or negative < 0:
            raise ValueError("TLB needs at least one leaf entry and a non-negative walk cache")
        # multi: several entries for one address - a refill keeps the old translation, and a lookup
        # may return any entry that matches, at any level (Hart._quantum_multi, lookup_nonleaf)
        self.multi = multi
        # every entry dropped, in order, until an observer takes them (None: nobody watches)
        self.gone: list[TlbEntry] | None = [] if watched else None
        self.leaf = _Cache(leaf_capacity, multi, self.gone)
        self.nonleaf = _Cache(max(nonleaf_capacity, 0), multi, self.gone)
        self.negative = _Cache(negative)
        self.leaf_entries = self.leaf.entries  # the hot path probes this dict directly
        self.rng = rng

    def fill(self, e: TlbEntry) -> None:
        cache = self.leaf if e.leaf else self.nonleaf
        if cache.capacity:
            cache.insert(e, self.rng)

    def fill_negative(self, e: TlbEntry) -> None:
        if self.negative.capacity:
            self.negative.insert(e, self.rng)

    def lookup_negative(self, vmid: int, gfn: int, root_level: int) -> TlbEntry | None:
        """A cached invalid PTE on the way to gfn, if any: the access faults without a walk."""
        entries = self.negative.entries
        for level in range(root_level + 1):
            e = entries.get(tlb_key(vmid, level, gfn))
            if e is not None:
                return e
        return None

    def drop(self, e: TlbEntry) -> None:
        """The hart itself discards one entry (a failed A/D update: it walks again)."""
        cache = self.negative if e.negative else self.leaf if e.leaf else self.nonleaf
        if cache.entries.get(e.key) is e:
            cache.remove(e.key)

    def lookup_nonleaf(self, vmid: int, gfn: int, root_level: int) -> TlbEntry | None:
        """The deepest cached non-leaf entry for gfn: the walk starts below it (with ``multi``: any one)."""
        if self.multi:
            return self._pick(self.nonleaf, vmid, gfn, range(1, root_level + 1))
        entries = self.nonleaf.entries
        vm = vmid << 3
        for level in range(1, root_level + 1):
            e = entries.get(((vm | level) << 48) | (gfn >> (9 * level)))  # (tlb_key, inline: every miss)
            if e is not None:
                return e
        return None

    def lookup_leaf(self, vmid: int, gfn: int) -> TlbEntry | None:
        """With ``multi``: any leaf entry that translates gfn - a superpage and the 4K leaf that split it,
        an entry and the refill beside it - chosen by the seeded stream (the hardware may use either)."""
        return self._pick(self.leaf, vmid, gfn, range(3))

    def _pick(self, cache: _Cache, vmid: int, gfn: int, levels: range) -> TlbEntry | None:
        found = [e for level in levels for e in cache.all(tlb_key(vmid, level, gfn))]
        if len(found) <= 1:
            return found[0] if found else None
        return found[self.rng.randrange(len(found))]

    # -- HFENCE.GVMA -------------------------------------------------------------

    def hfence_gvma(self, vmid: int | None = None, gfn: int | None = None) -> int:
        """Local fence.  An address-specific fence removes leaf entries only."""
        if gfn is None:
            if vmid is None:
                return self.leaf.clear() + self.nonleaf.clear() + self.negative.clear()
            return (
                self.leaf.remove_if(lambda e: e.vmid == vmid)
                + self.nonleaf.remove_if(lambda e: e.vmid == vmid)
                + self.negative.remove_if(lambda e: e.vmid == vmid)
            )

        def covers(e: TlbEntry) -> bool:
            return (vmid is None or e.vmid == vmid) and e.gfn_base <= gfn < e.gfn_base + (1 << (9 * e.level))

        return self.leaf.remove_if(covers) + (self.negative.remove_if(covers) if self.negative.keys else 0)

    def __len__(self) -> int:
        return len(self.leaf.keys) + len(self.nonleaf.keys)
