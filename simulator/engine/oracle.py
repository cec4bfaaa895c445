"""The stale-translation oracle: violations, warnings, invariants, explanations.

It trusts only the machine layer.  The machine decides the facts (this
translation reached a frame handed out again since the PTE was stored; this
walk read a table that was handed out again; where the frame is in its new
life); the oracle classifies them, remembers the history it needs, and
explains each violation as a causal chain in logical time: fill, unmap,
free, fences, reuse, stale use.

A stale use is a violation only when it can do harm (nothing is invented):

* any stale write once the new owner has the frame, and a stale write that
  lands after the frame was scrubbed (it survives into the next owner; when
  the frame is not yet given away, the violation is reported when it is);
* a stale read once the new owner has the frame and has stored into it;
* a walk through a reused table frame that reads data its new owner wrote
  (a new PTE, guest data, Xen's own).
Everything else - a stale read in the hand-out window (it sees the old
contents or zeros), a stale write the scrub then wipes, a walk that reads a
zeroed PTE and faults, any use of a frame that is free but not reused - is a
counted warning (``--strict`` makes the warnings violations).

Classes:
  reused-same-domain / reused-other-domain / reused-as-table / reused-by-xen
      a guest access reached a frame that was freed and handed out again;
  walk-through-reused-table   a walk read a PTE from a table frame handed out again;
  dangling-root               a walk started at an hgatp root that was freed and reused;
  vmid-alias                  a translation filled under another root was used through
                              the same VMID (another address space's entry);
  stale-write-survived        a stale write landed in a scrubbed frame that was then
                              given to a new owner (reported at the hand-over);
  freed-while-mapped          a frame was freed while a live PTE of a domain that is not
                              dying still mapped it (reported at the free);
  xen-use-after-free          Xen loaded from or stored to a frame in the heap or a pool;
  invariant                   refcount underflow, double free, pool accounting,
                              a frame in no or two places, leftovers after destroy;
  deadlock / panic            the model stopped: nobody could run / Xen panicked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simulator.engine.calls import NO_HARTS, NOTHING_FILTERED, FlushLog, c_stack
from simulator.engine.cause import FLUSH_ON_VMID, Cause, Diagnosis, Stale, covers
from simulator.engine.conductor import SimulationStop
from simulator.engine.findings import Groups
from simulator.engine.history import Chained, FrameHeads, FrameHistory, PutPaths, SlotHeads, SlotLast, freed_by
from simulator.engine.rmap import ReverseMap
from simulator.engine.windows import EVICTED, MARK_ALIAS, REFILLED, STILL_CACHED, Windows, origin
from simulator.riscv import memory as M
from simulator.riscv.observer import Observer
from simulator.riscv.pte import ROOT_PAGES, GStageMode
from simulator.xen.p2m import type_name

if TYPE_CHECKING:
    from simulator.engine.conductor import Conductor
    from simulator.engine.log import EventLog
    from simulator.riscv.hart import Hart
    from simulator.riscv.sbi import FenceRequest
    from simulator.riscv.tlb import TlbEntry
    from simulator.riscv.walker import Fault

MAX_REPORTED = 16
MAX_WARNINGS = 16
SPURIOUS_LOOP = 32  # faults from one cached invalid PTE that is valid now: a livelock


@dataclass
class Violation:
    cls: str
    hart: int | None
    dom: int | None
    gfn: int | None
    mfn: int | None
    seq: int
    headline: str
    chain: list[tuple[int, int | None, str, str]] = field(default_factory=list)  # seq, hart, kind, text
    missing: str = ""
    cause: Cause | None = None
    access: str = ""  # read or write (a guest access), walk (a walk read a table), free, load or store (Xen's)
    n: int = 0  # its number in the run (1-based; the log's ``n``), set when the oracle records it

    def __post_init__(self) -> None:
        if not self.access:
            self.access = {"freed-while-mapped": "free", "invariant": "", "panic": "", "deadlock": ""}.get(
                self.cls, "walk" if self.cls in ("walk-through-reused-table", "dangling-root") else ""
            )

    def to_log(self) -> dict[str, Any]:
        """The structured form written to the log, from which `p2msim inspect` draws timelines."""
        return {
            "class": self.cls,
            "dom": self.dom,
            "gfn": self.gfn,
            "mfn": self.mfn,
            "headline": self.headline,
            "chain": [{"seq": s, "hart": h, "kind": k, "text": t} for s, h, k, t in self.chain],
            "missing": self.missing,
            "cause": self.cause.to_json() if self.cause is not None else None,
            "access": self.access,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.cls,
            "hart": self.hart,
            "dom": self.dom,
            "gfn": self.gfn,
            "mfn": self.mfn,
            "seq": self.seq,
            "explanation": self.explain(),
            "cause": self.cause.to_json() if self.cause is not None else None,
            "access": self.access,
        }

    def explain(self) -> str:
        lines = [f"{self.cls}: {self.headline}"]
        if self.chain:
            lines.append("     step  hart  event")
            for seq, hart, _kind, text in self.chain:
                h = "-" if hart is None else str(hart)
                lines.append(f"  {seq:>7,}  {h:>4}  {text}")
        if self.missing:
            lines.append(f"  missing: {self.missing}")
        return "\n".join(lines)


def _from(path: list[str], fn: str) -> list[str]:
    """The stack from ``fn`` outward (the helpers it called to report are not part of the story)."""
    return path[path.index(fn) :] if fn in path else path


def _hex(v: int | None) -> str:
    return "-" if v is None else f"{v:#x}"


class Oracle(Observer):
    def __init__(
        self,
        memory: M.Memory,
        conductor: Conductor,
        log: EventLog,
        harts: list[Hart],
        mode: GStageMode,
        bugs: list[str],
        strict: bool = False,
        stop_at_first: bool = False,
    ) -> None:
        self.memory = memory
        self.conductor = conductor
        self.log = log
        self.harts = harts
        self.mode = mode
        self.bugs = bugs
        self.strict = strict
        self.stop_at_first = stop_at_first
        self.tlbflush_stamps: list[tuple[int, int, int, int]] = []  # (step, stamping hart, cpu, time)
        self.tlbflush_filtered = 0  # harts the clock's filter took out of reuse flushes
        self.spurious: dict[int, int] = {}  # hart: the step of its latest first spurious fault
        self.violations: list[Violation] = []
        self.violation_count = 0
        self.distinct = 0  # violations recorded (each is in the log with its chain)
        self.groups = Groups()  # the violations by root cause (engine.findings)
        self.warnings: list[str] = []
        self.warning_count = 0
        # warnings by kind: freed (not reused), hand-out (reused, not yet given away), wiped (a write the
        # scrub wiped), unwritten (the new owner stored nothing yet), zero-pte (a walk read zeros: it faults)
        self.warning_kinds: dict[str, int] = {}
        self.stale_benign = 0
        self.frames_freed = 0
        self.frames_reused = 0
        self._seen: set[tuple[Any, ...]] = set()
        # (mfn, table, idx) -> (step, culprit) of the first free of the frame while that PTE linked it
        self._mapped_first: dict[tuple[int, int, int], tuple[int, str]] = {}
        self.mapped_frees: dict[tuple[int, int], str] = {}  # (mfn, step) of a free while mapped -> its culprit
        self.double_frees: dict[int, list[tuple[int, int | None, str]]] = {}  # mfn -> [(step, hart, why)]
        # per-hart context from the hypervisor's narrative
        self.hart_ctx: list[tuple[int, int, int] | None] = [None] * len(harts)  # (dom, vcpu, vmid)
        # history for explanations
        # mfn -> [(seq, hart, kind, stamp, why, gen, state, owner)]
        self.frame_hist = FrameHistory(memory.nr_frames)
        # slot (table << 9 | idx) -> [(seq, hart, old, new, op)] of the stores over a valid PTE
        self.pte_hist = Chained("QoQQs", SlotHeads())
        self.fences: list[tuple[int, int, str, FenceRequest]] = []
        self.flushlog = FlushLog(len(harts))  # Xen's flush calls and the fences each sent
        self.roots: dict[int, list[tuple[int, int]]] = {}  # root mfn -> [(step, domain)] of its allocations
        self.table_frees: dict[int, int] = {}  # table mfn -> step p2m_free_subtree last freed it
        self.no_flush_handouts: dict[int, int] = {}  # mfn -> step it was handed out with MEMF_no_tlbflush
        # stale writes that landed after the frame's scrub: mfn -> (seq, hart, gfn, entry, scrub seq)
        self.survivors: dict[int, tuple[int, int, int, TlbEntry | None, int]] = {}
        self.wiped = 0  # stale writes a later scrub wiped
        self.leaf_puts: dict[int, tuple[int, int | None, dict[str, Any]]] = {}  # mfn -> p2m_free_subtree.leaf
        self.cpu_events: dict[int, list[tuple[int, str]]] = {}  # hart -> [(step, "down" | "up")]
        self.dirty_hist: dict[tuple[int, int], list[tuple[int, bool, str]]] = {}  # (dom, cpu) -> [(step, bit, fn)]
        self.puts = Chained("Qosi", FrameHeads(memory.nr_frames))  # mfn -> [(step, hart, op, dom)]
        self.calls: dict[int, list[tuple[str, int]]] = {}  # hart -> the hypercalls it is in: [(name, dom)]
        self.ctx_hist: dict[int, list[tuple[int, tuple[int, int] | None]]] = {}  # hart -> [(step, (dom, vcpu))]
        self.hgatp_hist: dict[int, list[tuple[int, int, Any]]] = {}  # hart -> [(step, hgatp, who ran)]
        # (hart, vmid) -> [(step, dom, vcpu, generation)]; hart None for per-domain VMIDs (arm-broadcast)
        self.vmid_assigns: dict[tuple[int | None, int], list[tuple[int, int, int, int]]] = {}
        self.diagnosis = Diagnosis(self)
        self.rmap = ReverseMap(memory, mode.root_level)
        self.last_store = SlotLast()  # (table, idx) -> (step, hart, value) of its last store
        self.dying: set[int] = set()  # domains domain_kill has begun to tear down
        self.freed_mapped_dying = 0  # frames freed while only a dying domain's p2m still mapped them
        self.windows = Windows()  # race windows opened and what closed them (engine.windows)
        # mfn -> the C functions of its last put_page, innermost first (each distinct path kept once)
        self.put_paths = PutPaths(memory.nr_frames)
        self.dom_roots: dict[int, int] = {}  # domain -> its p2m root now
        self.fence_origin: dict[int, str] = {}  # remote request id -> the Xen function that sent it
        self._on = self._event_handlers()  # narrative event name -> what the oracle keeps of it

    # -- who is doing what ---------------------------------------------------------

    def _hart(self) -> int | None:
        cur = self.conductor.current
        if cur is None or cur.index >= len(self.harts):
            return None
        return cur.index

    def _call(self, hart: int | None) -> tuple[str, int]:
        """(C name, domain) of the hypercall the hart's current job is in, else (the job's label, -1)."""
        if hart is None:
            return "the workload driver", -1
        stack = self.calls.get(hart)
        if stack:
            return stack[-1]
        job = self.harts[hart].current_job
        return (job.label if job is not None else "guest"), -1

    def _op(self, hart: int | None) -> str:
        if hart is None:
            return "workload driver"
        job = self.harts[hart].current_job
        return job.label if job is not None else "guest"

    # -- machine hooks --------------------------------------------------------------

    def on_hand_out(self, mfn: int, state: int, owner: int, gen: int, why: str) -> None:
        hart = self._hart()
        if gen > 1:
            self.frames_reused += 1
        self.frame_hist.add(
            mfn,
            self.conductor.seq,
            hart,
            "reuse" if gen > 1 else "alloc",
            self.memory.stamp[mfn],
            why,
            gen,
            state,
            owner,
        )
        if self.log.enabled:
            self.log.debug(hart, "frame.hand_out", mfn=mfn, gen=gen, state=M.STATE_NAMES[state], owner=owner, why=why)

    def on_assign(self, mfn: int, owner: int) -> None:
        hart = self._hart()
        self.frame_hist.add_assign(mfn, self.conductor.seq, hart, self.memory.gen[mfn], self.memory.state[mfn], owner)
        if self.log.enabled:
            self.log.debug(hart, "frame.assign", mfn=mfn, gen=self.memory.gen[mfn], owner=owner)
        ev = self.survivors.pop(mfn, None)
        if ev is not None:
            self._survived(mfn, owner, ev)

    def on_scrub(self, mfn: int, why: str) -> None:
        hart = self._hart()
        if mfn in self.frame_hist:  # only frames with a history matter to an explanation
            mem = self.memory
            self.frame_hist.add(mfn, self.conductor.seq, hart, "scrub", 0, why, mem.gen[mfn], mem.state[mfn], -1)
        if self.survivors.pop(mfn, None) is not None:
            self.wiped += 1
        if self.log.enabled:
            self.log.debug(hart, "frame.scrub", mfn=mfn, gen=self.memory.gen[mfn], why=why)

    def on_retire(self, mfn: int, old_state: int, new_state: int, gen: int, why: str) -> None:
        hart = self._hart()
        if old_state == M.FREE or old_state == new_state == M.POOL:  # (a frame freed to the pool it is in)
            self.double_frees.setdefault(mfn, []).append((self.conductor.seq, hart, why))
            self.invariant(f"double free of mfn {mfn:#x} ({why})", mfn=mfn)
            return
        self.frames_freed += 1
        # a free's stamp field holds its place among all frees (to order it against a flush of the same step)
        op = self._call(hart)[0]  # what the freeing hart was doing
        self.frame_hist.add(mfn, self.conductor.seq, hart, "free", self.frames_freed, why, gen, new_state, -1, op)
        self._freed_while_mapped(hart, mfn, why)
        if self.log.enabled:
            self.log.debug(hart, "frame.free", mfn=mfn, gen=gen, to=M.STATE_NAMES[new_state], why=why)

    def on_guest_fault(self, hart: int, fault: Fault) -> None:
        """A fault on a PTE that Xen's own live table holds malformed is a finding (no correct code writes it)."""
        if self.log.enabled:
            self.log.debug(hart, "guest.fault", gfn=fault.gfn, write=fault.write, why=fault.describe())
        if fault.cached and fault.now_pte is not None and fault.now_pte & 1:
            self._spurious(hart, fault)
        if not fault.malformed or fault.reason.startswith("a store through") or not self.rmap.live(fault.table):
            return
        self.violation_count += 1
        key = ("malformed", fault.table, fault.idx, fault.pte)
        if key in self._seen:
            return
        self._seen.add(key)
        root = self.rmap.root_of(fault.table)
        dom = self.root_owner(root, self.conductor.seq) if root is not None else None
        chain: list[tuple[int, int | None, str, str]] = []
        store = self.last_store.get(fault.table, fault.idx)
        if store is not None and store[2] == fault.pte:
            seq, h, _new = store
            chain.append((seq, h, "store", f"store: PTE {fault.table:#x}[{fault.idx}] = {fault.pte:#x}"))
        chain.append((self.conductor.seq, hart, "fault", f"hart {hart}'s walk of gfn {fault.gfn:#x} faults"))
        text = (
            f"the PTE dom{dom}'s p2m holds at {fault.table:#x}[{fault.idx}] is malformed ({fault.reason}): "
            "hardware faults on it, so the mapping Xen meant is not there"
        )
        v = Violation(
            "malformed-pte",
            hart,
            dom,
            fault.gfn,
            None,
            self.conductor.seq,
            f"hart {hart} faulted on a malformed PTE of dom{dom}'s live p2m: {fault.describe()}",
            chain,
            text,
            Cause("well-formed-pte", "malformed-pte", "p2m_pte_from_mfn", text),
            "walk",
        )
        if self.bugs:
            v.missing += f" (bugs injected: {', '.join(self.bugs)})"
        self._record(v, count=False)

    def on_table_stored(self, mfn: int) -> None:
        self.rmap.stored_table(mfn)

    def on_pte_write(self, mfn: int, idx: int, old: int, new: int) -> None:
        hart = self._hart()
        self.rmap.store(mfn, idx, old, new)
        self.last_store.set(mfn, idx, self.conductor.seq, hart, new)
        if old & 1:
            self.pte_hist.add(mfn << 9 | idx, self.conductor.seq, hart, old, new, self._op(hart))
        if self.log.enabled:
            self.log.debug(hart, "pte.write", table=mfn, idx=idx, old=old, new=new, **self._slot(mfn, idx, new or old))

    def _slot(self, table: int, idx: int, pte: int) -> dict[str, Any]:
        """What the log can say about a PTE slot beyond its address: whose p2m, which gfn, which level,
        and the frame the PTE names (only for a slot the reverse map has seen linked)."""
        rmap = self.rmap
        level = rmap.level.get(table)
        if level is None:
            return {}
        out: dict[str, Any] = {"level": level}
        root = rmap.root_of(table)
        owners = self.roots.get(root, ()) if root is not None else ()
        if owners:
            out["dom"] = owners[-1][1]
            out["gfn"] = rmap.gfn_of(table, idx)
        if pte & 1:
            out["target_mfn"] = (pte >> 10) & ((1 << 44) - 1)
        return out

    def _spurious(self, hart: int, fault: Fault) -> None:
        """A fault from a cached invalid PTE that is valid now.  Only a fence removes that entry: if one
        entry has faulted SPURIOUS_LOOP times so, the handler is not removing it, and the guest cannot
        reach that page however often it retries (a livelock on that access: the run ends there)."""
        e = fault.negative
        assert e is not None
        e.faults += 1
        if e.faults == 1:
            self.spurious[hart] = self.conductor.seq  # the first spurious fault of the latest such entry
        n = e.faults
        if n < SPURIOUS_LOOP:
            return
        first = self.spurious.get(hart, e.fill_seq)
        store = self.last_store.get(fault.table, fault.idx)
        chain: list[tuple[int, int | None, str, str]] = [
            (e.fill_seq, hart, "fill", f"fill: hart {hart} caches the invalid PTE {fault.table:#x}[{fault.idx}]"
             f" (L{e.level}, VMID {e.vmid}, gfn {e.gfn_base:#x}) as its walk faults on it"),
        ]  # fmt: skip
        if store is not None:
            chain.append((store[0], store[1], "store", f"store: PTE {fault.table:#x}[{fault.idx}] = {store[2]:#x}"))
        chain.append((first, hart, "fault", f"hart {hart} faults at gfn {fault.gfn:#x} from the cached entry"))
        chain.append((self.conductor.seq, hart, "fault", f"... and for the {n}th time, from the same entry"))
        valid = f"valid since step {store[0]:,}" if store is not None else "valid now"
        text = (
            f"hart {hart} cached the invalid PTE {fault.table:#x}[{fault.idx}] at step {e.fill_seq:,}; it is "
            f"{valid} ({fault.now_pte:#x}), but the trap handler returned {n} times without an HFENCE.GVMA covering "
            f"gfn {fault.gfn:#x} on hart {hart}, and only a fence removes a cached entry (the spec: after an invalid "
            "PTE is made valid, a page fault may occur until the hart fences)"
        )
        dom = self._dom(hart)
        v = Violation(
            "livelock",
            hart,
            dom,
            fault.gfn,
            None,
            self.conductor.seq,
            f"hart {hart} ({self._who(hart)}) faults at gfn {fault.gfn:#x} again and again from a cached invalid PTE "
            "that is valid now: however often it retries, the guest cannot reach that page",
            chain,
            text,
            Cause("fence-on-spurious-fault", "fault-loop", "do_trap", text, tuple(chain)),
            "walk",
        )
        if self.bugs:
            v.missing += f" (bugs injected: {', '.join(self.bugs)})"
        self._record(v)
        raise SimulationStop("livelock")

    def on_fill(self, hart: int, entry: TlbEntry) -> None:
        if self.harts[hart].tlb.gone:
            self._gone(hart, None, entry.key)
        if self.log.enabled:
            self.log.debug(
                hart,
                "tlb.fill",
                dom=self.roots[entry.root_mfn][-1][1] if entry.root_mfn in self.roots else None,
                leaf=entry.leaf,
                vmid=entry.vmid,
                level=entry.level,
                gfn=entry.gfn_base,
                mfn=entry.ppn,
                path=[t for _, t, _ in entry.path],
            )

    def on_fence(self, hart: int, what: str, req: FenceRequest) -> None:
        self.fences.append((self.conductor.seq, hart, what, req))
        if what == "sent":
            self.fence_origin[req.id] = origin()
        elif what == "local":
            if self.harts[hart].tlb.gone:  # (who asked is read from the stack only when something went)
                self._gone(hart, origin(), -1)
        elif what == "taken":
            self._gone(hart, self.fence_origin.pop(req.id, "HFENCE.GVMA"), -1, req)
        flush = self.flushlog.current(hart) if what in ("sent", "local") else None
        if flush is not None:
            flush.add_fence((self.conductor.seq, what, req))
        if self.log.enabled:
            gfns = None if req.gfns is None else list(req.gfns)
            self.log.debug(hart, f"fence.{what}", id=req.id, src=req.src, dst=req.dst, vmid=req.vmid, gfns=gfns)

    def _gone(self, hart: int, defence: str | None, refill_key: int, req: FenceRequest | None = None) -> None:
        """Judge the entries the hart's TLB dropped since the last call (``defence`` None: by a fill)."""
        tlb = self.harts[hart].tlb
        gone = tlb.gone
        if not gone:
            return
        seq = self.conductor.seq
        for e in gone:
            why = defence if defence is not None else REFILLED if e.key == refill_key else EVICTED
            sent = req.sent_seq if req is not None else None
            window = self.windows.close(self.memory, e, why, seq, sent, self._freed_at)
            if self.log.enabled:
                self.log.debug(
                    hart,
                    "tlb.gone",
                    leaf=e.leaf,
                    vmid=e.vmid,
                    level=e.level,
                    gfn=e.gfn_base,
                    mfn=e.ppn,
                    why="fence" if defence is not None else "refill" if e.key == refill_key else "capacity",
                    fence=req.id if req is not None else None,
                    by=why,
                    window=window,
                )
        gone.clear()

    def _freed_at(self, mfn: int) -> int:
        return self._last(mfn, "free")

    def close_windows(self) -> None:
        """The run ended: judge what every TLB still holds (a window nothing closed)."""
        for h in self.harts:
            tlb = h.tlb
            if tlb.gone is None:
                continue
            self._gone(h.id, None, -1)
            held = [*tlb.leaf.entries.values(), *tlb.nonleaf.entries.values()]
            for cache in (tlb.leaf, tlb.nonleaf):
                if cache.shadows:
                    held.extend(s for k in cache.keys for s in cache.shadows.get(k, ()))
            for e in held:
                self.windows.close(self.memory, e, STILL_CACHED, self.conductor.seq)

    def _mark_alias(self, harts: list[Hart], vmid: int, root: int) -> None:
        """VMID ``vmid`` now names the address space at ``root`` on these harts: entries of another one
        that they hold under it are a window (engine.windows), open until a fence removes them."""
        for h in harts:
            for cache in (h.tlb.leaf, h.tlb.nonleaf):
                for e in cache.entries.values():
                    if e.vmid == vmid and e.root_mfn != root:
                        e.marks |= MARK_ALIAS

    def on_hgatp(self, hart: int, hgatp: int) -> None:
        h = self.harts[hart]
        if h.root_mfn:
            self._mark_alias([h], h.vmid, h.root_mfn)
        self.hgatp_hist.setdefault(hart, []).append((self.conductor.seq, hgatp, self.hart_ctx[hart]))
        if self.log.enabled:
            self.log.debug(hart, "hgatp.write", hgatp=hgatp)

    def flush_begin(self, fn: str, dom: int | None, mfn: int = -1, order: int = 0) -> None:
        """A flush function of Xen was entered (see ``engine.flushes``)."""
        self.flushlog.begin(self.conductor.seq, self._hart(), fn, dom, mfn, order, self.frames_freed)

    def flush_end(self) -> None:
        self.flushlog.end(self.conductor.seq, self._hart())

    def call_begin(self, name: str, dom: int) -> None:
        """A hypercall of Xen was entered (see ``engine.calls``)."""
        hart = self._hart()
        if name == "domain_kill":
            self.dying.add(dom)
        if hart is not None:
            self.calls.setdefault(hart, []).append((name, dom))

    def call_end(self) -> None:
        hart = self._hart()
        if hart is not None and self.calls.get(hart):
            self.calls[hart].pop()

    def event(self, hart: int, name: str, **fields: Any) -> None:
        handle = self._on.get(name)  # (most events have no handler: they are only logged)
        if handle is not None and handle(hart, fields):
            return
        if self.log.enabled:
            self.log.debug(hart, name, **fields)

    # -- narrative events: what the oracle keeps of each (True: not logged) -------------

    def _event_handlers(self) -> dict[str, Callable[[int, dict[str, Any]], bool | None]]:
        return {
            "put_page": self._on_put_page,
            "switch_in": self._on_switch_in,
            "switch_out": self._on_switch_out,
            "p2m_tlb_flush": self._on_flush_mask,
            "page_alloc.reuse_flush": self._on_flush_mask,
            "tlbflush.stamp": self._on_tlbflush_stamp,
            "printk": self._on_printk,
            "p2m_alloc_root_table": self._on_root,
            "dirty_cpumask": self._on_dirty_cpumask,
            "p2m_free_subtree.table_freed": self._on_table_freed,
            "page_alloc.no_tlbflush": self._on_no_tlbflush,
            "hsm.stop": self._on_hsm_stop,
            "hsm.started": self._on_hsm_started,
            "vmid.assign": self._on_vmid_assign,
            "p2m_free_subtree.leaf": self._on_leaf_put,
            "invariant": self._on_invariant,
        }

    def _on_put_page(self, hart: int, fields: dict[str, Any]) -> None:
        self.puts.add(fields["mfn"], self.conductor.seq, hart, *self._call(hart))
        path = _from(c_stack(3, 8), "put_page")
        self.put_paths.set(fields["mfn"], path)

    def _on_switch_in(self, hart: int, fields: dict[str, Any]) -> None:
        self.hart_ctx[hart] = (fields["dom"], fields["vcpu"], fields["vmid"])
        self.ctx_hist.setdefault(hart, []).append((self.conductor.seq, (fields["dom"], fields["vcpu"])))

    def _on_switch_out(self, hart: int, fields: dict[str, Any]) -> None:
        self.hart_ctx[hart] = None
        self.ctx_hist.setdefault(hart, []).append((self.conductor.seq, None))

    def _on_flush_mask(self, hart: int, fields: dict[str, Any]) -> None:
        flush = self.flushlog.current(hart)
        if flush is not None:
            flush.mask = list(fields["mask"]) or NO_HARTS
            flush.dirty = (list(fields["dirty"]) or NO_HARTS) if "dirty" in fields else None
            flush.locked = fields.get("locked")
            flush.filtered = {c: t for c, t in fields["filtered"]} if fields.get("filtered") else NOTHING_FILTERED
            self.tlbflush_filtered += len(flush.filtered)
            flush.stamp = fields.get("stamp", 0)

    def _on_tlbflush_stamp(self, hart: int, fields: dict[str, Any]) -> None:
        self.tlbflush_stamps.append((self.conductor.seq, hart, fields["cpu"], fields["time"]))

    def _on_printk(self, hart: int, fields: dict[str, Any]) -> None:
        flush = self.flushlog.current(hart) if "rc" in fields else None
        if flush is not None:
            flush.add_error((self.conductor.seq, fields["rc"], fields["text"]))

    def _on_root(self, hart: int, fields: dict[str, Any]) -> None:
        self.roots.setdefault(fields["mfn"], []).append((self.conductor.seq, fields["dom"]))
        self.dom_roots[fields["dom"]] = fields["mfn"]
        self.rmap.add_root(fields["mfn"], ROOT_PAGES)

    def _on_dirty_cpumask(self, hart: int, fields: dict[str, Any]) -> None:
        self.dirty_hist.setdefault((fields["dom"], fields["cpu"]), []).append(
            (self.conductor.seq, fields["set"], fields["fn"])
        )

    def _on_table_freed(self, hart: int, fields: dict[str, Any]) -> None:
        self.table_frees[fields["mfn"]] = self.conductor.seq

    def _on_no_tlbflush(self, hart: int, fields: dict[str, Any]) -> None:
        for pg in range(fields["mfn"], fields["mfn"] + (1 << fields["order"])):
            self.no_flush_handouts[pg] = self.conductor.seq

    def _on_hsm_stop(self, hart: int, fields: dict[str, Any]) -> None:
        self.cpu_events.setdefault(hart, []).append((self.conductor.seq, "down"))  # the machine's own word

    def _on_hsm_started(self, hart: int, fields: dict[str, Any]) -> None:
        self.cpu_events.setdefault(hart, []).append((self.conductor.seq, "up"))

    def _on_vmid_assign(self, hart: int, fields: dict[str, Any]) -> None:
        per_hart = fields.get("vcpu", -1) >= 0
        root = self.dom_roots.get(fields["dom"])
        if root is not None:
            self._mark_alias([self.harts[hart]] if per_hart else self.harts, fields["vmid"], root)
        key = (hart if per_hart else None, fields["vmid"])
        self.vmid_assigns.setdefault(key, []).append(
            (self.conductor.seq, fields["dom"], fields["vcpu"], fields["generation"])
        )

    def _on_leaf_put(self, hart: int, fields: dict[str, Any]) -> None:
        self.leaf_puts[fields["mfn"]] = (self.conductor.seq, hart, dict(fields))

    def _on_invariant(self, hart: int, fields: dict[str, Any]) -> bool:
        self.invariant(f"{fields['what']} (mfn {fields.get('mfn', 0):#x})", mfn=fields.get("mfn"))
        return True

    # -- findings ------------------------------------------------------------------------

    def _freed_while_mapped(self, hart: int | None, mfn: int, why: str) -> None:
        """A frame freed while a live PTE still maps it: a violation, unless only a dying domain maps it."""
        for table, idx, level in self.rmap.mapped_by(mfn):
            root = self.rmap.root_of(table)
            dom = self.root_owner(root, self.conductor.seq) if root is not None else None
            if dom in self.dying:
                self.freed_mapped_dying += 1
                continue  # teardown frees what a dying domain's p2m still names: no vCPU of it runs again
            gfn = self.rmap.gfn_of(table, idx)
            what = "a table link" if not self.memory.read_pte(table, idx)[0] & 0xE else f"an L{level} leaf"
            op = self._call(hart)[0]
            where = f"PTE {table:#x}[{idx}] of dom{dom} (gfn {gfn:#x}, {what})"
            self.violation_count += 1
            key = ("mapped", mfn, self.memory.gen[mfn], table, idx)
            if key in self._seen:
                continue
            self._seen.add(key)
            culprit, how = op, ""
            first = self._mapped_first.get((mfn, table, idx))
            store = self.last_store.get(table, idx)
            stack: list[str] = []
            if first is not None and store is not None and store[0] <= first[0]:
                # the PTE has linked this frame since before an earlier free of it that was a finding:
                # the link is that free's leftover, whatever frees the frame now
                culprit = first[1]
                text = (
                    f"{op} freed mfn {mfn:#x} ({why}) while {where} still maps it: the link is the one {culprit} "
                    f"left at step {first[0]:,}, when it freed the frame under it, and nothing removed it since"
                )
            elif "p2m_free_subtree" in (stack := c_stack(2, 16)):  # (on a finding only: the free's own path)
                # the table walk freed it: it freed a frame a live PTE still links
                culprit = "p2m_free_subtree"
                last = len(stack) - stack[::-1].index("p2m_free_subtree")
                text = (
                    f"{op} freed mfn {mfn:#x} ({why}) in {' <- '.join(stack[: last + 1])}, while {where} still "
                    "maps it: p2m_free_subtree must free only frames no live PTE links"
                )
            else:
                mine = [p for p in self.puts.get(mfn, ()) if p[3] == dom and p[2] != op]
                if mine:  # the mapping domain's own reference went earlier, in another call, and the mapping stayed
                    pseq, _ph, culprit, _d = mine[-1]
                    how = f"; {culprit}(dom{dom}) dropped a reference at step {pseq:,} and left the mapping in place"
                text = (
                    f"{op} freed mfn {mfn:#x} ({why}) while {where} still maps it{how}: the mapping must be removed, "
                    "and flushed, before the last reference goes"
                )
            v = Violation(
                "freed-while-mapped",
                hart,
                dom,
                gfn,
                mfn,
                self.conductor.seq,
                f"mfn {mfn:#x} was freed while {where} still maps it: any hart can reach it through that mapping",
                [(self.conductor.seq, hart, "free", f"free: mfn {mfn:#x}: {why}, in {op}; {where} still maps it")],
                text,
                Cause("unmap-before-free", "freed-while-mapped", culprit, text),
            )
            self._mapped_first.setdefault((mfn, table, idx), (self.conductor.seq, culprit))
            self.mapped_frees.setdefault((mfn, self.conductor.seq), culprit)
            if self.bugs:
                v.missing += f" (bugs injected: {', '.join(self.bugs)})"
            self._record(v, count=False)

    def on_hyp_access(self, mfn: int, idx: int, write: bool) -> None:
        """Xen's own load or store to a frame that is free: a use after free, reported as it happens."""
        hart = self._hart()
        self.violation_count += 1
        key = ("hyp", mfn, self.memory.gen[mfn], write)
        if key in self._seen:
            return
        self._seen.add(key)
        op = self._call(hart)[0]
        path = c_stack(2, 12)  # (only here, on a finding: which of Xen's functions made the access)
        if path and hart is not None and not self.calls.get(hart):
            op = path[-1]  # no hypercall: a trap handler on a guest's behalf (do_trap), say, not the job's label
        within = f" (in {' <- '.join(path)})" if path else ""
        now = self.conductor.seq
        verb = "stores to" if write else "loads from"
        slot = f"{mfn:#x}[{idx}]" if idx >= 0 else f"{mfn:#x}"
        state = M.STATE_NAMES[self.memory.state[mfn]]
        chain: list[tuple[int, int | None, str, str]] = []
        frees = [ev for ev in self.frame_hist.get(mfn, ()) if ev[2] == "free"]
        for ev in self.frame_hist.get(mfn, ()):
            if ev[2] in ("alloc", "reuse") and (not frees or ev[0] <= frees[-1][0]):
                chain = [(ev[0], ev[1], "alloc", f"alloc: mfn {mfn:#x}: {ev[4]} (gen {ev[5]})")]
        if frees:
            x = frees[-1]
            chain.append((x[0], x[1], "free", f"free: mfn {mfn:#x}: {x[4]}"))
            freer = freed_by(str(x[4]), "the code that freed it")
            text = (
                f"{op} {verb} mfn {slot}{within} at step {now:,}, after "
                f"{self.frame_hist.free_op(mfn, x[0], freer)} freed it at step {x[0]:,} ({x[4]}): the free must "
                "come after the last use"
            )
        else:
            freer, text = "", f"{op} {verb} mfn {slot}{within}, which was never handed out"
        chain.append((now, hart, "use", f"Xen {verb} mfn {slot} (it is {state}), in {op}"))
        v = Violation(
            "xen-use-after-free",
            hart,
            self._dom(hart),
            None,
            mfn,
            now,
            f"Xen on hart {hart} ({op}) {verb} mfn {slot}, which is free ({state}): a use after free",
            chain,
            text,
            Cause("no-use-after-free", "xen-use-after-free", freer, text),
            "store" if write else "load",
        )
        if self.bugs:
            v.missing += f" (bugs injected: {', '.join(self.bugs)})"
        self._record(v, count=False)

    def on_stale_use(
        self, hart: int, entry: TlbEntry | None, mfn: int, gfn: int, frame_free: bool, write: bool
    ) -> None:
        if not frame_free:
            self.stale_benign += 1
            self.windows.use("used-unlinked")
            return
        self.windows.use("used-freed")
        mem = self.memory
        if write and mem.scrubbed[mfn] and mfn not in self.survivors:
            # it lands in a frame already scrubbed: unless scrubbed again, it survives into the next owner
            self.survivors[mfn] = (self.conductor.seq, hart, gfn, entry, self._last(mfn, "scrub"))
        what = (
            "walk read a freed table"
            if entry is None or not entry.leaf
            else ("write reached a freed frame" if write else "access reached a freed frame")
        )
        self._warn(
            ("warn", hart, mfn, entry.key if entry is not None else None),
            f"stale use at step {self.conductor.seq:,}: hart {hart} {what} mfn {mfn:#x} "
            f"(gfn {gfn:#x}); it is free but not reused yet",
            "stale-free",
            hart,
            mfn,
            gfn,
            "freed",
            lambda: self._explain(
                "stale-free",
                "leaf" if entry is not None and entry.leaf else "table",
                hart,
                entry,
                mfn,
                gfn,
                entry.ghost if entry is not None else 0,
                None,
                write,
            ),
        )

    def _warn(
        self,
        key: tuple[Any, ...],
        text: str,
        strict_cls: str,
        hart: int,
        mfn: int,
        gfn: int,
        label: str,
        explain: Callable[[], Violation] | None = None,
    ) -> None:
        """A counted warning (by kind); a violation of class ``strict_cls`` under --strict, explained as
        any violation is when ``explain`` can build its chain."""
        self.warning_count += 1
        first_of_kind = label not in self.warning_kinds
        self.warning_kinds[label] = self.warning_kinds.get(label, 0) + 1
        if key in self._seen:
            return
        self._seen.add(key)
        if self.strict:
            v = explain() if explain is not None else None
            if v is None:
                v = Violation(strict_cls, hart, self._dom(hart), gfn, mfn, self.conductor.seq, text)
            else:
                v.cls, v.headline = strict_cls, text
            self._record(v)
            return
        if len(self.warnings) < MAX_WARNINGS or first_of_kind:
            self.warnings.append(text)  # the first of each kind is always kept
        self.log.info(hart, "oracle.warning", mfn=mfn, gfn=gfn, text=text)

    def _last(self, mfn: int, kind: str) -> int:
        return self.frame_hist.last(mfn, kind)

    def on_alias_use(self, hart: int, entry: TlbEntry, gfn: int, root_mfn: int) -> None:
        self.windows.use("used-alias")
        self.violation_count += 1
        key = ("alias", hart, entry.root_mfn, root_mfn)
        if key in self._seen:
            return
        self._seen.add(key)
        other = self.root_owner(entry.root_mfn, entry.fill_seq)
        mine = self.root_owner(root_mfn, self.conductor.seq)
        whose = f"dom{other}'s" if other is not None else "another"
        mfn = gfn + entry.delta
        v = Violation(
            "vmid-alias",
            hart,
            self._dom(hart),
            gfn,
            mfn,
            self.conductor.seq,
            f"hart {hart} ({self._who(hart)}) translated gfn {gfn:#x} with an entry filled under {whose} root "
            f"mfn {entry.root_mfn:#x} and reached mfn {mfn:#x} ({self.memory.describe(mfn)}): VMID {entry.vmid} "
            f"is used by two address spaces on this hart",
        )
        how = "a speculative walk" if entry.spec else "a walk"
        v.chain = [
            (
                entry.fill_seq,
                hart,
                "fill",
                f"fill: {how} cached gfn {entry.gfn_base:#x} for VMID {entry.vmid} from {whose} tables "
                f"(root mfn {entry.root_mfn:#x})",
            ),
            (
                self.conductor.seq,
                hart,
                "use",
                f"stale use: dom{mine} (root mfn {root_mfn:#x}) runs with the same VMID {entry.vmid} and hits "
                "that entry",
            ),
        ]
        v.cause = self._alias_missing(v, hart, entry, other, mine)
        v.missing = v.cause.text
        if self.bugs:
            v.missing += f" (bugs injected: {', '.join(self.bugs)})"
        v.chain.sort(key=lambda c: c[0])
        self._record(v, count=False)

    def _vmid_owner(self, hart: int, vmid: int, at: int) -> tuple[int, int, int, int] | None:
        """(step, dom, vcpu, generation) of the last assignment of ``vmid`` on ``hart`` up to step ``at``."""
        best = None
        for key in ((hart, vmid), (None, vmid)):
            for ev in self.vmid_assigns.get(key, ()):
                if ev[0] <= at and (best is None or ev[0] >= best[0]):
                    best = ev
        return best

    def _alias_missing(self, v: Violation, hart: int, entry: TlbEntry, other: int | None, mine: int | None) -> Cause:
        """Why one VMID named two address spaces on this hart, from the VMID assignments and fences logged."""
        vmid, fill = entry.vmid, entry.fill_seq

        def cause(case: str, function: str, text: str) -> Cause:
            return Cause(FLUSH_ON_VMID, case, function, text)

        if vmid == 0 and not any(k[1] == 0 for k in self.vmid_assigns):
            return cause(
                "vmid/off",
                "p2m_ctxt_switch_to",
                f"a fence on hart {hart} when it switched from dom{other} to dom{mine}: VMIDs are off (every vCPU "
                "runs with VMID 0), so p2m_ctxt_switch_to must flush the G-stage TLB itself, as x86 SVM does "
                "for ASID 0",
            )
        at_fill = self._vmid_owner(hart, vmid, fill)
        now = self._vmid_owner(hart, vmid, self.conductor.seq)
        if at_fill is not None and at_fill[1] != other:
            seq, dom, vcpu, gen = at_fill
            v.chain.append(
                (seq, hart, "vmid", f"VMID {vmid} on hart {hart} given to dom{dom} vcpu{vcpu} (generation {gen})")
            )
            elsewhere = [
                (k[0], ev)
                for k, evs in self.vmid_assigns.items()
                if k[1] == vmid and k[0] not in (None, hart)
                for ev in evs
                if ev[1] == other and ev[0] <= fill
            ]
            if elsewhere:
                h2, (s2, _d, vc2, g2) = max(elsewhere, key=lambda x: x[1][0])
                v.chain.append(
                    (s2, h2, "vmid", f"VMID {vmid} on hart {h2} given to dom{other} vcpu{vc2} (generation {g2})")
                )
                return cause(
                    "vmid/kept-on-migration",
                    "vmid_flush_vcpu",
                    f"a new VMID for dom{other} vcpu{vc2} when it moved from hart {h2} to hart {hart}: it kept VMID "
                    f"{vmid} (generation {g2} of hart {h2}), which on hart {hart} belonged to dom{dom} vcpu{vcpu} "
                    f"since step {seq:,}; generations are per hart and all start at 1, so a vCPU that moves needs "
                    "vmid_flush_vcpu",
                )
            spec = " speculatively" if entry.spec else ""
            return cause(
                "vmid/before-hgatp",
                "p2m_ctxt_switch_to",
                f"a valid VMID for dom{other} before hgatp named its p2m: at step {fill:,} hart {hart} walked{spec} "
                f"dom{other}'s tables under VMID {vmid}, which on this hart belonged to dom{dom} vcpu{vcpu} since step "
                f"{seq:,}; p2m_ctxt_switch_to writes hgatp with the vCPU's previous VMID and only p2m_handle_vmenter, "
                "at the next return to the guest, gives it a current one",
            )
        if now is not None and at_fill is not None and now[0] > fill:
            seq, dom, vcpu, gen = now
            v.chain.append(
                (seq, hart, "vmid", f"VMID {vmid} on hart {hart} given to dom{dom} vcpu{vcpu} (generation {gen})")
            )
            flushed = [
                f
                for f in self.fences
                if f[1] == hart and f[2] in ("taken", "local") and fill <= f[0] <= seq and covers(f[3], entry)
            ]
            if not flushed:
                if gen != at_fill[3]:
                    return cause(
                        "vmid/rollover-no-flush",
                        "vmid_handle_vmenter",
                        f"the full HFENCE.GVMA of a new VMID generation: hart {hart} went from generation "
                        f"{at_fill[3]} to {gen} and gave VMID {vmid} to dom{dom} at step {seq:,} with dom{other}'s "
                        "entries still cached (vmid_handle_vmenter asks for the flush when it hands out VMID 1)",
                    )
                return cause(
                    "vmid/no-fence",
                    "vmid_handle_vmenter",
                    f"an HFENCE.GVMA on hart {hart} before VMID {vmid} passed from dom{other} to dom{dom} at step "
                    f"{seq:,} (generation {gen})",
                )
        if at_fill is None and now is not None and now[1] != other:
            # the entry's owner never got this VMID here: it brought it from another hart
            brought = [
                (k[0], ev)
                for k, evs in self.vmid_assigns.items()
                if k[1] == vmid and k[0] not in (None, hart)
                for ev in evs
                if ev[1] == other and ev[0] <= fill
            ]
            if brought:
                h2, (s2, _d, vc2, g2) = max(brought, key=lambda x: x[1][0])
                v.chain.append(
                    (s2, h2, "vmid", f"VMID {vmid} on hart {h2} given to dom{other} vcpu{vc2} (generation {g2})")
                )
                v.chain.append(
                    (
                        now[0],
                        hart,
                        "vmid",
                        f"VMID {vmid} on hart {hart} given to dom{now[1]} vcpu{now[2]} (generation {now[3]})",
                    )
                )
                return cause(
                    "vmid/kept-on-migration",
                    "vmid_flush_vcpu",
                    f"a new VMID for dom{other} vcpu{vc2} when it came to hart {hart}: it kept VMID {vmid} "
                    f"(generation {g2} of hart {h2}) and filled entries under it at step {fill:,}; hart {hart}, whose "
                    f"own generation {now[3]} had not handed VMID {vmid} out yet, gave it to dom{now[1]} "
                    f"vcpu{now[2]} at step {now[0]:,}; generations are per hart and all start at 1, so a vCPU that "
                    "moves needs vmid_flush_vcpu",
                )
        ctx = self.hart_ctx[hart]
        if ctx is not None and (now is None or (now[1], now[2]) != (ctx[0], ctx[1])):
            owner = f"dom{now[1]} vcpu{now[2]} (step {now[0]:,})" if now is not None else "nobody"
            return cause(
                "vmid/moved",
                "vmid_flush_vcpu",
                f"a new VMID for dom{ctx[0]} vcpu{ctx[1]} when it came to hart {hart}: it runs here with VMID "
                f"{vmid} from another hart, but on this hart VMID {vmid} belongs to {owner}; generations are per "
                "hart and all start at 1, so a vCPU that moves needs vmid_flush_vcpu",
            )
        return cause(
            "vmid/unexplained",
            "vmid_handle_vmenter",
            f"an HFENCE.GVMA for VMID {vmid} on hart {hart} between dom{other}'s use of it and dom{mine}'s (the "
            "VMID assignments logged do not say more)",
        )

    def on_reused_use(
        self, hart: int, kind: str, entry: TlbEntry | None, mfn: int, gfn: int, write: bool, pte: int = 0
    ) -> None:
        self.windows.use("used-reused")
        harm = self._harm(kind, mfn, write, pte)
        if harm is not None:
            self._harmless(hart, kind, entry, mfn, gfn, write, harm)
            return
        self.violation_count += 1
        key = (kind, hart, mfn, entry.key if entry is not None else None)
        if key in self._seen:
            return
        self._seen.add(key)
        ghost = entry.ghost if entry is not None else self.harts[hart].hgatp_clock
        reuse = self._first_reuse(mfn, ghost)
        cls = self._classify(hart, mfn, reuse) if kind == "leaf" else kind
        self._record(self._explain(cls, kind, hart, entry, mfn, gfn, ghost, reuse, write), count=False)

    def _harm(self, kind: str, mfn: int, write: bool, pte: int) -> tuple[str, str] | None:
        """None if this use of a reused frame does harm; else (warning kind, why it does not)."""
        mem = self.memory
        state = mem.state[mfn]
        now = self.memory.describe(mfn)
        if kind == "leaf":
            if mem.assigned[mfn]:
                if write or mem.written[mfn]:
                    return None
                return (
                    "unwritten",
                    f"a stale read of mfn {mfn:#x}, now {now}, before its new owner stored anything: it reads zeros",
                )
            if write:
                if mem.scrubbed[mfn]:
                    return "survives", ""  # reported when the frame is given away (see on_assign)
                return (
                    "wiped",
                    f"a stale write to mfn {mfn:#x}, handed out again ({now}) before any scrub: a scrub wipes it, "
                    "and an unscrubbed frame holds its previous owner's contents anyway",
                )
            return (
                "hand-out",
                f"a stale read of mfn {mfn:#x}, handed out again ({now}) but not yet given away: it sees the old "
                "contents or zeros",
            )
        # a walk read a PTE from a reused table frame
        if state in (M.TABLE, M.METADATA) and mem.assigned[mfn]:
            if pte:
                return None
            return (
                "zero-pte",
                f"the walk read a zeroed PTE from mfn {mfn:#x}, now {now}: it faults (a spurious guest-page fault)",
            )
        if state == M.DOMAIN and mem.assigned[mfn] and mem.written[mfn]:
            return None
        if state == M.XEN and mem.assigned[mfn]:
            return None
        return (
            "unwritten",
            f"the walk read mfn {mfn:#x}, now {now}, before its new owner stored anything: old PTEs or zeros",
        )

    def _harmless(
        self, hart: int, kind: str, entry: TlbEntry | None, mfn: int, gfn: int, write: bool, harm: tuple[str, str]
    ) -> None:
        label, why = harm
        if label == "survives":  # a stale write after the scrub, into a frame not yet given away: pending
            if mfn not in self.survivors:
                self.survivors[mfn] = (self.conductor.seq, hart, gfn, entry, self._last(mfn, "scrub"))
            return
        self._warn(
            ("harmless", kind, hart, mfn, entry.key if entry is not None else None),
            f"stale use at step {self.conductor.seq:,}: hart {hart} ({self._who(hart)}), gfn {gfn:#x}: {why}",
            "stale-handout",
            hart,
            mfn,
            gfn,
            label,
            lambda: self._explain(
                "stale-handout",
                kind,
                hart,
                entry,
                mfn,
                gfn,
                entry.ghost if entry is not None else 0,
                self._first_reuse(mfn, entry.ghost if entry is not None else 0),
                write,
            ),
        )

    def _survived(self, mfn: int, owner: int, ev: tuple[int, int, int, TlbEntry | None, int]) -> None:
        """A stale write that landed after the scrub is in the frame its new owner now has."""
        seq, hart, gfn, entry, scrub_seq = ev
        self.violation_count += 1
        key = ("survived", hart, mfn, entry.key if entry is not None else None)
        if key in self._seen:
            return
        self._seen.add(key)
        reuse = self._first_reuse(mfn, entry.ghost if entry is not None else 0)
        state = self.memory.state[mfn]
        if state == M.DOMAIN:
            cls = "reused-same-domain" if owner == self._dom(hart) else "reused-other-domain"
        elif state in (M.TABLE, M.METADATA):
            cls = "reused-as-table"
        else:
            cls = "reused-by-xen"
        scrub_at = scrub_seq if scrub_seq >= 0 else None
        v = self._explain(
            cls, "leaf", hart, entry, mfn, gfn, entry.ghost if entry else 0, reuse, True, at=seq, scrub=scrub_at
        )
        whom = f"dom{owner}" if owner != M.NO_OWNER else "Xen"
        scrub = f" at step {scrub_seq:,}" if scrub_seq >= 0 else ""
        v.headline = (
            f"hart {hart} wrote gfn {gfn:#x} through a stale TLB entry into mfn {mfn:#x} after it was scrubbed"
            f"{scrub}; the write survives: mfn {mfn:#x} is now {whom}'s ({self.memory.describe(mfn)})"
        )
        v.chain.append(
            (self.conductor.seq, self._hart(), "assign", f"assign: mfn {mfn:#x} given to {whom}, the stale write in it")
        )
        if scrub_seq >= 0:
            v.chain.append((scrub_seq, None, "scrub", f"scrub: mfn {mfn:#x} zeroed"))
        v.chain.sort(key=lambda c: c[0])
        v.seq = self.conductor.seq
        self._record(v, count=False)

    def _record(self, v: Violation, count: bool = True) -> None:
        if count:
            self.violation_count += 1
        self.distinct += 1
        v.n = self.distinct
        if self.groups.add(v.n, v) or len(self.violations) < MAX_REPORTED:
            self.violations.append(v)  # the first of every cause is kept, whatever the cap
        self.log.error(v.hart, "oracle.violation", n=self.distinct, **v.to_log())
        if self.stop_at_first and self.conductor.current is not None:
            raise SimulationStop("violation")

    def invariant(self, what: str, mfn: int | None = None, at_end: bool = False) -> None:
        hart = self._hart()
        v = Violation("invariant", hart, None, None, mfn, self.conductor.seq, what)
        if at_end and mfn is not None and mfn in self.leaf_puts:
            self._explain_lost_reference(v, mfn)
        elif what.startswith("refcount underflow") and mfn is not None:
            self._explain_underflow(v, mfn, _from(c_stack(2, 8), "put_page"))
        self._record(v)

    def _explain_underflow(self, v: Violation, mfn: int, path: list[str]) -> None:
        """A put with no reference left: which calls put the frame, from the stack of each."""
        now = " <- ".join(path[1:]) or "?"
        v.chain.append((self.conductor.seq, v.hart, "free", f"put_page(mfn {mfn:#x}) from {now}: no reference left"))
        before = self.puts.get(mfn, [])
        if before:
            seq, hart, op, _dom = before[-1]
            last = " <- ".join(self.put_paths.get(mfn, [])[1:]) or op
            v.chain.insert(0, (seq, hart, "free", f"put_page(mfn {mfn:#x}) from {last}: the last reference dropped"))
        caller = path[1] if len(path) > 1 else "put_page"
        same = before and self.put_paths.get(mfn, [])[1:2] == path[1:2]
        v.missing = f"one put_page too many in {caller}: mfn {mfn:#x} had no reference left" + (
            f", and {caller} had dropped the last one itself at step {before[-1][0]:,}" if same else ""
        )

    def _explain_lost_reference(self, v: Violation, mfn: int) -> None:
        """A reference nobody dropped: the last time a mapping of the frame was freed, what type was read?"""
        seq, hart, f = self.leaf_puts[mfn]
        table, idx, gfn, dom = f["table"], f["idx"], f.get("gfn", -1), f["dom"]
        where = f"dom{dom} gfn {gfn:#x}" if gfn >= 0 else f"dom{dom}"
        replaced = [ev for ev in self.pte_hist.get(table << 9 | idx, ()) if ev[0] <= seq and ev[2] == f["pte"]]
        if replaced:
            wseq, wh, old, new, op = replaced[-1]
            rsw = (new >> 8) & 3
            new_type = "an external type" if rsw == 3 else f"{type_name(rsw)}, kept in the PTE"
            v.chain.append(
                (
                    wseq,
                    wh,
                    "unmap",
                    f"replace: {op}: PTE {table:#x}[{idx}] ({where}) changed from {old:#x} (mfn {mfn:#x}, "
                    f"ext_storage) to {new:#x} ({new_type})",
                )
            )
        v.chain.append(
            (
                seq,
                hart,
                "free",
                f"p2m_free_subtree: the replaced PTE {f['pte']:#x} is ext_storage; its type read from table "
                f"{table:#x}'s metadata slot {idx} is {f['type']}: p2m_put_page drops no reference",
            )
        )
        v.chain.sort(key=lambda c: c[0])
        v.gfn = gfn if gfn >= 0 else None
        v.dom = dom
        if f["type"] in ("p2m_map_foreign_rw", "p2m_map_foreign_ro"):
            if not any(p[0] >= seq for p in self.puts.get(mfn, ())):
                v.headline = f"{v.headline}: the foreign mapping at {where} (PTE {table:#x}[{idx}]) was removed"
                v.missing = (
                    f"the put_page of {where}'s foreign reference to mfn {mfn:#x}: p2m_free_subtree read its type "
                    f"{f['type']} at step {seq:,} and called p2m_put_page, and no put_page of mfn {mfn:#x} "
                    "followed (p2m_put_foreign_page dropped nothing)"
                )
            return
        v.headline = (
            f"{v.headline}: the foreign mapping at {where} (PTE {table:#x}[{idx}]) was replaced, and the reference "
            "it held was never dropped"
        )
        cleared = replaced and (replaced[-1][3] >> 8) & 3 != 3
        v.missing = f"the put_page of {where}'s foreign reference to mfn {mfn:#x}: " + (
            "p2m_set_entry stored the new entry first (p2m_pte_from_mfn -> p2m_set_type cleared the metadata "
            "slot), then p2m_free_subtree read the replaced entry's type from that slot"
            if cleared
            else "p2m_free_subtree read the replaced entry's type from a metadata slot that no longer held it"
        )

    def stopped(self, cls: str, what: str) -> None:
        self._record(Violation(cls, self._hart(), None, None, None, self.conductor.seq, what))

    # -- classification and explanation ----------------------------------------------------

    def _dom(self, hart: int | None) -> int | None:
        ctx = self.hart_ctx[hart] if hart is not None else None
        return ctx[0] if ctx else None

    def _who(self, hart: int) -> str:
        ctx = self.hart_ctx[hart]
        if ctx is None:
            return "no vCPU"
        return f"dom{ctx[0]} vcpu{ctx[1]}, VMID {self.harts[hart].vmid}"

    def _first_reuse(self, mfn: int, ghost: int) -> tuple[Any, ...] | None:
        for ev in self.frame_hist.get(mfn, ()):
            if ev[2] in ("reuse", "alloc") and ev[3] > ghost:
                return ev
        return None

    def _classify(self, hart: int, mfn: int, reuse: tuple[Any, ...] | None) -> str:
        """By what the frame became when it was first handed out again."""
        if reuse is not None:
            state, owner = reuse[6], reuse[7]
        else:
            state, owner = self.memory.state[mfn], self.memory.owner[mfn]
        if state == M.DOMAIN:
            return "reused-same-domain" if owner == self._dom(hart) else "reused-other-domain"
        if state in (M.TABLE, M.METADATA, M.POOL):
            return "reused-as-table"
        return "reused-by-xen"

    def _walked_locations(self, entry: TlbEntry | None, gfn: int) -> list[tuple[int, int, int]]:
        """(fill step, table, index) of every PTE the translation was built from, through the cached
        non-leaf entries its walks started below."""
        locs = []
        while entry is not None:
            locs += [(entry.fill_seq, table, self.mode.gfn_index(gfn, level) & 511) for level, table, _ in entry.path]
            locs.append((entry.fill_seq, entry.src_mfn, entry.src_idx))
            entry = entry.via
        return locs

    def _unlink(self, entry: TlbEntry | None, gfn: int) -> tuple[Any, ...] | None:
        """The first change, after it was read, to any PTE this translation was built from."""
        unmap = None
        for since, table, idx in self._walked_locations(entry, gfn):
            for ev in self.pte_hist.get(table << 9 | idx, ()):
                if ev[0] >= since:
                    if unmap is None or ev[0] < unmap[0]:
                        unmap = (ev[0], ev[1], (table, idx), ev[2], ev[3], ev[4])
                    break
        return unmap

    def _explain(
        self,
        cls: str,
        kind: str,
        hart: int,
        entry: TlbEntry | None,
        mfn: int,
        gfn: int,
        ghost: int,
        reuse: tuple[Any, ...] | None,
        write: bool = False,
        at: int | None = None,
        scrub: int | None = None,
    ) -> Violation:
        """The chain of one stale use and its cause (``engine.cause``), from the run's records."""
        now = self.conductor.seq if at is None else at
        fill_seq = entry.fill_seq if entry is not None else 0
        chain: list[tuple[int, int | None, str, str]] = []
        if entry is not None:
            walked = " -> ".join(f"L{lvl} mfn {t:#x} (gen {g})" for lvl, t, g in entry.path)
            what = "leaf" if entry.leaf else "non-leaf"
            target = f"mfn {entry.ppn:#x}" if entry.leaf else f"table mfn {entry.ppn:#x}"
            how = "speculative walk" if entry.spec else "walk"
            chain.append(
                (
                    fill_seq,
                    hart,
                    "fill",
                    f"fill: {how} of gfn {gfn:#x}: {walked}; cached {what} entry "
                    f"(VMID {entry.vmid}, L{entry.level}, gfn {entry.gfn_base:#x}) -> {target}",
                )
            )
        unmap = self._unlink(entry, gfn)
        if unmap is not None:
            seq, h, (t, i), old, new, op = unmap
            verb = "cleared" if not new & 1 else f"changed to {new:#x}"
            chain.append((seq, h, "unmap", f"unmap: {op}: PTE {t:#x}[{i}] {verb} (was {old:#x})"))
        reuse_seq = reuse[0] if reuse is not None else now
        # the frees that ended the life the translation points into (the entry may be filled after them)
        if reuse is not None:
            since = self._life_start(mfn, reuse[0] - 1)
        else:
            since = self._life_start(mfn, now) if entry is not None else self._hgatp_since(hart, now)
        frees, free_ord = [], 0
        for ev in self.frame_hist.get(mfn, ()):
            if ev[2] == "free" and since <= ev[0] <= reuse_seq:
                chain.append((ev[0], ev[1], "free", f"free: mfn {mfn:#x}: {ev[4]}"))
                free_ord = free_ord or ev[3]
                frees.append(ev[0])
        assigns = [ev[0] for ev in self.frame_hist.get(mfn, ()) if ev[2] == "assign"]
        given = next((a for a in assigns if a >= reuse[0]), None) if reuse is not None else None
        root = entry.root_mfn if entry is not None else mfn
        st = Stale(
            hart=hart,
            entry=entry,
            mfn=mfn,
            gfn=gfn,
            kind="leaf" if kind == "leaf" else kind if kind == "dangling-root" else "table",
            use=now,
            dom=self.root_owner(root, fill_seq if entry is not None else since),
            unlink=unmap[0] if unmap is not None else None,
            frees=frees,
            free_ord=free_ord,
            reuse=reuse[0] if reuse is not None else None,
            given=given,
            scrub=scrub,
        )
        cause = self.diagnosis.dangling_root(st) if kind == "dangling-root" else self.diagnosis.cause(st)
        chain.extend(cause.evidence)
        if reuse is not None:
            chain.append(
                (reuse[0], reuse[1], "reuse", f"reuse: mfn {mfn:#x} handed out again: {reuse[4]} (gen {reuse[5]})")
            )
        chain.append((now, hart, "use", self._use_text(kind, hart, entry, mfn, gfn, write)))
        chain = sorted(dict.fromkeys(chain), key=lambda c: c[0])
        missing = cause.text
        if self.bugs:
            missing += f" (bugs injected: {', '.join(self.bugs)})"
        headline = self._headline(cls, kind, hart, entry, mfn, gfn, write)
        access = "write" if write else ("read" if kind == "leaf" else "walk")
        return Violation(cls, hart, self._dom(hart), gfn, mfn, now, headline, chain, missing, cause, access)

    def root_owner(self, mfn: int, at: int) -> int | None:
        """The domain whose root ``mfn`` was at step ``at``."""
        owner = None
        for seq, dom in self.roots.get(mfn, ()):
            if seq <= at:
                owner = dom
        return owner

    def _life_start(self, mfn: int, at: int) -> int:
        """The step the frame was last handed out at or before ``at``: the life the entry points into."""
        start = 0
        for ev in self.frame_hist.get(mfn, ()):
            if ev[0] > at:
                break
            if ev[2] in ("alloc", "reuse"):
                start = ev[0]
        return start

    def _hgatp_since(self, hart: int, now: int) -> int:
        """The step of the hgatp write the walk started from (its root's frees before it are another life)."""
        last = 0
        for seq, hgatp, _ctx in self.hgatp_hist.get(hart, ()):
            if seq <= now and hgatp:
                last = seq
        return last

    def _use_text(self, kind: str, hart: int, entry: TlbEntry | None, mfn: int, gfn: int, write: bool = False) -> str:
        now_is = self.memory.describe(mfn)
        if kind == "leaf":
            verb = "writes" if write else "reads"
            return f"stale use: hart {hart} ({self._who(hart)}) {verb} gfn {gfn:#x} -> mfn {mfn:#x}, now {now_is}"
        spec = "speculative " if self.harts[hart].speculating else ""
        if kind == "dangling-root":
            return f"stale use: hart {hart} {spec}walks gfn {gfn:#x} from its hgatp root mfn {mfn:#x}, now {now_is}"
        if write and entry is not None and entry.leaf:
            return (
                f"stale use: hart {hart} stores to gfn {gfn:#x} and its hardware A/D update sets D in the PTE "
                f"the entry was read from, in table mfn {mfn:#x}, now {now_is}"
            )
        sets = " and sets its A/D bits (the hardware's update)" if write else ""
        return (
            f"stale use: hart {hart} {spec}walk of gfn {gfn:#x} reads a PTE from table mfn {mfn:#x}{sets}, now {now_is}"
        )

    def _headline(
        self, cls: str, kind: str, hart: int, entry: TlbEntry | None, mfn: int, gfn: int, write: bool = False
    ) -> str:
        who = self._who(hart)
        if write and kind != "leaf":
            now = self.memory.describe(mfn)
            if entry is not None and entry.leaf:
                return (
                    f"hart {hart} ({who}) stored to gfn {gfn:#x} through its TLB entry, and its hardware A/D update "
                    f"set D in table mfn {mfn:#x}, where the entry was read from, which was freed and is now {now}"
                )
            return (
                f"hart {hart} ({who}) walked gfn {gfn:#x} through a stale non-leaf entry -> table mfn {mfn:#x}, "
                f"which was freed and is now {now}, and its hardware A/D update wrote a PTE there"
            )
        if kind == "leaf":
            return (
                f"hart {hart} ({who}) accessed gfn {gfn:#x} through a stale TLB entry -> mfn {mfn:#x}, "
                f"which was freed and is now {self.memory.describe(mfn)}"
            )
        if kind == "dangling-root":
            return f"hart {hart} ({who}) walked from a freed hgatp root mfn {mfn:#x}, now {self.memory.describe(mfn)}"
        return (
            f"hart {hart} ({who}) walked gfn {gfn:#x} through a stale non-leaf entry -> table mfn {mfn:#x}, "
            f"which was freed and is now {self.memory.describe(mfn)}"
        )

    # -- invariants --------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {
            "frames_freed": self.frames_freed,
            "frames_reused": self.frames_reused,
            "stale_benign": self.stale_benign,
            "freed_mapped_dying": self.freed_mapped_dying,
        }
