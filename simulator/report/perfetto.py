"""A log as a Chrome/Perfetto trace: Trace Event Format JSON for ui.perfetto.dev or chrome://tracing.

``write_trace(LOG, OUT)`` streams a JSON-lines log and writes the trace
incrementally, in the object form ``{"displayTimeUnit": "ms", "otherData":
{...}, "traceEvents": [...]}``; memory stays bounded by what is open at one
step (vCPUs resident, TLB entries cached, fences in flight), never by the
length of the log.  Time is logical: ``ts`` is the log's ``seq``, 1 step =
1 µs (so the viewer's "1 ms" is 1,000 steps).  Equal logs give byte-identical
traces.

What the trace shows, in one process "p2msim":

* one thread track per hart ("hart N") and one for the workload driver
  (``hart`` null in the log), named by metadata (``ph`` "M") events;
* complete slices (``ph`` "X") on a hart's track: a vCPU's residency, from
  ``switch_in`` to ``switch_out`` (args: domain, vCPU, the VMID it was given,
  the hgatp written); each hypercall (see below); p2m lock holds, when the log
  has them (``p2m_write_lock``/``p2m_read_lock``/``paging_lock`` with ``dom``,
  closed by the matching ``*_unlock``: the model does not log them yet);
* zero-length slices for each fence step (``fence.sent`` on the sender's
  track, ``fence.taken`` and ``fence.acked`` on the target's, ``fence.local``)
  and for each step of a violation's causal chain;
* flow arrows (``ph`` "s"/"t"/"f", cat "fence") joining each remote fence
  request sent -> taken -> acked; a request still in flight when the run
  ended finishes at a slice "... still in flight at the end" on its target;
* flow arrows (cat "chain") through a violation's chain (fill, unmap, free,
  flush, reuse, use, as the oracle logged them in the violation's ``chain``);
* async slices (``ph`` "b"/"e", cat "tlb") for each TLB entry, from its
  ``tlb.fill`` to its removal.  Where the log has ``tlb.gone`` events, the
  entry ends there (args: why, fence, window).  Where it has none, the end is
  inferred as the hardware model would remove it: the next ``fence.taken`` or
  ``fence.local`` on that hart that covers it (every entry of the VMID, or of
  every VMID when ``vmid`` is null, when ``gfns`` is null; leaf and negative
  entries covering a listed gfn otherwise: an address fence keeps walk-cache
  entries), a refill of the same address (unless ``--tlb-multi``), or the end
  of the run.  Capacity evictions cannot be inferred, so without
  ``tlb.gone`` an entry may look cached longer than it was.  Negative
  entries (``--tlb-negative``) never have a ``tlb.gone``: theirs is always
  inferred.  Each hart's entries of one kind (leaf, walk cache, negative)
  share lanes (async ids ``hN.kind.L``, slice name ``hart N TLB kind``), a
  lane reused only at a later step, so the viewer shows about as many rows as
  entries held at once (with ``tlb.gone``: at most the TLB's capacity); the
  entry itself (gfn, mfn, level, VMID, walk path) is in the slice's args;
* instant events (``ph`` "i") for violations, warnings, frees, reuses (a frame
  handed out at generation 2 or more), PTE writes, hgatp writes, guest faults,
  flushes, domain and VMID life, and each race window a ``tlb.gone`` closed
  (cat "window"); ``everything=True`` turns every other event into an
  instant too.

Perfetto's importer reads the events of one step in file order, after the
complete slices of that step with a duration, and binds a v1 flow event to
the slice open on its thread when it reads it: so each flow event is written
right after its own zero-length slice.

Every address-like value in args (mfn, gfn, PTE values, hgatp, table, path,
gfns) is a hex string such as ``"0x1b9df"``.

Hypercalls: the log has only their start (a ``hypercall`` event, with ``op``
and its arguments); no event says when one returned.  The slice therefore
ends after the last hypervisor-side event its hart logged before the next
sign that the hart does something else: a guest step (``tlb.fill``,
``guest.fault``), a vCPU switch, the next hypercall, idle scrubbing, or the end
of the run (args ``end`` says which).  Remote fences taken meanwhile neither
extend nor end it.  A ``hypercall.end`` event, if the log ever has one, ends
the slice exactly.  A speculative walk during a hypercall (rare) ends it early.

``seq_from``/``seq_to`` keep only the steps in that window (slices are
clipped to it; the log is read only up to ``seq_to``).
"""

