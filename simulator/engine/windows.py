"""Race windows: the chances a run gave a stale translation to do harm, and what closed each one.

A clean verdict means little if nothing could have gone wrong.  The windows
are defined by the machine and the oracle, never by the workload: a window is
a TLB entry (leaf or walk cache) that became stale while a hart held it, or a
use of such an entry.  Each cached window is counted once, when the entry
leaves the TLB (or when the run ends), by the worst thing that happened to
what it reaches while it was cached, and it is credited to what removed it:
the fence and the Xen function that asked for it, a capacity eviction (luck,
not a defence), a refill, or nothing (still cached at the end).

Invariant: every entry the TLB drops is judged exactly once (``close``), and
judging reads only the machine (frame stamps, states and PTEs), so the counts
are facts of the run whatever the hypervisor model did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from simulator.engine.calls import c_stack
from simulator.riscv import memory as M
from simulator.riscv.pte import PTE_A, PTE_D

if TYPE_CHECKING:
    from simulator.riscv.tlb import TlbEntry

# name -> what it means (the README's table is generated from this; see tests/test_windows.py)
WINDOWS: dict[str, str] = {
    "unlinked-cached": "a PTE was changed or cleared (unmap, remap, split) while a hart cached the old one",
    "freed-cached": "a frame (page or table) was freed while a hart cached a translation to it",
    "reused-cached": "a frame was freed and handed out again while a hart still cached a translation to it",
    "vmid-alias-cached": "a hart loaded a VMID into hgatp for another address space while it held entries "
    "of the old one (a VMID rollover, reuse or migration with live entries)",
    "used-unlinked": "a stale entry was used while the frame it reaches was still allocated",
    "used-freed": "a stale entry was used after its frame was freed, before the frame was reused",
    "used-reused": "a stale entry was used after its frame was handed out again",
    "used-alias": "an entry of another address space was used through the same VMID",
}
CACHED = ("unlinked-cached", "freed-cached", "reused-cached", "vmid-alias-cached")
USES = ("used-unlinked", "used-freed", "used-reused", "used-alias")

# what removed an entry when no fence did
EVICTED = "capacity eviction (no defence: the TLB was full)"
REFILLED = "a refill of the same address (the walk read the new PTE)"
STILL_CACHED = "nothing: still cached when the run ended"
MARK_ALIAS = 1  # TlbEntry.marks: the hart loaded this VMID for another address space while it was cached

_FLUSHY = ("flush", "fence", "sbi_", "hfence")


@dataclass
class Windows:
    """Counts of windows opened, and of what closed them, for one run."""

    opened: dict[str, int] = field(default_factory=dict)
    closed_by: dict[str, int] = field(default_factory=dict)  # defence -> windows it closed
    first: dict[str, int] = field(default_factory=dict)  # defence -> the step it first closed one
    # freed-/reused-cached windows whose frame was freed while the fence that removed the entry was already
    # on its way to the hart (sent, not yet taken): the fence raced the free, and won only by the ack
    in_flight: dict[str, int] = field(default_factory=dict)

    def use(self, window: str) -> None:
        self.opened[window] = self.opened.get(window, 0) + 1

    def close(
        self,
        mem: M.Memory,
        e: TlbEntry,
        defence: str,
        step: int,
        sent: int | None = None,
        freed_at: Callable[[int], int] | None = None,
    ) -> str | None:
        """Judge one entry leaving the TLB: the window it was in (None: it was current) and credit it.

        ``sent``: the step the removing fence was sent (a remote one); ``freed_at(mfn)``: the step a frame
        was last freed, to tell a free that happened while that fence was in flight.
        """
        window, frame = judge(mem, e)
        if window is None:
            return None
        if sent is not None and frame is not None and freed_at is not None and freed_at(frame) > sent:
            self.in_flight[window] = self.in_flight.get(window, 0) + 1
        self.opened[window] = self.opened.get(window, 0) + 1
        self.closed_by[defence] = self.closed_by.get(defence, 0) + 1
        self.first.setdefault(defence, step)
        return window

    def to_json(self) -> dict[str, Any]:
        return {
            "opened": {k: self.opened[k] for k in WINDOWS if k in self.opened},
            "closed_by": dict(sorted(self.closed_by.items(), key=lambda kv: (-kv[1], kv[0]))),
            "first": {k: self.first[k] for k in sorted(self.first)},
            "in_flight": {k: self.in_flight[k] for k in WINDOWS if k in self.in_flight},
        }


def judge(mem: M.Memory, e: TlbEntry) -> tuple[str | None, int | None]:
    """The window a cached entry is in now, from the machine alone (None: it is current), and the frame
    that made it one (freed or reused; None for the other windows).

    Reused beats freed beats unlinked: a frame it reaches, or a table it was read
    from, handed out again since the PTE was stored (stamp newer than the
    entry's ghost); freed (in the heap or a pool); the PTE it caches changed
    other than by a hardware A/D update.
    """
    if e.negative:
        return None, None
    ghost = e.ghost
    stamp, state = mem.stamp, mem.state
    reused = freed = None
    if e.leaf:
        lo, hi = e.ppn, min(e.ppn + (1 << (9 * e.level)), mem.nr_frames)
        if hi - lo == 1:
            reused = lo if stamp[lo] > ghost else None
            freed = lo if state[lo] in (M.FREE, M.POOL) else None
        elif lo < hi:  # a superpage (beyond RAM, lo >= hi: a device)
            # (numpy over the stamps: a 1G entry spans 262,144 frames, and max() boxed each one)
            if int(np.frombuffer(stamp, dtype=np.uint64, count=hi - lo, offset=8 * lo).max()) > ghost:
                reused = next(f for f in range(lo, hi) if stamp[f] > ghost)
            for st in (M.FREE, M.POOL):
                at = state.find(st, lo, hi)
                if at >= 0:
                    freed = at if freed is None else min(freed, at)
    elif 0 <= e.ppn < mem.nr_frames:
        t = e.ppn
        reused = t if stamp[t] > ghost else None
        freed = t if state[t] in (M.FREE, M.POOL) else None
    for _level, table, gen in e.path:
        if mem.gen[table] != gen:
            reused = table if reused is None else reused
        elif state[table] in (M.FREE, M.POOL):
            freed = table if freed is None else freed
    if reused is not None:
        return "reused-cached", reused
    if freed is not None:
        return "freed-cached", freed
    table = e.src_table
    if table is not None and (table[e.src_idx] ^ e.src_pte) & ~(PTE_A | PTE_D):
        return "unlinked-cached", None
    if getattr(e, "marks", 0) & MARK_ALIAS:
        return "vmid-alias-cached", None
    return None, None


def origin(depth: int = 2) -> str:
    """Which Xen function asked for the fence being run: "<flush function> in <its caller>".

    Read from the Python stack of the hart that runs it (``calls.c_stack``): the
    outermost flush-like model function (``p2m_tlb_flush_sync``,
    ``filtered_flush_tlb_mask``, ``local_hfence_gvma_all``, ...) and the first
    C-named function outside it (``p2m_free_subtree``, ``alloc_heap_pages``,
    ``p2m_handle_vmenter`` ...).  Deterministic: names, not addresses.
    """
    flush = "HFENCE.GVMA"
    for name in c_stack(depth + 1):
        if not any(s in name for s in _FLUSHY):
            return f"{flush} in {name}"
        flush = name
    return flush


def _n(d: dict[str, int], k: str) -> int:
    return d.get(k, 0)


def summary(windows: dict[str, Any]) -> str:
    """One line: the windows opened, by kind, and what closed them (with the first step each did)."""
    opened: dict[str, int] = windows.get("opened", {})
    cached = {k: opened[k] for k in CACHED if opened.get(k)}
    if not cached:
        return "no TLB entry went stale while cached"
    closed: dict[str, int] = windows.get("closed_by", {})
    first: dict[str, int] = windows.get("first", {})
    kinds = ", ".join(f"{k} {n:,}" for k, n in cached.items())
    by = ", ".join(
        f"{d} {n:,}" + (f" (first at step {first[d]:,})" if d in first and d != STILL_CACHED else "")
        for d, n in closed.items()
    )
    return f"{sum(cached.values()):,} stale TLB entries ({kinds}); removed by {by}"


def block(windows: dict[str, Any], indent: str = "  ") -> list[str]:
    """The lines a report prints under its verdict: windows by kind, what closed them, the stale uses."""
    opened: dict[str, int] = windows.get("opened", {})
    cached = {k: opened[k] for k in CACHED if opened.get(k)}
    if not cached:
        lines = [f"{indent}race windows: no TLB entry went stale while cached"]
    else:
        kinds = ", ".join(f"{k} {n:,}" for k, n in cached.items())
        lines = [f"{indent}race windows: {sum(cached.values()):,} stale TLB entries ({kinds}), removed by"]

        closed: dict[str, int] = windows.get("closed_by", {})
        first: dict[str, int] = windows.get("first", {})
        width = max(len(d) for d in closed)
        for d, n in sorted(closed.items(), key=lambda kv: (-kv[1], kv[0])):
            at = f"   first at step {first[d]:,}" if d in first and d != STILL_CACHED else ""
            lines.append(f"{indent}  {d:<{width}} {n:>8,}{at}")
        flying: dict[str, int] = windows.get("in_flight", {})
        if flying:
            what = ", ".join(f"{k} {n:,}" for k, n in flying.items())
            lines.append(f"{indent}  of these, freed while the fence that removed them was in flight: {what}")
    if used := uses(windows):
        lines.append(f"{indent}{used}")
    return lines


def uses(windows: dict[str, Any]) -> str:
    """One line on the stale entries that were used, or '' when none was."""
    o: dict[str, int] = windows.get("opened", {})
    parts = [
        (_n(o, "used-freed"), "of freed frames, before their reuse"),
        (_n(o, "used-reused"), "of frames handed out again"),
        (_n(o, "used-unlinked"), "while the frame was still allocated"),
        (_n(o, "used-alias"), "through another address space's VMID"),
    ]
    parts = [(n, t) for n, t in parts if n]
    if not parts:
        return ""
    total = sum(n for n, _ in parts)
    if len(parts) == 1:
        return f"{total:,} stale uses, all {parts[0][1]}"
    return f"{total:,} stale uses: " + "; ".join(f"{n:,} {t}" for n, t in parts)


def vacuous(windows: dict[str, Any], accesses: int) -> str:
    """Why a finished run without findings proves nothing, or '' when it opened a window."""
    if not accesses:
        return "no guest access was made"
    if not sum(windows.get("opened", {}).values()):
        return (
            "no race window opened: no TLB entry went stale while a hart cached it and no stale entry was "
            "used, so no ordering of the same work could have shown a use after free"
        )
    return ""


def add(total: dict[str, Any], one: dict[str, Any]) -> None:
    """Aggregate one run's windows into ``total`` (sweeps, matrix, compare, the pytest plugin)."""
    for part in ("opened", "closed_by", "in_flight"):
        dst = total.setdefault(part, {})
        for k, n in one.get(part, {}).items():
            dst[k] = dst.get(k, 0) + n


def table() -> str:
    """The README's table of windows (from WINDOWS)."""
    rows = ["| window | opened when |", "|---|---|"]
    rows += [f"| `{k}` | {v} |" for k, v in WINDOWS.items()]
    return "\n".join(rows)
