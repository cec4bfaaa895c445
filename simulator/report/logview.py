"""`p2msim inspect`: what a log says, readable in a minute.

Everything streams: a summary keeps counters and the first violations, a
timeline yields matching events as it reads, so a million-line log is read in
bounded memory.  A violation's timeline is its causal chain (as the oracle
logged it) plus the fences sent to, taken by and acknowledged by the harts in
that chain while it unfolded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.engine.logread import LogError, read_events

MAX_VIOLATIONS = 1000
MAX_EXTRA_FENCES = 200


@dataclass
class Filters:
    mfn: int | None = None
    gfn: int | None = None
    dom: int | None = None
    hart: int | None = None
    event: str | None = None
    seq_from: int | None = None
    seq_to: int | None = None

    def match(self, ev: dict[str, Any]) -> bool:
        seq = ev.get("seq", 0)
        if self.seq_from is not None and seq < self.seq_from:
            return False
        if self.seq_to is not None and seq > self.seq_to:
            return False
        if self.hart is not None and ev.get("hart") != self.hart:
            return False
        if self.event is not None and not str(ev.get("event", ev.get("kind", ""))).startswith(self.event):
            return False
        # about this frame: the event's frame, a PTE's table or target, or a table on a walk's path
        frames = (ev.get("mfn"), ev.get("table"), ev.get("target_mfn"))
        if self.mfn is not None and self.mfn not in frames and self.mfn not in ev.get("path", ()):
            return False
        if self.gfn is not None and ev.get("gfn") != self.gfn:
            return False
        return self.dom is None or ev.get("dom") == self.dom


@dataclass
class Summary:
    path: str
    lines: int = 0
    start: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    stopped: dict[str, Any] | None = None  # run.error / run.interrupted
    violations: list[dict[str, Any]] = field(default_factory=list)
    distinct: int = 0
    warnings: int = 0
    events: Counter[str] = field(default_factory=Counter)
    last_seq: int = 0
    causes: list[dict[str, Any]] = field(default_factory=list)  # the violations by root cause (engine.findings)

    def to_json(self) -> dict[str, Any]:
        cfg = self.start.get("config", {})
        return {
            "log": self.path,
            "schema": self.start.get("v"),
            "version": self.start.get("version"),
            "lines": self.lines,
            "run": cfg,
            "stop": (self.end or {}).get("stop") or (self.stopped or {}).get("event"),
            "last_seq": self.last_seq,
            "stats": (self.end or {}).get("stats"),
            "digest": (self.end or {}).get("digest"),
            "violations": [
                {"class": violation_class(v)}
                | {k: v.get(k) for k in ("n", "seq", "hart", "dom", "gfn", "mfn", "headline", "missing")}
                for v in self.violations
            ],
            "violation_count": (self.end or {}).get("violations"),  # harmful uses, as in run --json
            "findings": self.distinct,
            "causes": self.causes,
            "warnings": self.warnings,
            "windows": (self.end or {}).get("windows"),
            "events": dict(sorted(self.events.items())),
        }


def summarize(path: str | Path) -> Summary:
    s = Summary(str(path))
    for ev in read_events(path):
        s.lines += 1
        name = ev["event"]
        s.events[name] += 1
        s.last_seq = ev["seq"]
        if name == "run.start":
            s.start = ev
        elif name == "run.end":
            s.end = ev
        elif name in ("run.error", "run.interrupted"):
            s.stopped = ev
        elif name == "oracle.violation":
            s.distinct += 1
            if len(s.violations) < MAX_VIOLATIONS:
                s.violations.append(ev)
        elif name == "oracle.warning":
            s.warnings += 1  # the distinct ones the log kept
    if s.end is not None and isinstance(s.end.get("causes"), list):
        s.causes = s.end["causes"]
    else:  # an interrupted run's log: group what it recorded, as the run would have
        s.causes = _group(s.violations)
    if s.end is not None and isinstance(s.end.get("warnings"), int):
        s.warnings = s.end["warnings"]  # every one the run counted, as the run itself reports
    return s


def violation_class(ev: dict[str, Any]) -> str:
    """An oracle.violation's class: ``class`` since log schema 4, ``cls`` before."""
    return str(ev.get("class", ev.get("cls", "?")))