from __future__ import annotations

import heapq
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from simulator.engine.log import wide
from simulator.engine.logread import LogError, read_events
from simulator.report.logview import violation_class
from simulator.riscv.pte import hgatp_fields

PID = 1
DRIVER_TID = 1  # the workload driver's track; hart N is tid N + 2 (tid 0 means "no thread" to some viewers)
TIME_UNIT = "ms"  # the spec's two choices are ms and ns; ts stays in µs either way (1 step = 1 µs)
CHAIN_FLOW_BASE = 1 << 40  # flow ids of violation chains (fence flows use the request id)

# args holding addresses, frame numbers or PTE/CSR values: written as hex strings
HEX_FIELDS = frozenset(
    {"mfn", "gfn", "fgfn", "old", "new", "pte", "hgatp", "table", "path", "gfns", "ppn", "root", "target_mfn"}
)
NOT_ARGS = frozenset({"seq", "hart", "event", "log_level", "decisions"})

# after a hypercall: events that show its hart doing something else (the call has returned)
HC_BOUNDARY = frozenset(
    {
        "switch_in",
        "switch_out",
        "hypercall",
        "tlb.fill",
        "guest.fault",
        "guest_fault.injected",
        "guest_fault.resolved",
        "hsm.stop",
        "hsm.suspend",
        "hsm.started",
        "cpu_down",
        "cpu_up",
    }
)
# events that may come while a hypercall runs without being part of it (interrupts, the oracle's words)
HC_NEUTRAL = frozenset({"fence.taken", "fence.acked", "tlb.gone", "oracle.warning", "oracle.violation", "warning"})

# lock events (not logged by the model yet): name -> (the lock, True for acquire)
LOCKS: dict[str, tuple[str, bool]] = {
    "p2m_write_lock": ("p2m write lock", True),
    "p2m_write_unlock": ("p2m write lock", False),
    "p2m_read_lock": ("p2m read lock", True),
    "p2m_read_unlock": ("p2m read lock", False),
    "paging_lock": ("paging lock", True),
    "paging_unlock": ("paging lock", False),
}

TLB_KINDS = {"leaf": "leaf", "walk": "walk cache", "negative": "negative"}

# events shown as instants by default: name -> category
INSTANTS: dict[str, str] = {
    "oracle.warning": "warning",
    "warning": "warning",
    "frame.free": "frame",
    "pte.write": "pte",
    "hgatp.write": "hgatp",
    "guest.fault": "guest",
    "p2m_tlb_flush": "flush",
    "page_alloc.reuse_flush": "flush",
    "page_alloc.reuse_flush_skipped": "flush",
    "page_alloc.no_tlbflush": "flush",
    "sbi.error_ignored": "flush",
    "vmid.rollover_flush_skipped": "flush",
    "p2m_free_subtree.table_freed": "p2m",
    "p2m_free_subtree.leaf": "p2m",
    "p2m_alloc_root_table": "p2m",
    "domain_create": "domain",
    "domain_create_failed": "domain",
    "domain_destroyed": "domain",
    "domain_crash": "domain",
    "vmid.assign": "vmid",
    "vmid.rollover": "vmid",
    "printk": "xen",
    "error": "xen",
    "invariant": "xen",
    "ASSERT_UNREACHABLE": "xen",
    "ASSERT.unchecked": "xen",
    "cpu_up": "hart",
    "cpu_down": "hart",
    "hsm.start": "hart",
    "hsm.started": "hart",
    "hsm.stop": "hart",
    "hsm.suspend": "hart",
    "run.end": "run",
    "run.error": "run",
    "run.interrupted": "run",
}
# events drawn as slices, flows or async slices, never as instants (even with everything=True)
DRAWN = frozenset(
    {"run.start", "switch_in", "switch_out", "hypercall", "hypercall.end", "tlb.fill", "tlb.gone", "oracle.violation"}
    | {"fence.sent", "fence.taken", "fence.acked", "fence.local"}
    | set(LOCKS)
)


