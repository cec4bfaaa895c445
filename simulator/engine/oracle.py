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
  invariant                   refcount underflow, double free, pool accounting,
                              a frame in no or two places, leftovers after destroy;
  deadlock / panic            the model stopped: nobody could run / Xen panicked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simulator.engine.conductor import SimulationStop
from simulator.riscv import memory as M
from simulator.riscv.observer import Observer
from simulator.riscv.pte import GStageMode
from simulator.xen.p2m import type_name

if TYPE_CHECKING:
    from simulator.engine.conductor import Conductor
    from simulator.engine.log import EventLog
    from simulator.riscv.hart import Hart
    from simulator.riscv.sbi import FenceRequest
    from simulator.riscv.tlb import TlbEntry

MAX_REPORTED = 16
MAX_WARNINGS = 16


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

    def to_log(self) -> dict[str, Any]:
        """The structured form written to the log, from which `p2msim inspect` draws timelines."""
        return {
            "cls": self.cls,
            "dom": self.dom,
            "gfn": self.gfn,
            "mfn": self.mfn,
            "headline": self.headline,
            "chain": [{"seq": s, "hart": h, "kind": k, "text": t} for s, h, k, t in self.chain],
            "missing": self.missing,
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


def _covers(req: FenceRequest, e: TlbEntry) -> bool:
    """Would this local HFENCE.GVMA have removed entry ``e``?"""
    if req.vmid is not None and req.vmid != e.vmid:
        return False
    if req.gfns is None:
        return True
    return e.leaf and any(e.gfn_base <= g < e.gfn_base + (1 << (9 * e.level)) for g in req.gfns)


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
        self.violations: list[Violation] = []
        self.violation_count = 0
        self.distinct = 0
        self.warnings: list[str] = []
        self.warning_count = 0
        # warnings by kind: freed (not reused), hand-out (reused, not yet given away), wiped (a write the
        # scrub wiped), unwritten (the new owner stored nothing yet), zero-pte (a walk read zeros: it faults)
        self.warning_kinds: dict[str, int] = {}
        self.stale_benign = 0
        self.frames_freed = 0
        self.frames_reused = 0
        self._seen: set[tuple[Any, ...]] = set()
        # per-hart context from the hypervisor's narrative
        self.hart_ctx: list[tuple[int, int, int] | None] = [None] * len(harts)  # (dom, vcpu, vmid)
        # history for explanations
        # mfn -> [(seq, hart, kind, stamp, why, gen, state, owner)]
        self.frame_hist: dict[int, list[tuple[Any, ...]]] = {}
        self.pte_hist: dict[tuple[int, int], list[tuple[int, int | None, int, int, str]]] = {}
        self.fences: list[tuple[int, int, str, FenceRequest]] = []
        self.flushes: list[tuple[int, int | None, int, list[int]]] = []  # seq, hart, dom, mask
        self.roots: dict[int, int] = {}  # root mfn -> domain
        self.reuse_flushes: list[tuple[int, int | None, int, int]] = []  # seq, hart, mfn, order
        self.no_flush_handouts: dict[int, int] = {}  # mfn -> step it was handed out with MEMF_no_tlbflush
        # stale writes that landed after the frame's scrub: mfn -> (seq, hart, gfn, entry, scrub seq)
        self.survivors: dict[int, tuple[int, int, int, TlbEntry | None, int]] = {}
        self.wiped = 0  # stale writes a later scrub wiped
        self.leaf_puts: dict[int, tuple[int, int | None, dict[str, Any]]] = {}  # mfn -> p2m_free_subtree.leaf
        self.cpu_events: dict[int, list[tuple[int, str]]] = {}  # hart -> [(step, "down" | "up")]
        self.last_switch_out: dict[tuple[int, int], int] = {}  # (hart, dom) -> step its vCPU last left
        self.flush_dirty: dict[int, list[int]] = {}  # p2m_tlb_flush step -> d->dirty_cpumask then
        self.sbi_errors: list[tuple[int, int, int, str]] = []  # (step, hart, SBI error, printk) of failed ecalls
        self.hgatp_writes: dict[int, tuple[int, int, Any]] = {}  # hart -> (step, hgatp, who ran) of its last write
        # (hart, vmid) -> [(step, dom, vcpu, generation)]; hart None for per-domain VMIDs (arm-broadcast)
        self.vmid_assigns: dict[tuple[int | None, int], list[tuple[int, int, int, int]]] = {}

    # -- who is doing what ---------------------------------------------------------

    def _hart(self) -> int | None:
        cur = self.conductor.current
        if cur is None or cur.index >= len(self.harts):
            return None
        return cur.index

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
        self.frame_hist.setdefault(mfn, []).append(
            (self.conductor.seq, hart, "reuse" if gen > 1 else "alloc", self.memory.stamp[mfn], why, gen, state, owner)
        )
        if self.log.enabled:
            self.log.debug(hart, "frame.hand_out", mfn=mfn, gen=gen, state=M.STATE_NAMES[state], owner=owner, why=why)

    def on_assign(self, mfn: int, owner: int) -> None:
        hart = self._hart()
        self.frame_hist.setdefault(mfn, []).append(
            (self.conductor.seq, hart, "assign", 0, "", self.memory.gen[mfn], self.memory.state[mfn], owner)
        )
        if self.log.enabled:
            self.log.debug(hart, "frame.assign", mfn=mfn, gen=self.memory.gen[mfn], owner=owner)
        ev = self.survivors.pop(mfn, None)
        if ev is not None:
            self._survived(mfn, owner, ev)

    def on_scrub(self, mfn: int, why: str) -> None:
        hart = self._hart()
        hist = self.frame_hist.get(mfn)
        if hist is not None:  # only frames with a history matter to an explanation
            hist.append((self.conductor.seq, hart, "scrub", 0, why, self.memory.gen[mfn], self.memory.state[mfn], -1))
        if self.survivors.pop(mfn, None) is not None:
            self.wiped += 1
        if self.log.enabled:
            self.log.debug(hart, "frame.scrub", mfn=mfn, gen=self.memory.gen[mfn], why=why)

    def on_retire(self, mfn: int, old_state: int, new_state: int, gen: int, why: str) -> None:
        hart = self._hart()
        if old_state == M.FREE:
            self.invariant(f"double free of mfn {mfn:#x} ({why})", mfn=mfn)
            return
        self.frames_freed += 1
        self.frame_hist.setdefault(mfn, []).append((self.conductor.seq, hart, "free", 0, why, gen, new_state, -1))
        if self.log.enabled:
            self.log.debug(hart, "frame.free", mfn=mfn, gen=gen, to=M.STATE_NAMES[new_state], why=why)

    def on_pte_write(self, mfn: int, idx: int, old: int, new: int) -> None:
        hart = self._hart()
        if old & 1:
            self.pte_hist.setdefault((mfn, idx), []).append((self.conductor.seq, hart, old, new, self._op(hart)))
        if self.log.enabled:
            self.log.debug(hart, "pte.write", mfn=mfn, idx=idx, old=old, new=new)

    def on_fill(self, hart: int, entry: TlbEntry) -> None:
        if self.log.enabled:
            self.log.debug(
                hart,
                "tlb.fill",
                leaf=entry.leaf,
                vmid=entry.vmid,
                level=entry.level,
                gfn=entry.gfn_base,
                mfn=entry.ppn,
                path=[t for _, t, _ in entry.path],
            )

    def on_fence(self, hart: int, what: str, req: FenceRequest) -> None:
        self.fences.append((self.conductor.seq, hart, what, req))
        if self.log.enabled:
            gfns = None if req.gfns is None else list(req.gfns)
            self.log.debug(hart, f"fence.{what}", id=req.id, src=req.src, dst=req.dst, vmid=req.vmid, gfns=gfns)

    def on_hgatp(self, hart: int, hgatp: int) -> None:
        self.hgatp_writes[hart] = (self.conductor.seq, hgatp, self.hart_ctx[hart])
        if self.log.enabled:
            self.log.debug(hart, "hgatp.write", hgatp=hgatp)

    def event(self, hart: int, name: str, **fields: Any) -> None:
        if name == "switch_in":
            self.hart_ctx[hart] = (fields["dom"], fields["vcpu"], fields["vmid"])
        elif name == "switch_out":
            self.hart_ctx[hart] = None
            self.last_switch_out[(hart, fields["dom"])] = self.conductor.seq
        elif name == "p2m_tlb_flush":
            self.flushes.append((self.conductor.seq, hart, fields["dom"], list(fields["mask"])))
            if "dirty" in fields:
                self.flush_dirty[self.conductor.seq] = list(fields["dirty"])
        elif name == "printk" and "rc" in fields:
            self.sbi_errors.append((self.conductor.seq, hart, fields["rc"], fields["text"]))
        elif name == "p2m_alloc_root_table":
            self.roots[fields["mfn"]] = fields["dom"]
        elif name == "page_alloc.reuse_flush":
            self.reuse_flushes.append((self.conductor.seq, hart, fields["mfn"], fields["order"]))
        elif name == "page_alloc.no_tlbflush":
            for pg in range(fields["mfn"], fields["mfn"] + (1 << fields["order"])):
                self.no_flush_handouts[pg] = self.conductor.seq
        elif name in ("hsm.stop", "hsm.started"):  # the machine's own word, whatever Xen's code did
            self.cpu_events.setdefault(hart, []).append((self.conductor.seq, "down" if name == "hsm.stop" else "up"))
        elif name == "vmid.assign":
            key = (hart if fields.get("vcpu", -1) >= 0 else None, fields["vmid"])
            self.vmid_assigns.setdefault(key, []).append(
                (self.conductor.seq, fields["dom"], fields["vcpu"], fields["generation"])
            )
        elif name == "p2m_free_subtree.leaf":
            self.leaf_puts[fields["mfn"]] = (self.conductor.seq, hart, dict(fields))
        elif name == "invariant":
            self.invariant(f"{fields['what']} (mfn {fields.get('mfn', 0):#x})", mfn=fields.get("mfn"))
            return
        if self.log.enabled:
            self.log.debug(hart, name, **fields)

    # -- findings ------------------------------------------------------------------------

    def on_stale_use(
        self, hart: int, entry: TlbEntry | None, mfn: int, gfn: int, frame_free: bool, write: bool
    ) -> None:
        if not frame_free:
            self.stale_benign += 1
            return
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
        )

    def _warn(
        self, key: tuple[Any, ...], text: str, strict_cls: str, hart: int, mfn: int, gfn: int, label: str
    ) -> None:
        """A counted warning (by kind); a violation of class ``strict_cls`` under --strict."""
        self.warning_count += 1
        first_of_kind = label not in self.warning_kinds
        self.warning_kinds[label] = self.warning_kinds.get(label, 0) + 1
        if key in self._seen:
            return
        self._seen.add(key)
        if self.strict:
            self._record(Violation(strict_cls, hart, self._dom(hart), gfn, mfn, self.conductor.seq, text))
            return
        if len(self.warnings) < MAX_WARNINGS or first_of_kind:
            self.warnings.append(text)  # the first of each kind is always kept
        self.log.info(hart, "oracle.warning", mfn=mfn, gfn=gfn, text=text)

    def _last(self, mfn: int, kind: str) -> int:
        for ev in reversed(self.frame_hist.get(mfn, ())):
            if ev[2] == kind:
                return ev[0]
        return -1

    def on_alias_use(self, hart: int, entry: TlbEntry, gfn: int, root_mfn: int) -> None:
        self.violation_count += 1
        key = ("alias", hart, entry.root_mfn, root_mfn)
        if key in self._seen:
            return
        self._seen.add(key)
        other = self.roots.get(entry.root_mfn)
        mine = self.roots.get(root_mfn)
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
        v.missing = self._alias_missing(v, hart, entry, other, mine)
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

    def _alias_missing(self, v: Violation, hart: int, entry: TlbEntry, other: int | None, mine: int | None) -> str:
        """Why one VMID named two address spaces on this hart, from the VMID assignments and fences logged."""
        vmid, fill = entry.vmid, entry.fill_seq
        if vmid == 0 and not any(k[1] == 0 for k in self.vmid_assigns):
            return (
                f"a fence on hart {hart} when it switched from dom{other} to dom{mine}: VMIDs are off (every vCPU "
                "runs with VMID 0), so p2m_ctxt_switch_to must flush the G-stage TLB itself, as x86 SVM does "
                "for ASID 0"
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
                return (
                    f"a new VMID for dom{other} vcpu{vc2} when it moved from hart {h2} to hart {hart}: it kept VMID "
                    f"{vmid} (generation {g2} of hart {h2}), which on hart {hart} belonged to dom{dom} vcpu{vcpu} "
                    f"since step {seq:,}; generations are per hart and all start at 1, so a vCPU that moves needs "
                    "vmid_flush_vcpu"
                )
            spec = " speculatively" if entry.spec else ""
            return (
                f"a valid VMID for dom{other} before hgatp named its p2m: at step {fill:,} hart {hart} walked{spec} "
                f"dom{other}'s tables under VMID {vmid}, which on this hart belonged to dom{dom} vcpu{vcpu} since step "
                f"{seq:,}; p2m_ctxt_switch_to writes hgatp with the vCPU's previous VMID and only p2m_handle_vmenter, "
                "at the next return to the guest, gives it a current one"
            )
        if now is not None and at_fill is not None and now[0] > fill:
            seq, dom, vcpu, gen = now
            v.chain.append(
                (seq, hart, "vmid", f"VMID {vmid} on hart {hart} given to dom{dom} vcpu{vcpu} (generation {gen})")
            )
            flushed = [
                f
                for f in self.fences
                if f[1] == hart and f[2] in ("taken", "local") and fill <= f[0] <= seq and _covers(f[3], entry)
            ]
            if not flushed:
                if gen != at_fill[3]:
                    return (
                        f"the full HFENCE.GVMA of a new VMID generation: hart {hart} went from generation "
                        f"{at_fill[3]} to {gen} and gave VMID {vmid} to dom{dom} at step {seq:,} with dom{other}'s "
                        "entries still cached (vmid_handle_vmenter asks for the flush when it hands out VMID 1)"
                    )
                return (
                    f"an HFENCE.GVMA on hart {hart} before VMID {vmid} passed from dom{other} to dom{dom} at step "
                    f"{seq:,} (generation {gen})"
                )
        ctx = self.hart_ctx[hart]
        if ctx is not None and (now is None or (now[1], now[2]) != (ctx[0], ctx[1])):
            owner = f"dom{now[1]} vcpu{now[2]} (step {now[0]:,})" if now is not None else "nobody"
            return (
                f"a new VMID for dom{ctx[0]} vcpu{ctx[1]} when it came to hart {hart}: it runs here with VMID "
                f"{vmid} from another hart, but on this hart VMID {vmid} belongs to {owner}; generations are per "
                "hart and all start at 1, so a vCPU that moves needs vmid_flush_vcpu"
            )
        return f"an HFENCE.GVMA for VMID {vmid} on hart {hart} between dom{other}'s use of it and dom{mine}'s"

    def on_reused_use(
        self, hart: int, kind: str, entry: TlbEntry | None, mfn: int, gfn: int, write: bool, pte: int = 0
    ) -> None:
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
        v = self._explain(cls, "leaf", hart, entry, mfn, gfn, entry.ghost if entry else 0, reuse, True, at=seq)
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
        reuse_seq = reuse[0] if reuse is not None else self.conductor.seq
        v.missing = self._survival_text(hart, mfn, seq, scrub_seq, reuse_seq)
        if self.bugs:
            v.missing += f" (bugs injected: {', '.join(self.bugs)})"
        self._record(v, count=False)

    def _record(self, v: Violation, count: bool = True) -> None:
        if count:
            self.violation_count += 1
        self.distinct += 1
        if len(self.violations) < MAX_REPORTED:
            self.violations.append(v)
        self.log.error(v.hart, "oracle.violation", n=self.distinct, **v.to_log())
        if self.stop_at_first and self.conductor.current is not None:
            raise SimulationStop("violation")

    def invariant(self, what: str, mfn: int | None = None, at_end: bool = False) -> None:
        hart = self._hart()
        v = Violation("invariant", hart, None, None, mfn, self.conductor.seq, what)
        if at_end and mfn is not None and mfn in self.leaf_puts:
            self._explain_lost_reference(v, mfn)
        self._record(v)

    def _explain_lost_reference(self, v: Violation, mfn: int) -> None:
        """A reference nobody dropped: the last time a mapping of the frame was freed, what type was read?"""
        seq, hart, f = self.leaf_puts[mfn]
        table, idx, gfn, dom = f["table"], f["idx"], f.get("gfn", -1), f["dom"]
        where = f"dom{dom} gfn {gfn:#x}" if gfn >= 0 else f"dom{dom}"
        replaced = [ev for ev in self.pte_hist.get((table, idx), ()) if ev[0] <= seq and ev[2] == f["pte"]]
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

    def _walked_locations(self, entry: TlbEntry | None, gfn: int) -> list[tuple[int, int]]:
        if entry is None:
            return []
        locs = [(table, self.mode.gfn_index(gfn, level) & 511) for level, table, _ in entry.path]
        locs.append((entry.src_mfn, entry.src_idx))
        return locs

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
    ) -> Violation:
        now = self.conductor.seq if at is None else at
        fill_seq = entry.fill_seq if entry is not None else 0
        chain: list[tuple[int, int | None, str, str]] = []
        if entry is not None:
            walked = " -> ".join(f"L{lvl} mfn {t:#x} (gen {g})" for lvl, t, g in entry.path)
            what = "leaf" if entry.leaf else "non-leaf"
            target = f"mfn {entry.ppn:#x}" if entry.leaf else f"table mfn {entry.ppn:#x}"
            chain.append(
                (
                    fill_seq,
                    hart,
                    "fill",
                    f"fill: walk of gfn {gfn:#x}: {walked}; cached {what} entry "
                    f"(VMID {entry.vmid}, L{entry.level}, gfn {entry.gfn_base:#x}) -> {target}",
                )
            )
        # the unmap: the first change after the fill to any PTE this translation was built from
        unmap = None
        for loc in self._walked_locations(entry, gfn):
            for ev in self.pte_hist.get(loc, ()):
                if ev[0] >= fill_seq and (unmap is None or ev[0] < unmap[0]):
                    unmap = (ev[0], ev[1], loc, ev[2], ev[3], ev[4])
                    break
        if unmap is not None:
            seq, h, (t, i), old, new, op = unmap
            verb = "cleared" if not new & 1 else f"changed to {new:#x}"
            chain.append((seq, h, "unmap", f"unmap: {op}: PTE {t:#x}[{i}] {verb} (was {old:#x})"))
        frees = [ev for ev in self.frame_hist.get(mfn, ()) if ev[2] == "free" and ev[0] >= fill_seq]
        reuse_seq = reuse[0] if reuse is not None else now
        free_seq = None
        for ev in frees:
            if ev[0] <= reuse_seq:
                chain.append((ev[0], ev[1], "free", f"free: mfn {mfn:#x}: {ev[4]}"))
                free_seq = ev[0]
        # fences that concern the hart holding the stale entry
        start = unmap[0] if unmap is not None else fill_seq
        fences_to_hart = [
            f for f in self.fences if f[3].dst == hart and f[0] >= start and f[2] in ("sent", "local", "taken")
        ]
        for seq, h, what, req in fences_to_hart:
            if what == "sent":
                state = f"taken at step {req.taken_seq:,}" if req.taken_seq >= 0 else "not taken yet"
                chain.append((seq, h, "fence.sent", f"fence sent to hart {hart}: {req.describe()} ({state})"))
            elif what == "local" and h == hart:
                chain.append((seq, h, "fence.local", f"local {req.describe()} on hart {hart}"))
            elif what == "taken":
                chain.append(
                    (seq, h, "fence.taken", f"hart {hart} takes the fence from hart {req.src} and acknowledges")
                )
        for seq, h, dom, mask in self.flushes:
            if start <= seq <= reuse_seq and hart not in mask:
                chain.append(
                    (
                        seq,
                        h,
                        "flush",
                        f"p2m_tlb_flush(dom{dom}) fences harts {mask or 'none (empty mask)'}: not hart {hart}",
                    )
                )
            elif start <= seq <= reuse_seq:
                err = next((e for e in self.sbi_errors if e[1] == h and seq <= e[0] <= seq + 2 * len(mask) + 2), None)
                if err is not None:
                    chain.append(
                        (err[0], h, "flush", f"p2m_tlb_flush(dom{dom}) names hart {hart}, but {err[3]}; Xen goes on")
                    )
        if reuse is not None:
            chain.append(
                (reuse[0], reuse[1], "reuse", f"reuse: mfn {mfn:#x} handed out again: {reuse[4]} (gen {reuse[5]})")
            )
        chain.append((now, hart, "use", self._use_text(kind, hart, entry, mfn, gfn, write)))
        chain.sort(key=lambda c: c[0])

        missing = self._missing(hart, mfn, unmap[0] if unmap else None, free_seq, reuse, kind, entry)
        if self.bugs:
            missing += f" (bugs injected: {', '.join(self.bugs)})"
        headline = self._headline(cls, kind, hart, entry, mfn, gfn)
        return Violation(cls, hart, self._dom(hart), gfn, mfn, now, headline, chain, missing)

    def _use_text(self, kind: str, hart: int, entry: TlbEntry | None, mfn: int, gfn: int, write: bool = False) -> str:
        now_is = self.memory.describe(mfn)
        if kind == "leaf":
            verb = "writes" if write else "reads"
            return f"stale use: hart {hart} ({self._who(hart)}) {verb} gfn {gfn:#x} -> mfn {mfn:#x}, now {now_is}"
        spec = "speculative " if self.harts[hart].speculating else ""
        if kind == "dangling-root":
            return f"stale use: hart {hart} {spec}walks gfn {gfn:#x} from its hgatp root mfn {mfn:#x}, now {now_is}"
        return f"stale use: hart {hart} {spec}walk of gfn {gfn:#x} reads a PTE from table mfn {mfn:#x}, now {now_is}"

    def _headline(self, cls: str, kind: str, hart: int, entry: TlbEntry | None, mfn: int, gfn: int) -> str:
        who = self._who(hart)
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

    def _missing(
        self,
        hart: int,
        mfn: int,
        unmap_seq: int | None,
        free_seq: int | None,
        reuse: Any,
        kind: str,
        entry: TlbEntry | None = None,
    ) -> str:
        """Name the step that was missing or late, from what the machine saw."""
        fill_seq = entry.fill_seq if entry is not None else 0
        reuse_seq = reuse[0] if reuse is not None else self.conductor.seq
        downs = [ev for ev in self.cpu_events.get(hart, ()) if ev[0] >= fill_seq]
        if any(k == "down" for _, k in downs) and any(k == "up" for _, k in downs):
            down = next(sq for sq, k in downs if k == "down")
            up = next(sq for sq, k in downs if k == "up" and sq > down)
            return (
                f"a full HFENCE.GVMA on hart {hart} when it came back up at step {up:,} (start_secondary): it was "
                f"stopped at step {down:,}, fences skip a stopped hart, and nothing promises what a stopped hart's "
                "TLB still holds"
            )
        if kind == "dangling-root" and hart in self.hgatp_writes:
            seq, _hgatp, ctx = self.hgatp_writes[hart]
            whose = f"dom{ctx[0]}'s root" if ctx is not None else "the root"
            ran = f" when dom{ctx[0]} vcpu{ctx[1]} ran" if ctx is not None else ""
            idle = " (the hart is idle)" if self.hart_ctx[hart] is None else ""
            freed = f" was freed at step {free_seq:,} and" if free_seq is not None else ""
            return (
                f"a Bare hgatp on hart {hart} before {whose}{freed} was reused: hgatp still names it{idle}, as "
                f"written at step {seq:,}{ran}, and a walk may start there at any time (p2m_ctxt_switch_from "
                "zeroes VSATP only, and the idle vCPU leaves hgatp as it was)"
            )
        lo = unmap_seq if unmap_seq is not None else 0
        dom = self._dom(hart)
        taken = [
            f
            for f in self.fences
            if f[1] == hart and f[2] in ("taken", "local") and lo <= f[0] <= reuse_seq and f[0] >= fill_seq
        ]
        missed = [f for f in taken if entry is not None and not _covers(f[3], entry)]
        if missed:
            req = missed[0][3]
            why = (
                "an address-specific fence keeps non-leaf entries"
                if req.gfns is not None and not entry.leaf  # type: ignore[union-attr]
                else "it named another VMID or address"
            )
            return (
                f"the fence hart {hart} took at step {missed[0][0]:,} ({req.describe()}) did not cover the entry "
                f"({why})"
            )
        if (
            free_seq is not None
            and unmap_seq is not None
            and kind != "leaf"
            and not [f for f in self.flushes if unmap_seq <= f[0] <= free_seq and f[2] == dom]
        ):
            return (
                f"no p2m_tlb_flush between the unmap (step {unmap_seq:,}) and the free (step {free_seq:,}): "
                "the table was freed before the flush"
            )
        if kind == "leaf" and reuse is not None:
            # a frame put before the flush is Xen's design: the flush on reuse is the defence that counts
            flushes = self._reuse_flushes_of(mfn, reuse[0])
            now = self.conductor.seq
            given = [ev[0] for ev in self.frame_hist.get(mfn, ()) if ev[2] == "assign" and ev[0] >= reuse[0]]
            late = [
                f
                for f in self.fences
                if flushes
                and f[2] == "sent"
                and f[3].dst == hart
                and f[0] >= flushes[0][0]
                and not 0 <= f[3].taken_seq <= now
            ]
            if late and given and given[0] < now:
                seq, h, _, req = late[0]
                return (
                    f"the flush on reuse: hart {h}'s fence to hart {hart} (sent at step {seq:,}) was not taken before "
                    f"mfn {mfn:#x} went to its new owner at step {given[0]:,}: the sender went on without waiting for "
                    "the acknowledgement"
                )
            text = self._reuse_flush_text(hart, mfn, reuse[0])
            if text:
                return text
        pending = [f for f in self.fences if f[2] == "sent" and f[3].dst == hart and lo <= f[0] <= reuse_seq]
        if pending:
            seq, h, _, req = pending[0]
            when = f"taken only at step {req.taken_seq:,}" if req.taken_seq >= 0 else "not taken yet"
            if free_seq is not None and seq > free_seq:
                return (
                    f"the frame was freed at step {free_seq:,}, before the flush that would have removed hart "
                    f"{hart}'s entry (its fence, sent at step {seq:,}, was {when}): free, then flush"
                )
            return (
                f"the fence hart {h} sent to hart {hart} at step {seq:,} was {when}, after the frame was "
                f"reused at step {reuse_seq:,}: the sender went on without waiting for the acknowledgement"
            )
        failed = self._failed_flush(hart, lo, reuse_seq, dom)
        if failed:
            return failed
        missed = [f for f in self.flushes if lo <= f[0] <= reuse_seq and hart not in f[3] and f[2] == dom]
        if missed:
            seq, _h, _dom, mask = missed[0]
            dirty = self.flush_dirty.get(seq)
            if dirty is not None and hart in dirty:
                return (
                    f"p2m_tlb_flush at step {seq:,} fenced harts {mask} only, not d->dirty_cpumask {dirty}: hart "
                    f"{hart}, which held the entry, was in the dirty mask and left out of the flush"
                )
            why = "empty" if not dirty else f"{dirty}"
            left = self.last_switch_out.get((hart, dom), -1)
            since = (
                f" (its vCPU of dom{dom} left the hart at step {left:,}; the hart still cached the domain's entries)"
                if 0 <= left <= seq
                else ""
            )
            return (
                f"hart {hart} in d->dirty_cpumask: p2m_tlb_flush at step {seq:,} fences the dirty mask ({why}), and "
                f"hart {hart}, which still held the entry, had no bit in it{since}"
            )
        return f"no fence reached hart {hart} between the unmap and the reuse"

    def _failed_flush(self, hart: int, lo: int, hi: int, dom: int | None) -> str:
        """A flush that named the hart but never reached it, because an SBI call failed and Xen went on."""
        for seq, h, d, mask in self.flushes:
            if not lo <= seq <= hi or hart not in mask or d != dom:
                continue
            errors = [e for e in self.sbi_errors if e[1] == h and seq <= e[0] <= hi]
            reached = [f for f in self.fences if f[3].dst == hart and f[0] >= seq and f[2] in ("sent", "local")]
            if errors and not (reached and reached[0][0] <= errors[0][0] + 1):
                eseq, _eh, rc, text = errors[0]
                return (
                    f"the fence p2m_tlb_flush at step {seq:,} owed hart {hart}: "
                    f"{text or f'the SBI call failed ({rc})'}; sbi_rfence_v02 stops at a failed window, and "
                    f"p2m_tlb_flush ignores the error (step {eseq:,})"
                )
        return ""

    def _reuse_flushes_of(self, mfn: int, since: int) -> list[tuple[int, int | None, int, int]]:
        return [f for f in self.reuse_flushes if f[0] >= since and f[2] <= mfn < f[2] + (1 << f[3])]

    def _reuse_flush_text(self, hart: int, mfn: int, reuse_seq: int, write_seq: int | None = None) -> str:
        """Why the flush on reuse did not protect mfn from hart's entry, from the heap's events ('' if it did)."""
        nofl = self.no_flush_handouts.get(mfn)
        flushes = self._reuse_flushes_of(mfn, reuse_seq)
        if nofl is not None and nofl >= reuse_seq and not flushes:
            return (
                f"mfn {mfn:#x} was handed out at step {nofl:,} with MEMF_no_tlbflush (populate_physmap while the "
                "domain is being built) and no flush followed: alloc_heap_pages had already cleared its "
                f"need_tlbflush (init_free_page_fields), so the batched flush at the end of the hypercall never "
                f"fenced hart {hart}"
            )
        if not flushes:
            relied = " that p2m_put_foreign_page relies on" if mfn in self.leaf_puts else ""
            return f"the reallocation at step {reuse_seq:,} fenced no hart: the flush on reuse{relied} did not happen"
        first = flushes[0][0]
        scrub = [ev for ev in self.frame_hist.get(mfn, ()) if ev[2] == "scrub" and reuse_seq <= ev[0] <= first]
        when = f" (the stale write at step {write_seq:,} landed in between)" if write_seq is not None else ""
        if scrub:
            return (
                f"mfn {mfn:#x} was scrubbed at step {scrub[0][0]:,} for its new owner before the flush on reuse "
                f"(begun at step {first:,}) reached hart {hart}{when}: scrub, then flush leaves a window"
            )
        return (
            f"mfn {mfn:#x} was handed out at step {reuse_seq:,} before the flush on reuse (begun at step {first:,}) "
            f"reached hart {hart}{when}"
        )

    def _survival_text(self, hart: int, mfn: int, write_seq: int, scrub_seq: int, reuse_seq: int) -> str:
        scrub = [ev for ev in self.frame_hist.get(mfn, ()) if ev[2] == "scrub" and ev[0] == scrub_seq]
        flushes = self._reuse_flushes_of(mfn, write_seq)
        if scrub and str(scrub[0][4]).startswith("background") and scrub_seq < reuse_seq:
            late = f"; the flush on reuse at step {flushes[0][0]:,} came after it" if flushes else ""
            return (
                f"the idle scrubber (scrub_free_pages) cleaned free mfn {mfn:#x} at step {scrub_seq:,} while hart "
                f"{hart} still held a translation to it; the stale write at step {write_seq:,} landed after the "
                f"scrub, and the frame, clean now, was handed out at step {reuse_seq:,} without another scrub{late}: "
                "no flush reached the hart between the free and the scrub"
            )
        return self._reuse_flush_text(hart, mfn, reuse_seq, write_seq) or (
            f"no fence reached hart {hart} between the scrub (step {scrub_seq:,}) and the stale write"
        )

    # -- invariants --------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {
            "frames_freed": self.frames_freed,
            "frames_reused": self.frames_reused,
            "stale_benign": self.stale_benign,
        }
