"""Why a stale entry was still there: a decision procedure over the events of the chain.

For a stale use on hart H through entry E (filled at step f) of a frame freed
at step x and handed out again at step r, three questions, each answered from
what the run logged and never from the names of injected bugs:

1. the defence that should have removed E from H: a flush reaching H between
   the unlink and the free (a table), the flush on reuse (a frame handed back
   to the heap), a Bare hgatp once the vCPU left (a walk from a freed root);
2. why it did not (the ``case``): no flush was asked for; H was not in the
   flush's mask (the dirty mask, a stopped hart, a failed SBI window); a fence
   reached H but did not cover E; a covering fence reached H but E was filled
   again after it; the fence came too late (the sender did not wait, the frame
   was freed or handed out before the flush completed, the lock was released
   first);
3. the C function that should have done it.

The flushes of the defence are looked at in time order, and the first one the
events show to have failed decides; every case carries the events it rests
on, and the chain shows those (not every fence of the run).  VMID aliases are
explained by the oracle from the VMID assignments (``Oracle._alias_missing``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from simulator.engine.history import freed_by
from simulator.riscv.memory import POOL

if TYPE_CHECKING:
    from simulator.engine.calls import Flush
    from simulator.riscv.sbi import FenceRequest
    from simulator.riscv.tlb import TlbEntry

Row = tuple[int, "int | None", str, str]  # a chain row: step, hart, kind, text

FLUSH_BEFORE_FREE = "flush-before-free"
FLUSH_ON_REUSE = "flush-on-reuse"
BARE_HGATP = "bare-hgatp"
FLUSH_ON_VMID = "flush-on-vmid"
REUSE_FN = "filtered_flush_tlb_mask"


@dataclass(frozen=True)
class Cause:
    defence: str
    case: str
    function: str  # the C function (in simulator/xen/) that should have done it
    text: str
    evidence: tuple[Row, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"defence": self.defence, "case": self.case, "function": self.function}


@dataclass
class Stale:
    """The facts of one stale use, as the oracle found them."""

    hart: int
    entry: TlbEntry | None
    mfn: int
    gfn: int
    kind: str  # "leaf" (a data frame), "table" (a walk read a table frame) or "dangling-root"
    use: int  # the step of the use (of the stale write, for one that survived a scrub)
    dom: int | None  # whose p2m the entry was read from
    unlink: int | None  # the first change, after the fill, to a PTE the translation was built from
    frees: list[int] = field(default_factory=list)
    free_ord: int = 0  # the first free's place among all frees (orders a free and a flush of one step)
    reuse: int | None = None
    given: int | None = None  # the step the frame reached its new owner
    scrub: int | None = None  # the scrub a surviving stale write followed


def covers(req: FenceRequest, e: TlbEntry) -> bool:
    """Would this local HFENCE.GVMA have removed entry ``e``?"""
    if req.vmid is not None and req.vmid != e.vmid:
        return False
    if req.gfns is None:
        return True
    return e.leaf and any(e.gfn_base <= g < e.gfn_base + (1 << (9 * e.level)) for g in req.gfns)


def _why_not_covered(req: FenceRequest, e: TlbEntry) -> str:
    if req.vmid is not None and req.vmid != e.vmid:
        return f"it named VMID {req.vmid}, and the entry is tagged VMID {e.vmid}"
    if req.gfns is not None and not e.leaf:
        return "an address-specific HFENCE.GVMA removes leaf entries only; a non-leaf entry stays"
    span = 1 << (9 * e.level)
    return f"it named other addresses than the entry's gfns {e.gfn_base:#x}..{e.gfn_base + span - 1:#x}"


class Diagnosis:
    """The decision procedure, over the oracle's records of one run (read only)."""

    def __init__(self, oracle: Any) -> None:
        self.o = oracle

    # -- facts ----------------------------------------------------------------------------

    def _down_at(self, hart: int, seq: int) -> int | None:
        """The step hart was stopped at, if it was stopped at step ``seq``."""
        down = None
        for s, kind in self.o.cpu_events.get(hart, ()):
            if s > seq:
                break
            down = s if kind == "down" else None
        return down

    def _up_after(self, hart: int, seq: int, until: int) -> int | None:
        for s, kind in self.o.cpu_events.get(hart, ()):
            if seq < s <= until and kind == "up":
                return s
        return None

    def _ctx_at(self, hart: int, seq: int) -> tuple[int, tuple[int, int] | None]:
        """(step, (dom, vcpu) or None) of the last context switch on hart at or before ``seq``."""
        best: tuple[int, tuple[int, int] | None] = (-1, None)
        for s, ctx in self.o.ctx_hist.get(hart, ()):
            if s > seq:
                break
            best = (s, ctx)
        return best

    def _switch_out(self, hart: int, dom: int | None, lo: int, hi: int) -> int | None:
        for s, ctx in self.o.ctx_hist.get(hart, ()):
            if lo <= s <= hi and ctx is None and self._ctx_at(hart, s - 1)[1] is not None:
                prev = self._ctx_at(hart, s - 1)[1]
                if prev is not None and prev[0] == dom:
                    return s
        return None

    def _free_op(self, st: Stale, x: int) -> str:
        """The C name of what the hart that freed the frame was doing (its hypercall, say)."""
        return self.o.frame_hist.free_op(st.mfn, x, "the code that freed it")

    def _freer(self, st: Stale) -> str:
        """The C function that freed the frame, from the free's own event."""
        x = st.frees[0] if st.frees else None
        if x is not None and (st.mfn, x) in self.o.mapped_frees:  # that free was a finding: its culprit
            return self.o.mapped_frees[st.mfn, x]
        if x is not None and self.o.table_frees.get(st.mfn, -1) in range(x - 8, x + 1):
            return "p2m_free_subtree"
        if st.mfn in self.o.leaf_puts and x is not None and self.o.leaf_puts[st.mfn][0] <= x:
            return "p2m_free_subtree"
        for ev in self.o.frame_hist.get(st.mfn, ()):
            if ev[2] == "free" and ev[0] == x:
                return freed_by(str(ev[4]), "the function that freed it")
        return "the function that freed it"

    def _flushes(self, fn: str, lo: int, hi: int, dom: int | None = None, mfn: int | None = None) -> list[Flush]:
        out = []
        for f in self.o.flushlog.all:
            if f.fn != fn or not lo <= f.seq <= hi:
                continue
            if dom is not None and f.dom != dom:
                continue
            if mfn is not None and not f.covers_frame(mfn):
                continue
            out.append(f)
        return out

    def _flush_row(self, f: Flush, hart: int) -> Row:
        mask = f.mask if f.mask is not None else f.targets()
        what = f"{f.fn}(dom{f.dom})" if f.fn == "p2m_tlb_flush" else f"{f.fn}(mfn {f.mfn:#x}, order {f.order})"
        dirty = f", d->dirty_cpumask {f.dirty}" if f.dirty is not None and f.fn == "p2m_tlb_flush" else ""
        req = f.to_hart(hart)
        if req is None:
            to = f"no fence to hart {hart}"
        elif req.taken_seq < 0:
            to = f"sent to hart {hart} at step {req.sent_seq:,}, not taken yet"
        else:
            to = f"hart {hart} takes it at step {req.taken_seq:,}"
        ret = f", returns at step {f.end:,}" if f.end >= 0 else ""
        return (f.seq, f.hart, "flush", f"{what} fences harts {mask or 'none (empty mask)'}{dirty}: {to}{ret}")

    # -- the procedure ----------------------------------------------------------------------

    def cause(self, st: Stale) -> Cause:
        twice = self._handed_out_twice(st)
        if twice is not None:
            return twice
        if st.kind == "leaf" and st.reuse is not None:
            return self._leaf(st)
        return self._table(st)  # a table, or a frame not handed out yet: the flush of its unlink

    def _handed_out_twice(self, st: Stale) -> Cause | None:
        """The frame was handed out again while its previous life had not ended (no free since that
        hand-out): it sat on a free list twice, so no flush of any unlink was the missing step."""
        if st.frees or st.reuse is None:
            return None
        hist = self.o.frame_hist.get(st.mfn, ())
        before = [ev for ev in hist if ev[0] < st.reuse and ev[2] in ("alloc", "reuse", "free")]
        if not before or before[-1][2] == "free":
            return None
        prev = before[-1]  # (seq, hart, kind, stamp, why, gen, state, owner)
        if prev[6] == POOL:
            return None  # a hand-out to a p2m pool, a free list of its own: handing it on from there is its use
        doubles = [d for d in self.o.double_frees.get(st.mfn, ()) if d[0] < st.reuse]
        evidence: tuple[Row, ...] = ((prev[0], prev[1], "alloc", f"alloc: mfn {st.mfn:#x}: {prev[4]} (gen {prev[5]})"),)
        if doubles:
            seq, hart, why = doubles[-1]
            fn = freed_by(why, "the code that freed it twice")
            evidence = ((seq, hart, "free", f"double free of mfn {st.mfn:#x} ({why})"), *evidence)
            how = f": {fn} freed it a second time at step {seq:,} ({why})"
        else:
            fn, how = "the code that freed it twice", ""
        return Cause(
            "free-once",
            "handed-out-twice",
            fn,
            f"mfn {st.mfn:#x} was handed out at step {st.reuse:,} while the life it began at step {prev[0]:,} "
            f"({prev[4]}, gen {prev[5]}) had not ended: no free came between, so it was on a free list twice"
            f"{how}; a frame is freed once per life, and no flush can stand in for that",
            evidence,
        )

    def _table(self, st: Stale) -> Cause:
        fill = st.entry.fill_seq if st.entry is not None else 0
        x = st.frees[0] if st.frees else None
        freer = self._freer(st)
        lo = st.unlink if st.unlink is not None else fill
        if x is not None and (st.unlink is None or st.unlink > x):
            return self._freed_while_linked(st, x, freer, FLUSH_BEFORE_FREE)
        deadline = x if x is not None else st.use

        def in_time(f: Flush) -> bool:
            return x is None or f.seq < x or (f.seq == x and f.frees_before < st.free_ord)

        attempts = self._flushes("p2m_tlb_flush", lo, st.use, dom=st.dom)
        for f in attempts:
            if not in_time(f):
                break
            c = self._outcome(st, f, FLUSH_BEFORE_FREE, deadline)
            if c is not None:
                return c
        late = [f for f in attempts if not in_time(f)]
        where = f"table mfn {st.mfn:#x}" if st.kind == "table" else f"mfn {st.mfn:#x}"
        if late:
            f = late[0]
            return Cause(
                FLUSH_BEFORE_FREE,
                "late/free-before-flush",
                freer,
                f"no p2m_tlb_flush between the unlink (step {lo:,}) and the free (step {x:,}): {freer} freed {where} "
                f"first, and the next flush of dom{st.dom} began after it, at step {f.seq:,}; a table may be freed "
                f"only once a flush has reached every hart that may cache it, and hart {st.hart} did",
                (self._flush_row(f, st.hart),),
            )
        return self._no_flush(st, lo, x, freer, where)

    def _no_flush(self, st: Stale, lo: int, x: int | None, freer: str, where: str) -> Cause:
        freed = f"{freer} freed {where} at step {x:,}" if x is not None else f"{where} was freed"
        return Cause(
            FLUSH_BEFORE_FREE,
            "no-flush",
            freer,
            f"no flush at all after the unlink (step {lo:,}): {freed}, and no p2m_tlb_flush of dom{st.dom} "
            f"followed before hart {st.hart} used the entry at step {st.use:,}",
        )

    def _freed_while_linked(self, st: Stale, x: int, freer: str, defence: str) -> Cause:
        freer = self._free_op(st, x) if freer != "p2m_free_subtree" else freer
        after = f"; the PTE was cleared only at step {st.unlink:,}" if st.unlink is not None else ""
        return Cause(
            defence,
            "freed-while-linked",
            freer,
            f"{freer} freed mfn {st.mfn:#x} at step {x:,} while a PTE of dom{st.dom} still linked it{after}: no "
            "flush can protect a frame freed before it is unlinked",
        )

    def _leaf(self, st: Stale) -> Cause:
        o = self.o
        x = st.frees[0] if st.frees else None
        reuse = st.reuse if st.reuse is not None else (x if x is not None else 0)
        horizon = max(st.use, st.given or 0)
        deadline = st.scrub if st.scrub is not None else (st.given if st.given is not None else st.use)
        attempts = self._flushes(REUSE_FN, reuse, horizon, mfn=st.mfn)
        for f in attempts:
            if f.seq > deadline:
                break
            c = self._outcome(st, f, FLUSH_ON_REUSE, deadline)
            if c is not None:
                return c
        late = [f for f in attempts if f.seq > deadline]
        if st.scrub is not None and st.reuse is not None and st.scrub < st.reuse:
            later = f"; the flush on reuse at step {late[0].seq:,} came after it" if late else ""
            return Cause(
                FLUSH_ON_REUSE,
                "late/scrubbed-while-free",
                "scrub_free_pages",
                f"the idle scrubber (scrub_free_pages) cleaned free mfn {st.mfn:#x} at step {st.scrub:,} while hart "
                f"{st.hart} still held a translation to it; the stale write at step {st.use:,} landed after the "
                f"scrub, and the frame, clean now, was handed out at step {st.reuse:,} without another scrub{later}: "
                "no flush reached the hart between the free and the scrub",
                (self._flush_row(late[0], st.hart),) if late else (),
            )
        if late:
            f = late[0]
            if st.scrub is not None:
                return Cause(
                    FLUSH_ON_REUSE,
                    "late/scrub-before-flush",
                    "alloc_heap_pages",
                    f"mfn {st.mfn:#x} was scrubbed at step {st.scrub:,} for its new owner before the flush on reuse "
                    f"(begun at step {f.seq:,}) reached hart {st.hart}, and the stale write at step {st.use:,} landed "
                    "in between: alloc_heap_pages scrubs, then flushes, which leaves a window",
                    (self._flush_row(f, st.hart),),
                )
            return Cause(
                FLUSH_ON_REUSE,
                "late/handed-out-before-flush",
                "alloc_heap_pages",
                f"mfn {st.mfn:#x} was handed out at step {reuse:,} and used through hart {st.hart}'s entry before the "
                f"flush on reuse began (step {f.seq:,})",
                (self._flush_row(f, st.hart),),
            )
        nofl = o.no_flush_handouts.get(st.mfn)
        if nofl is not None and nofl >= reuse:
            return Cause(
                FLUSH_ON_REUSE,
                "no-flush/memf-no-tlbflush",
                "populate_physmap",
                f"mfn {st.mfn:#x} was handed out at step {nofl:,} with MEMF_no_tlbflush (populate_physmap while the "
                "domain is being built) and no flush followed: alloc_heap_pages had already cleared its "
                "need_tlbflush (init_free_page_fields), so the batched flush at the end of the hypercall never "
                f"fenced hart {st.hart}",
            )
        if x is not None and st.unlink is not None and st.unlink > x:
            return self._freed_while_linked(st, x, self._freer(st), FLUSH_ON_REUSE)
        relied = ""
        if st.mfn in o.leaf_puts and x is not None:
            put = o.leaf_puts[st.mfn][0]
            relied = f"; p2m_free_subtree put it at step {put:,}, before the flush of the unlink, relying on that flush"
        return Cause(
            FLUSH_ON_REUSE,
            "no-flush",
            "alloc_heap_pages",
            f"no flush on reuse: mfn {st.mfn:#x} was handed out again at step {reuse:,} and alloc_heap_pages fenced "
            f"no hart (no filtered_flush_tlb_mask for it){relied}",
        )

    # -- one flush, for one hart ------------------------------------------------------------

    def _outcome(self, st: Stale, f: Flush, defence: str, deadline: int) -> Cause | None:
        """Why flush ``f`` left the entry on the hart; None if the events say it had nothing to do with it."""
        hart, e = st.hart, st.entry
        fill = e.fill_seq if e is not None else 0
        row = self._flush_row(f, hart)
        req = f.to_hart(hart)
        if req is None and f.mask is None and not f.fences:
            ret = f", returned at step {f.end:,}" if f.end >= 0 else ""
            return Cause(
                defence,
                "no-flush",
                f.fn,
                f"{f.fn} was called at step {f.seq:,}{ret} and sent no fence at all: nothing removed hart {hart}'s "
                "entry",
                (row,),
            )
        running = f.end < 0 or f.end > st.use
        if req is None:
            mask = f.mask if f.mask is not None else f.targets()
            if hart not in mask:
                return self._excluded(st, f, defence, row)
            if running and not f.errors:
                return self._late(st, f, defence, deadline, row, None)
            if f.errors:
                eseq, rc, text = f.errors[0]
                err: Row = (eseq, f.hart, "sbi", f"SBI error: {text or rc}")
                caller = "arch_flush_tlb_mask" if f.fn == REUSE_FN else f.fn
                return Cause(
                    defence,
                    "not-in-mask/sbi-error",
                    caller,
                    f"the flush {f.fn} began at step {f.seq:,} named hart {hart}, but the SBI call for its window "
                    f"failed ({text or rc}); sbi_rfence_v02 stops at a failed window, and {caller} ignores the "
                    f"error (step {eseq:,}): no fence reached hart {hart}",
                    (row, err),
                )
            down = self._down_at(hart, f.seq)
            if down is not None:
                return self._stopped(st, f, defence, row, down, skipped=True)
            return Cause(
                defence,
                "not-in-mask/not-sent",
                f.fn,
                f"{f.fn} at step {f.seq:,} named hart {hart} but sent it no fence",
                (row,),
            )
        t = req.taken_seq
        if t < 0 or t > st.use:
            sent: Row = (req.sent_seq, f.hart, "fence.sent", f"fence sent to hart {hart}: {req.describe()}")
            if 0 <= f.end < (t if t >= 0 else st.use + 1) and f.end <= st.use:
                when = f"took it only at step {t:,}" if t >= 0 else "had not taken it"
                return Cause(
                    defence,
                    "late/async",
                    "sbi_remote_hfence_gvma",
                    f"the fence {f.fn} sent to hart {hart} at step {req.sent_seq:,} was still on its way when the "
                    f"entry was used at step {st.use:,}: sbi_remote_hfence_gvma returned at step {f.end:,}, before "
                    f"hart {hart} took the fence ({when}), and the caller went on without waiting for the "
                    "acknowledgement",
                    (row, sent),
                )
            if f.fn == "p2m_tlb_flush" and f.locked is False:
                return Cause(
                    defence,
                    "late/unlocked",
                    "p2m_write_unlock",
                    f"p2m_tlb_flush at step {f.seq:,} ran after the p2m write lock was released, and hart {hart} "
                    f"used the entry at step {st.use:,} before its fence arrived: p2m_write_unlock must flush "
                    "before it unlocks",
                    (row, sent),
                )
            return self._late(st, f, defence, deadline, row, req)
        if e is None:
            return None
        if t <= fill:
            if covers(req, e) and t >= (st.unlink if st.unlink is not None else -1):
                return self._refilled(st, f, req, defence, row)
            if covers(req, e) and st.unlink is None:
                return self._refilled(st, f, req, defence, row)
            return None  # a fence before the entry existed says nothing about it
        if not covers(req, e):
            return Cause(
                defence,
                "not-covered",
                f.fn,
                f"the fence {f.fn} sent hart {hart} (taken at step {t:,}: {req.describe()}) did not cover the entry "
                f"(L{e.level}, VMID {e.vmid}, gfn {e.gfn_base:#x}): {_why_not_covered(req, e)}",
                (row,),
            )
        why = f": {req.incomplete}" if req.incomplete else ""
        return Cause(
            defence,
            "incomplete",
            f.fn,
            f"the fence hart {hart} took at step {t:,} ({req.describe()}) covered the entry, which stayed: the "
            f"invalidation was not complete{why}",
            (row,),
        )

    def _filtered(self, st: Stale, f: Flush, defence: str, row: Row) -> Cause:
        """tlbflush_filter took the hart out: the clock said it had flushed fully since the page was freed."""
        o, hart = self.o, st.hart
        t, stamp = f.filtered[hart], f.stamp
        head = (
            f"tlbflush_filter took hart {hart} out of the flush on reuse at step {f.seq:,}: its tlbflush_time {t} "
            f"is past the page's stamp {stamp}, so the clock says it flushed fully after mfn {st.mfn:#x} was freed"
        )
        given = [(s, h) for s, h, cpu, time in o.tlbflush_stamps if cpu == hart and time == t]
        rows: list[Row] = [row]
        if given:
            s, by = given[0]
            rows.append((s, by, "tlbflush.stamp", f"post_flush: hart {hart}'s tlbflush_time = {t}"))
            req = self._stamped_fence(by, hart, s)
            if req is None or req.taken_seq < 0 or req.taken_seq > s:
                if req is None:
                    when = f"it sent hart {hart} no fence"
                else:
                    when = "the fence it sent was " + (
                        f"taken only at step {req.taken_seq:,}" if req.taken_seq >= 0 else "not taken yet"
                    )
                return Cause(
                    defence,
                    "not-in-mask/filtered",
                    "sbi_remote_hfence_gvma",
                    f"{head}; but hart {by} stamped it at step {s:,}, when {when}: the clock credited a flush that "
                    "had not happened",
                    tuple(rows),
                )
        free = max((x for x in st.frees if x <= f.seq), default=None)  # the free that stamped the page
        done = [time for s, _h, _c, time in o.tlbflush_stamps if free is not None and s < free]
        if free is not None and done and stamp < max(done):
            return Cause(
                defence,
                "not-in-mask/filtered",
                "page_set_tlbflush_timestamp",
                f"{head}; but the page's stamp {stamp} is older than flushes stamped before it was freed at step "
                f"{free:,} (the clock had reached {max(done)}): page_set_tlbflush_timestamp recorded the wrong time, "
                "and the filter skipped a hart that still cached it",
                tuple(rows),
            )
        return Cause(
            defence,
            "not-in-mask/filtered",
            REUSE_FN,
            f"{head}; yet hart {hart} still held the entry (filled at step {st.entry.fill_seq if st.entry else -1:,}): "
            "the flush the clock credits did not remove it",
            tuple(rows),
        )

    def _stamped_fence(self, by: int, hart: int, at: int) -> FenceRequest | None:
        """The fence to ``hart`` of the flush hart ``by`` was running when it stamped ``hart`` at step ``at``:
        sent by then, or sent after the stamp (a stamp taken too early); a hart's own local fence."""
        fences = self.o.fences
        if by == hart:
            local = [r for s, h, what, r in fences if h == hart and what == "local" and s <= at]
            return local[-1] if local else None
        for x in reversed(self.o.flushlog.all):
            if x.hart == by and x.seq <= at and (x.end < 0 or x.end >= at):
                return x.to_hart(hart)
        sends = [r for s, h, what, r in fences if h == by and what == "sent" and r.dst == hart and s >= at]
        return sends[0] if sends else None

    def _late(self, st: Stale, f: Flush, defence: str, deadline: int, row: Row, req: FenceRequest | None) -> Cause:
        """The flush was under way, and had not reached the hart, when the frame was freed or handed out."""
        what = "freed" if defence == FLUSH_BEFORE_FREE else "handed out"
        freer = self._freer(st) if defence == FLUSH_BEFORE_FREE else "alloc_heap_pages"
        if req is None:
            fence = "had sent it no fence yet"
        elif req.taken_seq >= 0:
            fence = f"its fence, sent at step {req.sent_seq:,}, was taken only at step {req.taken_seq:,}"
        else:
            fence = f"its fence, sent at step {req.sent_seq:,}, was not taken yet"
        rows = (row,) if req is None else (row, (req.sent_seq, f.hart, "fence.sent", f"fence sent: {req.describe()}"))
        return Cause(
            defence,
            "late/free-before-flush" if defence == FLUSH_BEFORE_FREE else "late/handed-out-before-flush",
            freer,
            f"mfn {st.mfn:#x} was {what} at step {deadline:,} while the flush begun at step {f.seq:,} had not yet "
            f"reached hart {st.hart} ({fence}), and the hart used its entry at step {st.use:,}: {what}, then "
            "flushed",
            rows,
        )

    def _excluded(self, st: Stale, f: Flush, defence: str, row: Row) -> Cause:
        o, hart, e = self.o, st.hart, st.entry
        mask = f.mask if f.mask is not None else f.targets()
        down = self._down_at(hart, f.seq)
        if down is not None:
            return self._stopped(st, f, defence, row, down, skipped=False)
        if f.fn == REUSE_FN and hart in f.filtered:
            return self._filtered(st, f, defence, row)
        if f.fn == REUSE_FN:
            return Cause(
                defence,
                "not-in-mask/online",
                REUSE_FN,
                f"the flush on reuse at step {f.seq:,} fenced harts {mask}, not hart {hart}, which held the entry",
                (row,),
            )
        if f.dirty is not None and hart in f.dirty:
            return Cause(
                defence,
                "not-in-mask/partial",
                f.fn,
                f"p2m_tlb_flush at step {f.seq:,} fenced harts {mask} only, not d->dirty_cpumask {f.dirty}: hart "
                f"{hart}, which held the entry, was in the dirty mask and left out of the flush",
                (row,),
            )
        fill = e.fill_seq if e is not None else 0
        s_in, ctx = self._ctx_at(hart, fill)
        if ctx is None or ctx[0] != st.dom:
            hg = self._hgatp_before(hart, fill)
            left = self._last_switch_out(hart, st.dom, fill)
            if e is not None and e.spec and hg is not None:
                hseq, ran = hg
                who = f"ran no vCPU of dom{st.dom}" if ctx is None else f"ran dom{ctx[0]} vcpu{ctx[1]}"
                gone = f" (its vCPU left at step {left:,})" if left is not None else ""
                hrow: Row = (hseq, hart, "hgatp", f"hgatp written on hart {hart}{ran}")
                return Cause(
                    BARE_HGATP,
                    "hgatp/not-bare",
                    "p2m_ctxt_switch_from",
                    f"hart {hart} {who} when a speculative walk filled the entry at step {fill:,}{gone}: hgatp "
                    f"still named dom{st.dom}'s root, as written at step {hseq:,}, and a hart not in "
                    "d->dirty_cpumask can still cache the domain's entries; p2m_ctxt_switch_from leaves hgatp as it "
                    "was (a Bare hgatp stops such walks)",
                    (row, hrow),
                )
        why = "empty" if not f.dirty else f"{f.dirty}"
        sets = [w for w in o.dirty_hist.get((st.dom, hart), ()) if w[0] <= f.seq]
        if sets and not sets[-1][1]:
            cseq, _bit, fn = sets[-1]
            ever = [w for w in sets if w[1]]
            since = f" (set at step {ever[-1][0]:,} by {ever[-1][2]})" if ever else ""
            when = "before" if cseq <= fill else "after"
            rows: tuple[Row, ...] = ((cseq, None, "dirty", f"d->dirty_cpumask: hart {hart}'s bit cleared by {fn}"), row)
            return Cause(
                defence,
                "not-in-mask/dirty-cleared",
                fn,
                f"{fn} cleared hart {hart}'s bit in d->dirty_cpumask{since} at step {cseq:,}, {when} the hart cached "
                f"the entry (step {fill:,}) and with no flush reaching it after that: p2m_tlb_flush at step "
                f"{f.seq:,} fenced the dirty mask ({why}) and left the hart out",
                rows,
            )
        ran = f", which ran dom{st.dom} vcpu{ctx[1]} from step {s_in:,}" if ctx is not None and ctx[0] == st.dom else ""
        return Cause(
            defence,
            "not-in-mask/dirty-unset",
            "ctxt_switch_to",
            f"p2m_tlb_flush at step {f.seq:,} fences d->dirty_cpumask ({why}), and hart {hart}{ran} and cached the "
            f"entry at step {fill:,}, had no bit in it: nothing ever set it (ctxt_switch_to, when the vCPU came), so "
            "the flush never reached the hart",
            (row,),
        )

    def _stopped(self, st: Stale, f: Flush, defence: str, row: Row, down: int, skipped: bool) -> Cause:
        hart = st.hart
        up = self._up_after(hart, f.seq, st.use)
        how = (
            "the firmware skipped it (a stopped hart takes no IPI)"
            if skipped
            else "it was out of cpu_online_map and not fenced"
        )
        drow: Row = (down, hart, "hsm", f"hart {hart} stops (SBI HSM)")
        if up is None:
            return Cause(
                defence,
                "not-in-mask/stopped",
                f.fn,
                f"hart {hart} was stopped at step {down:,} when {f.fn} ran at step {f.seq:,}, and {how}",
                (drow, row),
            )
        urow: Row = (up, hart, "hsm", f"hart {hart} is up again (SBI HSM)")
        return Cause(
            defence,
            "not-in-mask/stopped",
            "start_secondary",
            f"a full HFENCE.GVMA on hart {hart} when it came back up at step {up:,} (start_secondary): it was "
            f"stopped at step {down:,}, {how} at step {f.seq:,}, and nothing promises what a stopped hart's TLB "
            "still holds",
            (drow, row, urow),
        )

    def _refilled(self, st: Stale, f: Flush, req: FenceRequest, defence: str, row: Row) -> Cause:
        e = st.entry
        assert e is not None
        t, fill, hart = req.taken_seq, e.fill_seq, st.hart
        first = f"the fence hart {hart} took at step {t:,} ({req.describe()}, from {f.fn} at step {f.seq:,}) removed "
        via = e.via
        if via is not None and not covers(req, via):
            vrow: Row = (
                via.fill_seq,
                hart,
                "fill",
                f"fill: cached non-leaf entry (VMID {via.vmid}, L{via.level}, gfn {via.gfn_base:#x}) -> table mfn "
                f"{via.ppn:#x}",
            )
            return Cause(
                defence,
                "refilled/cached-entry",
                f.fn,
                f"{first}the entry, but at step {fill:,} a walk filled it again from table mfn {via.ppn:#x}, "
                f"reached through the cached non-leaf entry filled at step {via.fill_seq:,}, which that fence left in "
                f"place ({_why_not_covered(req, via)})",
                (vrow, row),
            )
        x = [s for s in st.frees if s <= fill]
        src = f"PTE {e.src_mfn:#x}[{e.src_idx}]"
        if x:
            freer, rows, how = self._free_op(st, x[0]), [row], ""
            # whose reference went while the mapping stayed: the mapping domain's own put, if there was one
            mine = [p for p in self.o.puts.get(st.mfn, ()) if p[0] <= x[0] and p[3] == st.dom]
            if mine and mine[0][2] != freer:
                pseq, phart, op, _dom = mine[0]
                rows.append((pseq, phart, "put", f"put_page of mfn {st.mfn:#x} in {op}(dom{st.dom}); {src} stays"))
                how = f"; {op}(dom{st.dom}) dropped a reference at step {pseq:,} and left the mapping in place"
                freer = op
            later = f" and cleared only at step {st.unlink:,}" if st.unlink is not None else ""
            return Cause(
                defence,
                "refilled/linked-after-free",
                freer,
                f"{first}the entry, but at step {fill:,} a walk filled it again: {src} still pointed at mfn "
                f"{st.mfn:#x}, freed at step {x[0]:,} by {self._free_op(st, x[0])}{later}{how}: a frame must be "
                "unmapped before its last reference goes",
                tuple(rows),
            )
        return Cause(
            defence,
            "refilled/unexplained",
            f.fn,
            f"{first}the entry, but at step {fill:,} a walk filled it again from {src}, which still held it",
            (row,),
        )

    def _hgatp_before(self, hart: int, seq: int) -> tuple[int, str] | None:
        best = None
        for s, hgatp, ctx in self.o.hgatp_hist.get(hart, ()):
            if s > seq:
                break
            if hgatp:
                best = (s, f" when dom{ctx[0]} vcpu{ctx[1]} ran" if ctx is not None else "")
            else:
                best = None
        return best

    def _last_switch_out(self, hart: int, dom: int | None, before: int) -> int | None:
        last = None
        prev: tuple[int, int] | None = None
        for s, ctx in self.o.ctx_hist.get(hart, ()):
            if s > before:
                break
            if ctx is None and prev is not None and prev[0] == dom:
                last = s
            prev = ctx
        return last

    # -- a walk from a freed root -------------------------------------------------------------

    def dangling_root(self, st: Stale) -> Cause:
        o, hart = self.o, st.hart
        x = st.frees[0] if st.frees else None
        hg = self._hgatp_before(hart, st.use)
        idle = " (the hart is idle)" if o.hart_ctx[hart] is None else ""
        freed = f" was freed at step {x:,} and" if x is not None else ""
        whose = f"dom{st.dom}'s root" if st.dom is not None else "the root"
        if hg is None:
            text = f"a Bare hgatp on hart {hart} before {whose}{freed} was reused"
            return Cause(BARE_HGATP, "hgatp/not-bare", "p2m_ctxt_switch_from", text)
        hseq, ran = hg
        left = self._last_switch_out(hart, st.dom, st.use)
        rows: list[Row] = [(hseq, hart, "hgatp", f"hgatp written on hart {hart}{ran}")]
        if left is not None:
            rows.append((left, hart, "switch", f"dom{st.dom}'s vCPU leaves hart {hart}; hgatp stays"))
        return Cause(
            BARE_HGATP,
            "hgatp/not-bare",
            "p2m_ctxt_switch_from",
            f"a Bare hgatp on hart {hart} before {whose}{freed} was reused: hgatp still names it{idle}, as written "
            f"at step {hseq:,}{ran}, and a walk may start there at any time (p2m_ctxt_switch_from zeroes VSATP "
            "only, and the idle vCPU leaves hgatp as it was)",
            tuple(rows),
        )