@dataclass
class TraceStats:
    """What ``write_trace`` wrote: events per kind (``cat:ph``, e.g. ``tlb:b``, ``fence:s``), bytes."""

    counts: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    tlb_ends: str = ""  # "tlb.gone" (the log says when each entry left) or "inferred" (from fences)

    @property
    def events(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        return f"wrote {self.events:,} events ({self.bytes / 1e6:.1f} MB)"


def has_tlb_gone(path: str | Path) -> bool:
    """Does the log have ``tlb.gone`` events?  A byte scan, much faster than reading the events."""
    needle = b'"event":"tlb.gone"'
    tail = b""
    try:
        with Path(path).open("rb") as fh:
            while chunk := fh.read(1 << 20):
                if needle in tail + chunk:
                    return True
                tail = chunk[-len(needle) :]
    except OSError as exc:
        raise LogError(f"cannot read log {path}: {exc.strerror}") from None
    return False


def write_trace(
    log: str | Path,
    out: str | Path | IO[bytes],
    *,
    seq_from: int | None = None,
    seq_to: int | None = None,
    everything: bool = False,
    tlb: bool = True,
    tlb_gone: bool | None = None,
) -> TraceStats:
    """Write the trace of ``log`` to ``out`` (a path, written whole or not at all, or a binary file).

    ``tlb=False`` leaves out the TLB entries' async slices (most of a debug
    log's volume); ``tlb_gone`` says whether the log has ``tlb.gone`` events
    (None: look).  Raises ``LogError`` for a log that cannot be read.
    """
    gone = has_tlb_gone(log) if tlb_gone is None else tlb_gone
    if not isinstance(out, (str, Path)):
        return _Trace(out, seq_from, seq_to, everything, tlb, gone).run(log)
    part = Path(f"{out}.part")
    try:
        with part.open("wb", buffering=1 << 20) as fh:
            stats = _Trace(fh, seq_from, seq_to, everything, tlb, gone).run(log)
        os.replace(part, out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return stats


# -- the converter -----------------------------------------------------------------------------------


def _hexify(v: Any) -> Any:
    if type(v) is int:
        return f"{v:#x}"
    if isinstance(v, list):
        return [_hexify(x) for x in v]
    return v


def _args(ev: dict[str, Any]) -> dict[str, Any]:
    return {k: (_hexify(v) if k in HEX_FIELDS else v) for k, v in ev.items() if k not in NOT_ARGS}


def _hx(v: Any) -> str:
    return f"{v:#x}" if type(v) is int else str(v)


class _Span:
    """An open complete slice on one track: written (as "X") when it closes."""

    __slots__ = ("args", "cat", "last", "name", "start", "tid")

    def __init__(self, cat: str, name: str, start: int, tid: int, args: dict[str, Any]) -> None:
        self.cat = cat
        self.name = name
        self.start = start
        self.tid = tid
        self.args = args
        self.last = start  # a hypercall: the step of its last hypervisor-side event


class _Entry:
    """A cached TLB entry: its async slice is begun at the fill, ended at its removal."""

    __slots__ = ("args", "id", "kind", "lane", "mfn", "name", "start", "tid", "written")

    def __init__(self, kind: str, tid: int, name: str, start: int, mfn: int, args: dict[str, Any]) -> None:
        self.kind = kind
        self.tid = tid
        self.name = name
        self.start = start
        self.mfn = mfn
        self.args = args
        self.lane = -1
        self.id = ""
        self.written = False  # its "b" is out


class _Lanes:
    """Lane numbers for one hart's entries of one kind: the lowest free one, never one freed at this step."""

    __slots__ = ("free", "n", "recent", "recent_seq")

    def __init__(self) -> None:
        self.free: list[int] = []
        self.n = 0
        self.recent: list[int] = []
        self.recent_seq = -1

    def _settle(self, seq: int) -> None:
        if seq != self.recent_seq:
            for lane in self.recent:
                heapq.heappush(self.free, lane)
            self.recent.clear()
            self.recent_seq = seq

    def take(self, seq: int) -> int:
        self._settle(seq)
        if self.free:
            return heapq.heappop(self.free)
        self.n += 1
        return self.n - 1

    def give(self, seq: int, lane: int) -> None:
        self._settle(seq)
        self.recent.append(lane)


class _Trace:
    def __init__(self, fh: IO[bytes], lo: int | None, hi: int | None, everything: bool, tlb: bool, gone: bool) -> None:
        self.fh = fh
        self.lo = lo if lo is not None else 0
        self.hi = hi
        self.everything = everything
        self.tlb = tlb
        self.gone = gone  # the log says when entries leave (tlb.gone): infer only negative entries' ends
        self.stats = TraceStats(tlb_ends="tlb.gone" if gone else "inferred")
        self.first = True
        self.named: set[int] = set()  # tracks whose thread_name is out
        self.stacks: dict[int, list[_Span]] = {}  # per track, open complete slices, innermost last
        self.vcpu: dict[int, _Span] = {}  # per track, the resident vCPU's slice
        self.hcall: dict[int, _Span] = {}  # per track, the running hypercall's slice
        self.entries: dict[int, dict[tuple[str, int, int, int], list[_Entry]]] = {}  # per track, by address
        self.lanes: dict[tuple[int, str], _Lanes] = {}
        self.flows: dict[int, list[tuple[int, int, str, dict[str, Any]]]] = {}  # fence id -> its points so far
        self.capacity = {"leaf": 1, "walk": 1, "negative": 0}
        self.multi = False
        self.last_seq = 0

    # -- output ------------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self.fh.write(data)
        self.stats.bytes += len(data)

    def _emit(self, ev: dict[str, Any]) -> None:
        data = orjson.dumps(ev)
        self._write(data if self.first else b",\n" + data)
        self.first = False
        self.stats.counts[f"{ev.get('cat', 'meta')}:{ev['ph']}"] += 1

    def _in(self, seq: int) -> bool:
        return seq >= self.lo and (self.hi is None or seq <= self.hi)

    def _clip(self, a: int, b: int) -> tuple[int, int] | None:
        hi = b if self.hi is None else min(b, self.hi)
        lo = max(a, self.lo)
        return (lo, hi) if lo <= hi else None

    def _meta(self, name: str, tid: int, args: dict[str, Any]) -> None:
        self._emit({"name": name, "ph": "M", "pid": PID, "tid": tid, "args": args})

    def _track(self, hart: int | None) -> int:
        tid = DRIVER_TID if hart is None else hart + 2
        if tid not in self.named:
            self.named.add(tid)
            self._meta("thread_name", tid, {"name": "workload driver" if hart is None else f"hart {hart}"})
            self._meta("thread_sort_index", tid, {"sort_index": 1 << 20 if hart is None else hart})
        return tid

    def _instant(self, tid: int, seq: int, cat: str, name: str, args: dict[str, Any]) -> None:
        if self._in(seq):
            ev = {"name": name, "cat": cat, "ph": "i", "ts": seq, "pid": PID, "tid": tid, "s": "t", "args": args}
            self._emit(ev)

    def _point(self, tid: int, seq: int, cat: str, name: str, args: dict[str, Any]) -> None:
        """A zero-length slice: what a flow arrow binds to."""
        self._emit({"name": name, "cat": cat, "ph": "X", "ts": seq, "dur": 0, "pid": PID, "tid": tid, "args": args})

    def _flow(self, cat: str, name: str, flow_id: int, points: list[tuple[int, int, str, dict[str, Any]]]) -> None:
        """Each point as a slice, joined by one flow (each flow event right after its slice, so it binds there)."""
        pts = [p for p in points if self._in(p[0])]
        for i, (seq, tid, pname, args) in enumerate(pts):
            self._point(tid, seq, cat, pname, args)
            if len(pts) < 2:
                continue
            ph = "s" if i == 0 else "f" if i == len(pts) - 1 else "t"
            ev = {"name": name, "cat": cat, "ph": ph, "ts": seq, "pid": PID, "tid": tid, "id": flow_id}
            if ph == "f":
                ev["bp"] = "e"
            self._emit(ev)

    # -- complete slices ------------------------------------------------------------------------------

    def _open(self, span: _Span) -> _Span:
        self.stacks.setdefault(span.tid, []).append(span)
        return span

    def _close(self, span: _Span, at: int, **more: Any) -> None:
        """Close ``span`` at step ``at`` and, first, every slice opened inside it (so slices always nest)."""
        stack = self.stacks.get(span.tid, [])
        i = next((i for i in range(len(stack) - 1, -1, -1) if stack[i] is span), None)
        if i is None:
            return
        while len(stack) > i + 1:
            inner = stack.pop()
            inner.args.setdefault("end", f"cut short: the enclosing {span.cat} ended")
            self._flush_span(inner, max(at, inner.start))
        stack.pop()
        span.args.update(more)
        self._flush_span(span, at)

    def _flush_span(self, span: _Span, end: int) -> None:
        if self.vcpu.get(span.tid) is span:
            del self.vcpu[span.tid]
        if self.hcall.get(span.tid) is span:
            del self.hcall[span.tid]
        c = self._clip(span.start, end)
        if c is not None:
            ts, stop = c
            ev = {"name": span.name, "cat": span.cat, "ph": "X", "ts": ts, "dur": stop - ts, "pid": PID}
            ev.update(tid=span.tid, args=span.args)
            self._emit(ev)

    def _hypercall_step(self, tid: int, name: str, ev: dict[str, Any], seq: int) -> None:
        hc = self.hcall.get(tid)
        if hc is None:
            return
        if name == "hypercall.end":
            self._close(hc, seq, end="logged (hypercall.end)")
        elif name in HC_BOUNDARY or (name == "frame.scrub" and "scrub_free_pages" in str(ev.get("why"))):
            # inferred: it returned after its last hypervisor-side event, before this one
            self._close(hc, min(hc.last + 1, seq), end=f"inferred: {name} at step {seq} shows the hart elsewhere")
        elif name not in HC_NEUTRAL:
            hc.last = seq

    # -- TLB entries ---------------------------------------------------------------------------------

    def _infer(self, kind: str) -> bool:
        return kind == "negative" or not self.gone

    def _tlb_fill(self, tid: int, hart: int, seq: int, ev: dict[str, Any]) -> None:
        leaf, mfn, level, gfn, vmid = (
            ev.get("leaf"),
            ev.get("mfn", 0),
            ev.get("level", 0),
            ev.get("gfn", 0),
            ev.get("vmid"),
        )
        kind = "negative" if leaf and mfn == 0 and self.capacity["negative"] else "leaf" if leaf else "walk"
        key = (kind, vmid, level, gfn)
        held = self.entries.setdefault(tid, {})
        if self._infer(kind) and not self.multi:
            for old in held.pop(key, []):
                self._tlb_end(old, seq, {"why": "refill (inferred)"})
        what = "invalid PTE (negative entry)" if kind == "negative" else f"{'mfn' if leaf else 'table'} {_hx(mfn)}"
        args = {"entry": f"L{level} gfn {_hx(gfn)} -> {what}", **_args(ev)}
        args.pop("leaf", None)  # the slice's name says which cache
        e = _Entry(kind, tid, f"hart {hart} TLB {TLB_KINDS[kind]}", seq, mfn, args)
        lanes = self.lanes.setdefault((tid, kind), _Lanes())
        e.lane = lanes.take(seq)
        e.id = f"h{hart}.{kind}.{e.lane}"
        if self._in(seq):
            self._tlb_begin(e, seq)
        if not self.capacity[kind]:  # logged, never held (a walk cache of 0 entries)
            self._tlb_end(e, seq, {"why": "not cached (capacity 0)"})
            return
        held.setdefault(key, []).append(e)

    def _tlb_begin(self, e: _Entry, ts: int) -> None:
        ev = {"name": e.name, "cat": "tlb", "ph": "b", "ts": ts, "pid": PID, "tid": e.tid, "id": e.id}
        ev["args"] = e.args
        self._emit(ev)
        e.written = True

    def _tlb_end(self, e: _Entry, seq: int, args: dict[str, Any]) -> None:
        self.lanes[(e.tid, e.kind)].give(seq, e.lane)
        c = self._clip(e.start, seq)
        if c is None:
            return
        if not e.written:
            self._tlb_begin(e, c[0])
        ev = {"name": e.name, "cat": "tlb", "ph": "e", "ts": c[1], "pid": PID, "tid": e.tid, "id": e.id}
        ev["args"] = args
        self._emit(ev)

    def _tlb_gone(self, tid: int, seq: int, ev: dict[str, Any]) -> None:
        key = ("leaf" if ev.get("leaf") else "walk", ev.get("vmid"), ev.get("level", 0), ev.get("gfn", 0))
        held = self.entries.get(tid, {})
        lst = held.get(key)
        if not lst:
            return
        i = next((i for i, e in enumerate(lst) if e.mfn == ev.get("mfn")), 0)
        e = lst.pop(i)
        if not lst:
            del held[key]
        self._tlb_end(e, seq, {k: v for k, v in _args(ev).items() if k in ("why", "fence", "window", "by")})

    def _tlb_fence(self, tid: int, seq: int, ev: dict[str, Any], what: str) -> None:
        """Without tlb.gone: the entries this fence removes, as the model's HFENCE.GVMA would."""
        held = self.entries.get(tid)
        if not held:
            return
        vmid, gfns = ev.get("vmid"), ev.get("gfns")
        why = {"why": f"{what} (inferred)", "fence": ev.get("id") if what != "fence.local" else None}
        for key in list(held):
            kind, evmid, level, base = key
            if not self._infer(kind) or (vmid is not None and evmid != vmid):
                continue
            if gfns is not None:
                span = 1 << (9 * level)
                if kind == "walk" or not any(base <= g < base + span for g in gfns):
                    continue  # an address fence removes leaf (and negative) entries only
            for e in held.pop(key):
                self._tlb_end(e, seq, why)

    # -- fences and chains -------------------------------------------------------------------------

    def _fence(self, tid: int, seq: int, name: str, ev: dict[str, Any]) -> None:
        fid, src, dst = ev.get("id"), ev.get("src"), ev.get("dst")
        gfns = ev.get("gfns")
        args = {
            "id": fid,
            "src": src,
            "dst": dst,
            "vmid": ev.get("vmid"),
            "gfns": "all" if gfns is None else _hexify(gfns),
        }
        what = name.split(".", 1)[1]
        if what == "local":
            if self._in(seq):
                self._point(tid, seq, "fence", f"HFENCE.GVMA local (hart {dst})", args)
            if self.tlb:
                self._tlb_fence(tid, seq, ev, name)
            return
        label = f"fence #{fid} sent to hart {dst}" if what == "sent" else f"fence #{fid} {what} (from hart {src})"
        if what == "sent":
            self.flows[fid] = [(seq, tid, label, args)]
            return
        if what == "taken" and self.tlb:
            self._tlb_fence(tid, seq, ev, name)
        points = self.flows.get(fid)
        if points is None:  # its start is not in this log
            if self._in(seq):
                self._point(tid, seq, "fence", label, args)
            return
        points.append((seq, tid, label, args))
        if what == "acked":
            del self.flows[fid]
            self._flow("fence", "fence", fid, points)

    def _violation(self, tid: int, seq: int, ev: dict[str, Any]) -> None:
        n = ev.get("n", 0)
        chain = ev.get("chain") or []
        points = [
            (
                c.get("seq", seq),
                self._track(c.get("hart")),
                f"violation {n} step {i + 1}/{len(chain)}: {c.get('kind')}",
                {"violation": n, "kind": c.get("kind"), "text": c.get("text")},
            )
            for i, c in enumerate(chain)
        ]
        self._flow("chain", f"violation {n} chain", CHAIN_FLOW_BASE + n, points)
        self._instant(tid, seq, "violation", f"VIOLATION {n}: {violation_class(ev)}", _args(ev) | {"chain": len(chain)})

    # -- events -----------------------------------------------------------------------------------

    def _start(self, ev: dict[str, Any]) -> None:
        cfg = ev.get("config", {})
        self.capacity = {
            "leaf": cfg.get("tlb_leaf", 1),
            "walk": cfg.get("tlb_nonleaf", 1),
            "negative": cfg.get("tlb_negative", 0),
        }
        self.multi = bool(cfg.get("tlb_multi", False))
        run = {k: cfg.get(k) for k in ("workload", "seed", "profile", "strategy", "pcpus", "bugs")}
        other = {
            "p2msim": ev.get("version"),
            "log_schema": ev.get("v"),
            "run": run,
            "time": "ts is the log's seq: 1 step = 1 us",
            "tlb_ends": self.stats.tlb_ends,
        }
        self._write(b'{"displayTimeUnit":"' + TIME_UNIT.encode() + b'","otherData":' + orjson.dumps(other))
        self._write(b',"traceEvents":[\n')
        self._meta("process_name", DRIVER_TID, {"name": "p2msim"})
        bugs = f" bugs {','.join(cfg['bugs'])}" if cfg.get("bugs") else ""
        self._meta("process_labels", DRIVER_TID, {"labels": f"{cfg.get('workload')} seed {cfg.get('seed')}{bugs}"})
        for h in range(int(cfg.get("pcpus") or 0)):
            self._track(h)
        self._track(None)

    def _event(self, ev: dict[str, Any]) -> None:
        seq, hart, name = ev["seq"], ev.get("hart"), ev["event"]
        tid = self._track(hart)
        self._hypercall_step(tid, name, ev, seq)
        if name == "tlb.fill":
            if self.tlb and hart is not None:
                self._tlb_fill(tid, hart, seq, ev)
        elif name == "tlb.gone":
            if self.tlb:
                self._tlb_gone(tid, seq, ev)
            if ev.get("window"):  # the entry was a race window (engine.windows): worth a mark
                what = f"L{ev.get('level')} gfn {_hx(ev.get('gfn'))} -> {_hx(ev.get('mfn'))}"
                self._instant(tid, seq, "window", f"{ev['window']} closed: {what}", _args(ev))
        elif name.startswith("fence."):
            self._fence(tid, seq, name, ev)
        elif name == "switch_in":
            old = self.vcpu.get(tid)
            if old is not None:
                self._close(old, seq, end="no switch_out before the next switch_in")
            dom, vcpu = ev.get("dom"), ev.get("vcpu")
            self.vcpu[tid] = self._open(_Span("vcpu", f"dom{dom} vcpu{vcpu}", seq, tid, _args(ev)))
        elif name == "switch_out":
            span = self.vcpu.get(tid)
            if span is not None:
                self._close(span, seq)
        elif name == "hypercall":
            args = _args(ev)
            label = f"{ev.get('op')}(dom{ev.get('dom')}" + (f", {args['gfn']}" if "gfn" in args else "") + ")"
            self.hcall[tid] = self._open(_Span("hypercall", label, seq, tid, args))
        elif name in LOCKS:
            lock, acquire = LOCKS[name]
            label = f"{lock} dom{ev.get('dom')}"
            if acquire:
                self._open(_Span("lock", label, seq, tid, _args(ev)))
            else:
                stack = self.stacks.get(tid, [])
                span = next((s for s in reversed(stack) if s.cat == "lock" and s.name == label), None)
                if span is not None:
                    self._close(span, seq)
        elif name == "oracle.violation":
            self._violation(tid, seq, ev)
        if name in DRAWN:
            return
        # args of the resident vCPU's slice: the VMID and hgatp it ran with
        span = self.vcpu.get(tid)
        if span is not None and name == "vmid.assign" and ev.get("vcpu", -1) >= 0:
            span.args["vmid"] = ev.get("vmid")
        if name == "hgatp.write" and isinstance(ev.get("hgatp"), (int, str)):
            value = wide(ev["hgatp"])  # a hex string since log schema 4
            mode, vmid, ppn = hgatp_fields(value)
            if span is not None:
                span.args["hgatp"] = _hx(value)
            self._instant(
                tid,
                seq,
                "hgatp",
                f"hgatp VMID {vmid} root {ppn:#x}",
                _args(ev) | {"mode": mode, "vmid": vmid, "root": _hx(ppn)},
            )
            return
        cat = INSTANTS.get(name)
        if name == "frame.hand_out" and ev.get("gen", 1) > 1:
            self._instant(tid, seq, "frame", f"reuse mfn {_hx(ev.get('mfn'))} (gen {ev.get('gen')})", _args(ev))
        elif cat is not None:
            self._instant(tid, seq, cat, self._label(name, ev), _args(ev))
        elif self.everything:
            self._instant(tid, seq, "log", name, _args(ev))

    @staticmethod
    def _label(name: str, ev: dict[str, Any]) -> str:
        if name == "frame.free":
            return f"free mfn {_hx(ev.get('mfn'))}"
        if name == "pte.write":
            table = ev.get("table", ev.get("mfn"))  # "table" since log schema 4
            return f"PTE {_hx(table)}[{ev.get('idx')}] {_hx(ev.get('old'))} -> {_hx(ev.get('new'))}"
        if name == "guest.fault":
            return f"guest fault gfn {_hx(ev.get('gfn'))}"
        if name in ("oracle.warning", "warning"):
            return f"warning: gfn {_hx(ev.get('gfn'))} mfn {_hx(ev.get('mfn'))}"
        if "dom" in ev:
            return f"{name} dom{ev['dom']}"
        return name

    def _finish(self, seq: int, run_ended: bool) -> None:
        """Close whatever is open at ``seq`` (the run's end, or the window's)."""
        for tid in sorted(self.stacks):
            stack = self.stacks[tid]
            while stack:
                span = stack[-1]  # innermost first: each closes by its own rule
                if span.cat == "hypercall":
                    self._close(span, min(span.last + 1, seq), end="inferred: the log ends")
                else:
                    self._close(span, seq, end="still open when the log ends")
        why = {"why": "end" if run_ended else "window end"}
        for held in self.entries.values():
            for lst in held.values():
                for e in lst:
                    self._tlb_end(e, seq, why)
        self.entries.clear()
        for fid, points in self.flows.items():
            if run_ended:
                dst = points[0][3].get("dst")
                what = "not taken" if len(points) == 1 else "not acknowledged"
                points.append((seq, self._track(dst), f"fence #{fid} {what}: still in flight at the end", points[0][3]))
            self._flow("fence", "fence", fid, points)
        self.flows.clear()

    def run(self, log: str | Path) -> TraceStats:
        started = False
        run_ended = True
        for ev in read_events(log):
            seq = ev["seq"]
            if not started:
                self._start(ev)
                started = True
                continue
            if self.hi is not None and seq > self.hi:
                run_ended = False
                self.last_seq = self.hi
                break
            self.last_seq = seq
            self._event(ev)
        self._finish(self.last_seq, run_ended)
        self._write(b"\n]}\n")
        return self.stats