def _group(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from simulator.engine.findings import Groups
    from simulator.engine.oracle import Violation

    groups = Groups()
    for ev in violations:
        c = ev.get("cause") or None
        v = Violation(
            violation_class(ev),
            ev.get("hart"),
            ev.get("dom"),
            ev.get("gfn"),
            ev.get("mfn"),
            ev["seq"],
            ev.get("headline", ""),
            missing=ev.get("missing", ""),
        )
        if c:
            from simulator.engine.cause import Cause

            v.cause = Cause(c.get("defence", ""), c.get("case", ""), c.get("function", ""), ev.get("missing", ""))
        groups.add(ev.get("n", 0), v)
    return groups.to_json()


def find_violation(path: str | Path, n: int) -> dict[str, Any]:
    for ev in read_events(path):
        if ev["event"] == "oracle.violation" and ev.get("n") == n:
            return ev
    raise LogError(f"{path}: there is no violation {n} in this log (see `p2msim inspect {path}`)")


def violation_timeline(path: str | Path, n: int, filters: Filters | None = None) -> dict[str, Any]:
    """The chain of violation ``n`` plus the fence traffic of its harts in the same window."""
    v = find_violation(path, n)
    chain = [dict(c, chain=True) for c in v.get("chain", [])]
    if not chain:
        chain = [{"seq": v["seq"], "hart": v["hart"], "kind": "use", "text": v.get("headline", ""), "chain": True}]
    lo, hi = chain[0]["seq"], v["seq"]
    harts = {c["hart"] for c in chain if c["hart"] is not None}
    in_chain = {(c["seq"], c["hart"], c["kind"]) for c in chain}
    extra: list[dict[str, Any]] = []
    for ev in read_events(path):
        if ev["seq"] > hi:
            break
        if ev["seq"] < lo or not ev["event"].startswith("fence."):
            continue
        if ev.get("dst") in harts or ev.get("src") in harts:
            kind = ev["event"]
            if (ev["seq"], ev["hart"], kind) in in_chain:
                continue
            extra.append(
                {
                    "seq": ev["seq"],
                    "hart": ev["hart"],
                    "kind": kind,
                    "chain": False,
                    "text": f"{kind.split('.')[1]}: fence #{ev.get('id')} hart {ev.get('src')} -> hart {ev.get('dst')}",
                }
            )
            if len(extra) >= MAX_EXTRA_FENCES:
                break
    events = sorted(chain + extra, key=lambda e: (e["seq"], not e["chain"]))
    if filters is not None:
        events = [e for e in events if filters.match(e)]
    return {
        "violation": {"class": violation_class(v)}
        | {k: v.get(k) for k in ("n", "seq", "hart", "dom", "gfn", "mfn", "headline", "missing")},
        "harts": sorted(harts),
        "timeline": events,
    }


def timeline(path: str | Path, filters: Filters) -> Iterator[dict[str, Any]]:
    for ev in read_events(path):
        if filters.match(ev):
            yield ev


# -- text rendering ------------------------------------------------------------------------------


def render_summary(s: Summary) -> str:
    cfg = s.start.get("config", {})
    out = [f"p2msim log {s.path}  (schema v{s.start.get('v')}, p2msim {s.start.get('version')}, {s.lines:,} lines)"]
    bugs = f"  bugs {', '.join(cfg.get('bugs', []))}" if cfg.get("bugs") else ""
    out.append(
        f"run: {cfg.get('workload')}  seed {cfg.get('seed')}  profile {cfg.get('profile')}  "
        f"strategy {cfg.get('strategy')}  {cfg.get('pcpus')} harts{bugs}"
    )
    if s.end is not None:
        st = s.end.get("stats", {})
        out.append(f"stop: {s.end.get('stop')} at step {s.last_seq:,}   digest {s.end.get('digest')}")
        out.append(
            f"stats: {st.get('accesses', 0):,} accesses ({st.get('tlb_hits', 0):,} TLB hits, {st.get('walks', 0):,} "
            f"walks), {st.get('fences_sent', 0):,} fences sent / {st.get('fences_acked', 0):,} acked, "
            f"{st.get('frames_freed', 0):,} frames freed / {st.get('frames_reused', 0):,} reused, "
            f"{st.get('stale_benign', 0):,} benign stale"
        )
    elif s.stopped is not None:
        what = s.stopped.get("error") or "interrupted"
        out.append(f"stopped early at step {s.stopped['seq']:,}: {what} (the log is complete up to there)")
    else:
        out.append(f"no run.end line: the log ends at step {s.last_seq:,}")
    if s.violations:
        from simulator.engine import findings

        uses = (s.end or {}).get("violations", s.distinct)
        out.append(f"violations: {findings.counts(uses, s.distinct, len(s.causes))}")
        cause_of = {m: i for i, c in enumerate(s.causes, 1) for m in c.get("members", ())}
        for i, c in enumerate(s.causes, 1):
            out.append(f"  cause {i}: {c['title']}  [{findings.plural(c['violations'], 'violation')}]")
        for v in s.violations[:20]:
            cause = f"  cause {cause_of[v['n']]}" if v.get("n") in cause_of else ""
            out.append(
                f"  {v.get('n'):>3}  {violation_class(v):<26} step {v['seq']:>9,}  hart {v.get('hart')}  "
                f"gfn {_hex(v.get('gfn'))}  mfn {_hex(v.get('mfn'))}{cause}"
            )
        if s.distinct > 20:
            out.append(f"  ... and {s.distinct - 20} more (--json lists them)")
        out.append(f"details: p2msim inspect {s.path} --violation 1")
    else:
        out.append("violations: none")
    out.append(f"warnings: {s.warnings}")
    if s.end is not None and s.end.get("windows"):
        from simulator.engine import windows

        out.extend(windows.block(s.end["windows"], indent=""))
    return "\n".join(out)


def render_violation(t: dict[str, Any], nr_harts: int) -> str:
    v = t["violation"]
    out = [f"VIOLATION {v['n']}: {v['class']}", f"  {v.get('headline', '')}", ""]
    lanes = max(nr_harts, 1 + max((e["hart"] for e in t["timeline"] if e["hart"] is not None), default=0))
    header = " ".join(f"h{i}" for i in range(lanes))
    out.append(f"     step  {header}  event")
    for e in t["timeline"]:
        marks = []
        for i in range(lanes):
            if e["hart"] == i:
                marks.append("●" if e["chain"] else "·")
            else:
                marks.append("│" if i in t["harts"] else " ")
        lane = "  ".join(marks)
        out.append(f"  {e['seq']:>7,}  {lane}  {e['text']}")
    if v.get("missing"):
        out.append("")
        out.append(f"  MISSING OR LATE: {v['missing']}")
    return "\n".join(out)


def render_event(ev: dict[str, Any]) -> str:
    rest = {k: v for k, v in ev.items() if k not in ("seq", "hart", "event", "log_level")}
    fields = " ".join(f"{k}={_fmt(v)}" for k, v in rest.items() if k != "decisions")
    hart = "-" if ev.get("hart") is None else ev["hart"]
    return f"{ev['seq']:>9,}  {hart:>4}  {ev['event']:<28} {fields}"


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return v if " " not in v else repr(v)
    return str(v)


def _hex(v: Any) -> str:
    return f"{v:#x}" if isinstance(v, int) else "-"
