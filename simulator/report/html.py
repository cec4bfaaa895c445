"""`p2msim inspect --format html`: one self-contained page, one lane per hart.

What the page draws along logical time (the log's steps), one lane per hart
and one for the workload driver:

* the violation's stale TLB entry as a bar on its hart's lane, from its fill
  (the chain's fill step) to the ``tlb.gone`` that removed it, coloured by
  what had happened to what it reaches: still linked, unlinked, freed, reused;
* each vCPU's residency on a hart (``switch_in`` .. ``switch_out``) as a
  background band of its lane;
* each remote fence in flight as a bar on its target's lane, from
  ``fence.sent`` to ``fence.acked`` (open-ended if it was still in flight at
  the end of the window), joined to the sender's lane;
* the free and the reuse of the stale entry's frame as lines across all lanes;
* the violation's causal chain, larger, in red, joined in order;
* every other event as a dot; hovering over anything shows its fields.

The window is the chain's, with a margin, or ``--from``/``--to``; it never
starts below step 0 nor ends after the log.  At most ``MAX_EVENTS`` dots are
drawn: past that the events of the chain, fences, vCPU switches, violations
and the stale entry's frame are kept and the others thinned evenly across the
window, and the page says so ("showing N of M events").  Residency, fences and
the stale entry are drawn from every event of the window, never thinned.

The SVG scales to the width of the browser window (no horizontal scroll);
labels are laid out in the browser, where their real widths are known: a label
that would overlap another is hidden and shown while the mouse is over what it
names.  No network access: styles, script and the SVG are all inline.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from simulator.engine.logread import read_events
from simulator.report import logview

MAX_EVENTS = 4000  # dots drawn at most; the page says how many the window has
MAX_BARS = 2000  # fence bars and residency bands drawn at most (each); the page says if there were more
WIDTH = 1240  # the SVG's own units: it is scaled to the page's width
LEFT = 64
RIGHT = 10
TOP = 50
LANE = 90
LANE_DRIVER = 56  # the driver has no vCPUs, fences or TLB

# rows inside a lane (offsets from its top)
ROW_BAND = 12  # baseline: residency labels
ROW_CHAIN = 26  # baseline: chain labels
ROW_DOTS = 37  # centre of the dots and chain circles
ROW_STALE = 46  # top of the stale entry's bar (9 high)
ROW_LABEL = 68  # baseline: the stale entry's and fences' labels
ROW_FENCE = 73  # top of the first fence row (3 high, 5 apart)
FENCE_ROWS = 3

COLOURS = {
    "fence": "#2563eb",
    "frame": "#d97706",
    "pte": "#7c3aed",
    "tlb": "#94a3b8",
    "oracle": "#dc2626",
    "switch": "#111827",
    "hypercall": "#059669",
    "p2m": "#0d9488",
}
BAND_COLOURS = ("#dbeafe", "#dcfce7", "#fef3c7", "#fce7f3", "#e0e7ff", "#ccfbf1", "#ffedd5", "#ede9fe")
PHASES = {  # what the stale entry reaches, from the step it happened
    "cached": ("#64748b", "cached, what it reaches still linked"),
    "unmap": ("#f59e0b", "cached after the unlink"),
    "free": ("#ea580c", "cached after the free"),
    "reuse": ("#dc2626", "cached after the reuse"),
}
KEY_EVENTS = frozenset(
    {"switch_in", "switch_out", "vmid.assign", "oracle.violation", "oracle.warning", "hgatp.write"}
    | {"fence.sent", "fence.taken", "fence.acked", "fence.local", "p2m_tlb_flush", "p2m_free_subtree.table_freed"}
)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>p2msim: {title}</title>
<style>
html, body {{ overflow-x: hidden; }}
body {{ font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #111827; }}
h1 {{ font-size: 17px; margin: 0 0 4px; }}
h2 {{ font-size: 14px; margin: 14px 0 4px; }}
.meta {{ color: #4b5563; margin-bottom: 8px; overflow-wrap: anywhere; }}
.missing {{ background: #fee2e2; border-left: 4px solid #dc2626; padding: 6px 10px; margin: 8px 0;
            overflow-wrap: anywhere; }}
.notice {{ background: #fef9c3; border-left: 4px solid #ca8a04; padding: 6px 10px; margin: 8px 0; font-weight: 600; }}
.timeline {{ display: block; width: 100%; height: auto; border: 1px solid #e5e7eb; background: #fff;
          box-sizing: border-box; }}
.lane rect {{ fill: #f9fafb; }}
.lane.odd rect {{ fill: #f3f4f6; }}
.lane text {{ font-size: 12px; fill: #374151; font-weight: 600; }}
.grid {{ stroke: #e5e7eb; stroke-width: 1; }}
.band {{ stroke: #9ca3af; stroke-width: .6; }}
.ev {{ stroke: none; opacity: .75; cursor: pointer; }}
.ev:hover, .bar:hover, .band:hover {{ opacity: 1; stroke: #000; stroke-width: 1px; }}
.chain {{ fill: #fff; stroke: rgb(220, 38, 38); stroke-width: 3px; opacity: 1; cursor: pointer; }}
.chain-path {{ fill: none; stroke: rgb(220, 38, 38); stroke-width: 1.2px; stroke-dasharray: 5 3; opacity: .55; }}
.fence-bar {{ fill: #2563eb; cursor: pointer; }}
.fence-open {{ fill: #93c5fd; }}
.fence-link {{ stroke: #2563eb; stroke-width: 1; stroke-dasharray: 2 2; opacity: .6; }}
.stale-seg {{ cursor: pointer; }}
.stale-end {{ stroke: #111827; stroke-width: 2px; }}
.marker {{ stroke-width: 1.5px; stroke-dasharray: 6 3; }}
.lbl {{ font-size: 10.5px; fill: #1f2937; paint-order: stroke; stroke: rgba(255, 255, 255, .85);
        stroke-width: 3px; stroke-linejoin: round; pointer-events: none; }}
.lbl.chain-label {{ font-size: 11px; fill: #991b1b; font-weight: 700; }}
.lbl.stale-label {{ fill: #7f1d1d; font-weight: 600; }}
.lbl.fence-label {{ fill: #1e3a8a; }}
.lbl.tick {{ fill: #6b7280; }}
.lbl.off {{ display: none; }}
.lbl.off.peek {{ display: inline; }}
#tip {{ position: fixed; display: none; background: #111827; color: #f9fafb; padding: 6px 8px;
        border-radius: 4px; font: 12px/1.35 ui-monospace, monospace; white-space: pre-wrap; pointer-events: none;
        max-width: min(640px, 90vw); z-index: 10; overflow-wrap: anywhere; }}
table {{ border-collapse: collapse; margin-top: 12px; width: 100%; }}
td, th {{ padding: 2px 8px; text-align: left; border-bottom: 1px solid #e5e7eb; vertical-align: top; }}
td:last-child {{ overflow-wrap: anywhere; }}
.legend {{ display: flex; flex-wrap: wrap; gap: 2px 14px; margin: 6px 0; }}
.legend i {{ display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 4px;
             vertical-align: -1px; }}
.legend i.sq {{ border-radius: 1px; width: 16px; height: 8px; }}
</style></head>
<body>
<h1>{title}</h1>
<div class="meta">{meta}</div>
{missing}
{notices}
<div class="legend">{legend}</div>
{views}
<div id="tip"></div>
{table}
<script>
(function () {{
  // labels: measured here, where fonts are known; each goes to the first of its rows where it overlaps no
  // label of its lane, or is hidden (and shown while the mouse is over what it names)
  function hit(a, b) {{ return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h; }}
  function layout(svg) {{
    var W = +svg.getAttribute("data-right"), L = +svg.getAttribute("data-left"), placed = {{}};
    var items = Array.prototype.map.call(svg.querySelectorAll("text.lbl"), function (el) {{
      var b = el.getBBox(), x = +el.getAttribute("x"), y = +el.getAttribute("y");
      return {{ el: el, x: x, dx: b.x - x, dy: b.y - y, w: b.width, h: b.height,
               p: +(el.getAttribute("data-p") || 5), lane: el.getAttribute("data-lane") || "",
               ys: (el.getAttribute("data-ys") || String(y)).split(" ").map(Number),
               min: +(el.getAttribute("data-min") || L), max: +(el.getAttribute("data-max") || W),
               gap: el.hasAttribute("data-gap") ? +el.getAttribute("data-gap") : null }};
    }});
    items.sort(function (a, b) {{ return a.p - b.p || a.x - b.x; }});
    items.forEach(function (t) {{
      var x = t.x, left = x + t.dx, mine = placed[t.lane] || (placed[t.lane] = []);
      if (left + t.w > t.max && t.gap !== null) {{ x = t.x - 2 * t.gap - t.w - t.dx; left = x + t.dx; }}
      if (left + t.w > t.max) {{ x -= left + t.w - t.max; left = x + t.dx; }}
      if (left < t.min) {{ x += t.min - left; left = x + t.dx; }}
      if (t.w <= t.max - t.min + 0.5) {{
        for (var i = 0; i < t.ys.length; i++) {{
          var box = {{ x: left - 2, y: t.ys[i] + t.dy, w: t.w + 4, h: t.h }};
          if (!mine.some(function (o) {{ return hit(o, box); }})) {{
            t.el.setAttribute("x", x.toFixed(1));
            t.el.setAttribute("y", t.ys[i]);
            mine.push(box);
            return;
          }}
        }}
      }}
      t.el.classList.add("off");
    }});
    svg.addEventListener("mouseover", function (e) {{
      var a = e.target.closest("[data-lbl]"), l = a && document.getElementById(a.getAttribute("data-lbl"));
      if (l && l.classList.contains("off")) {{ l.classList.add("peek"); svg.appendChild(l); }}
    }});
    svg.addEventListener("mouseout", function (e) {{
      var a = e.target.closest("[data-lbl]"), l = a && document.getElementById(a.getAttribute("data-lbl"));
      if (l) l.classList.remove("peek");
    }});
    svg.setAttribute("data-laid-out", "1");
  }}
  Array.prototype.forEach.call(document.querySelectorAll("svg.timeline"), layout);
  // hover: the fields of what is under the mouse
  var tip = document.getElementById("tip");
  document.addEventListener("mousemove", function (e) {{
    var el = e.target.closest && e.target.closest("[data-ev]");
    if (!el) {{ tip.style.display = "none"; return; }}
    var ev = JSON.parse(el.getAttribute("data-ev"));
    tip.textContent = Object.keys(ev).map(function (k) {{
      return k + ": " + (typeof ev[k] === "object" && ev[k] !== null ? JSON.stringify(ev[k]) : ev[k]);
    }}).join("\\n");
    tip.style.display = "block";
    var r = tip.getBoundingClientRect(), left = e.clientX + 14, top = e.clientY + 14;
    if (left + r.width > window.innerWidth - 4) left = Math.max(4, e.clientX - 14 - r.width);
    if (top + r.height > window.innerHeight - 4) top = Math.max(4, e.clientY - 14 - r.height);
    tip.style.left = left + "px";
    tip.style.top = top + "px";
  }});
}})();
</script>
</body></html>
"""


def _colour(event: str) -> str:
    head = event.split(".")[0].split("_")[0]
    if event.startswith(("switch_", "vmid")):
        return COLOURS["switch"]
    return COLOURS.get(head, "#0891b2")


def _hex(v: Any) -> str:
    return f"{v:#x}" if isinstance(v, int) else "-"


def _attr(obj: Any) -> str:
    return html.escape(orjson.dumps(obj).decode(), quote=True)


class _Thin:
    """At most ``cap`` items, spread evenly over everything offered: keep every k-th, doubling k when full."""

    def __init__(self, cap: int) -> None:
        self.cap = max(cap, 1)
        self.items: list[dict[str, Any]] = []
        self.stride = 1
        self.seen = 0

    def add(self, ev: dict[str, Any]) -> None:
        if self.seen % self.stride == 0:
            self.items.append(ev)
            if len(self.items) > self.cap:
                self.items = self.items[::2]
                self.stride *= 2
        self.seen += 1

    def take(self, n: int) -> list[dict[str, Any]]:
        if n <= 0:
            return []
        if len(self.items) <= n:
            return self.items
        return [self.items[i * len(self.items) // n] for i in range(n)]


@dataclass
class Band:  # a vCPU resident on a hart
    hart: int
    dom: Any
    vcpu: Any
    vmid: Any
    start: int
    end: int | None = None  # None: still resident at the end of what was read


@dataclass
class FenceBar:  # a remote fence request, sent -> taken -> acked
    id: Any
    src: Any
    dst: int
    vmid: Any
    gfns: Any
    sent: int
    taken: int | None = None
    acked: int | None = None


@dataclass
class Entry:  # the stale TLB entry
    hart: int
    fill: dict[str, Any]
    gone: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        return tuple(self.fill.get(k) for k in ("leaf", "vmid", "level", "gfn", "mfn"))


@dataclass
class Scan:
    dots: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0  # events in the window (that the filters let through)
    bands: list[Band] = field(default_factory=list)
    bands_total: int = 0
    fences: list[FenceBar] = field(default_factory=list)
    fences_total: int = 0
    entry: Entry | None = None
    has_gone: bool = False  # the log has tlb.gone events (schema 4)


def _about(ev: dict[str, Any], mfn: Any) -> bool:
    return mfn is not None and mfn in (ev.get("mfn"), ev.get("table"), ev.get("target_mfn"))


def _scan(
    path: str | Path,
    lo: int,
    hi: int,
    filters: logview.Filters | None,
    fill_at: tuple[int, int, Any] | None,
    mfn: Any,
) -> Scan:
    """One pass over the log up to ``hi`` (further only to see the stale entry leave the TLB)."""
    s = Scan()
    keys, others = _Thin(MAX_EVENTS // 2), _Thin(MAX_EVENTS)
    resident: dict[int, Band] = {}
    inflight: dict[tuple[Any, Any], FenceBar] = {}

    def band_done(b: Band) -> None:
        if b.end is not None and b.end < lo:
            return
        s.bands_total += 1
        if len(s.bands) < MAX_BARS:
            s.bands.append(b)

    def fence_done(f: FenceBar) -> None:
        if f.acked is not None and f.acked < lo:
            return
        s.fences_total += 1
        if len(s.fences) < MAX_BARS:
            s.fences.append(f)

    for ev in read_events(path):
        seq, name, hart = ev["seq"], ev["event"], ev.get("hart")
        if seq > hi:
            if s.entry is None or s.entry.gone is not None:
                break
            if name == "tlb.gone":
                s.has_gone = True
                if hart == s.entry.hart and _same(ev, s.entry):
                    s.entry.gone = ev
                    break
            continue
        if name == "switch_in" and hart is not None:
            old = resident.pop(hart, None)
            if old is not None:
                old.end = seq
                band_done(old)
            resident[hart] = Band(hart, ev.get("dom"), ev.get("vcpu"), ev.get("vmid"), seq)
        elif name == "vmid.assign" and hart in resident:
            b = resident[hart]
            if b.dom == ev.get("dom") and b.vcpu == ev.get("vcpu"):
                b.vmid = ev.get("vmid")
        elif name == "switch_out" and hart in resident:
            b = resident.pop(hart)
            b.end = seq
            band_done(b)
        elif name == "fence.sent":
            inflight[(ev.get("id"), ev.get("dst"))] = FenceBar(
                ev.get("id"), ev.get("src"), ev.get("dst"), ev.get("vmid"), ev.get("gfns"), seq
            )
        elif name == "fence.taken":
            f = inflight.get((ev.get("id"), ev.get("dst")))
            if f is not None:
                f.taken = seq
        elif name == "fence.acked":
            f = inflight.pop((ev.get("id"), ev.get("dst")), None)
            if f is not None:
                f.acked = seq
                fence_done(f)
        elif name == "tlb.fill":
            wanted = fill_at is not None and (seq, hart) == fill_at[:2] and fill_at[2] in (None, ev.get("mfn"))
            if wanted and s.entry is None:
                s.entry = Entry(hart, ev)  # type: ignore[arg-type]
        elif name == "tlb.gone":
            s.has_gone = True
            if s.entry is not None and s.entry.gone is None and hart == s.entry.hart and _same(ev, s.entry):
                s.entry.gone = ev
        if seq < lo or name in ("run.start", "run.end"):
            continue
        if filters is not None and not filters.match(ev):
            continue
        s.total += 1
        entry_ev = s.entry is not None and (ev is s.entry.fill or ev is s.entry.gone)
        (keys if name in KEY_EVENTS or entry_ev or _about(ev, mfn) else others).add(ev)
    if fill_at is not None and s.entry is None and fill_at[2] is not None and fill_at[0] <= hi:
        return _scan(path, lo, hi, filters, (fill_at[0], fill_at[1], None), mfn)  # no fill of that frame: any
    for b in resident.values():
        band_done(b)
    for f in inflight.values():
        if f.sent <= hi:
            fence_done(f)
    s.bands.sort(key=lambda b: (b.start, b.hart))
    s.fences.sort(key=lambda f: (f.sent, f.dst))
    key_dots = keys.take(MAX_EVENTS // 2)
    s.dots = sorted(key_dots + others.take(MAX_EVENTS - len(key_dots)), key=lambda e: e["seq"])
    return s


def _same(gone: dict[str, Any], entry: Entry) -> bool:
    return tuple(gone.get(k) for k in ("leaf", "vmid", "level", "gfn", "mfn")) == entry.key


def _window(
    chain: list[dict[str, Any]], v: dict[str, Any] | None, last: int, filters: logview.Filters | None
) -> tuple[int, int, list[str]]:
    notes: list[str] = []
    if chain:
        first, end = chain[0]["seq"], max(chain[-1]["seq"], v["seq"] if v else 0)
        margin = max(end - first, 1) // 20 + 1
        lo, hi = first - margin, end + margin
    else:
        lo, hi = 0, last
    want_lo = filters.seq_from if filters is not None else None
    want_hi = filters.seq_to if filters is not None else None
    if want_lo is not None:
        lo = want_lo
        if want_hi is None and hi <= lo:
            hi = last
    if want_hi is not None:
        hi = want_hi
        if want_lo is None and lo >= hi:
            lo = 0
    if want_lo is not None and want_hi is not None and want_hi < want_lo:
        notes.append(f"--to {want_hi:,} is before --from {want_lo:,}: nothing in this window")
    lo = max(lo, 0)
    if hi > last:
        if want_hi is not None:
            notes.append(f"the log ends at step {last:,}")
        hi = last
    if lo >= last and last > 0:
        notes.append(f"the log ends at step {last:,}: nothing in this window")
    return lo, max(hi, lo + 1), notes


def _ticks(lo: int, hi: int) -> list[int]:
    raw = (hi - lo) / 8
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    step = max(int(step), 1)
    first = -(-lo // step) * step
    return list(range(first, hi + 1, step))


@dataclass
class _Ctx:
    """What both views of the page draw from."""

    scan: Scan
    chain: list[dict[str, Any]]
    v: dict[str, Any] | None
    fill: dict[str, Any] | None
    lanes: list[int | None]


def _heights(lanes: list[int | None]) -> list[int]:
    return [LANE if hart is not None else LANE_DRIVER for hart in lanes]


def _draw(vid: str, lo: int, hi: int, ctx: _Ctx) -> str:
    """One timeline of steps ``lo``..``hi`` as an SVG element with id ``vid``."""
    scan, chain, v, lanes = ctx.scan, ctx.chain, ctx.v, ctx.lanes
    heights = _heights(lanes)
    tops = [TOP + sum(heights[:i]) for i in range(len(lanes))]
    bottom = TOP + sum(heights)
    height = bottom + 6
    plot = WIDTH - RIGHT - LEFT

    def x(seq: int) -> float:
        return LEFT + (min(max(seq, lo), hi) - lo) * plot / (hi - lo)

    def index(hart: Any) -> int:
        return lanes.index(hart) if hart in lanes else len(lanes) - 1

    def top(hart: Any) -> float:
        return tops[index(hart)]

    def rows(hart: Any, *offsets: int) -> list[float]:  # the label rows that fit in the lane
        return [top(hart) + o for o in offsets if o < heights[index(hart)] - 4] or [top(hart) + offsets[0]]

    def lane_id(hart: Any) -> str:
        return str(hart) if hart in lanes and hart is not None else "driver"

    svg: list[str] = []
    labels: list[str] = []

    def label(
        text: str,
        cls: str,
        ax: float,
        lane: str,
        ys: list[float],
        p: int,
        anchor: str = "start",
        bounds: tuple[float, float] | None = None,
        gap: float | None = None,
    ) -> str:
        """A label to be placed in the browser: at the first of ``ys`` where it overlaps no other label of
        its lane (within ``bounds`` across, if given), else hidden and shown on hover over what names it.
        A label ``gap`` to the right of what it names goes as far to its left where the right is too short."""
        lid = f"{vid}-l{len(labels) + 1}"
        more = "" if anchor == "start" else f' text-anchor="{anchor}"'
        if gap is not None:
            more += f' data-gap="{gap:g}"'
        if bounds is not None:
            more += f' data-min="{bounds[0]:.1f}" data-max="{bounds[1]:.1f}"'
        labels.append(
            f'<text id="{lid}" class="lbl {cls}" x="{ax:.1f}" y="{ys[0]:.1f}" data-lane="{lane}" '
            f'data-ys="{" ".join(f"{y:.1f}" for y in ys)}" data-p="{p}"{more}>{html.escape(text)}</text>'
        )
        return lid

    # lanes and the axis
    for i, hart in enumerate(lanes):
        name = "driver" if hart is None else f"hart {hart}"
        svg.append(
            f'<g class="lane{" odd" if i % 2 else ""}" data-hart="{"" if hart is None else hart}">'
            f'<rect x="0" y="{tops[i]}" width="{WIDTH}" height="{heights[i]}"></rect>'
            f'<text x="8" y="{tops[i] + ROW_DOTS + 4}">{name}</text></g>'
        )
    for t in _ticks(lo, hi):
        svg.append(f'<line class="grid" x1="{x(t):.1f}" y1="{TOP - 4}" x2="{x(t):.1f}" y2="{bottom}"></line>')
        label(f"{t:,}", "tick", x(t), "axis", [12], 6, anchor="middle")
    label(f"step {lo:,}", "tick edge", LEFT, "axis", [12], 0)
    label(f"step {hi:,}", "tick edge", WIDTH - RIGHT, "axis", [12], 0, anchor="end")

    # vCPU residency: a band behind the lane
    doms = sorted({b.dom for b in scan.bands if isinstance(b.dom, int)})
    for b in scan.bands:
        end = b.end if b.end is not None else hi
        if b.hart not in lanes or end < lo or b.start > hi:
            continue
        x0, x1 = x(b.start), x(end)
        y0 = top(b.hart)
        colour = BAND_COLOURS[doms.index(b.dom) % len(BAND_COLOURS)] if b.dom in doms else "#e5e7eb"
        what = f"dom{b.dom} vcpu{b.vcpu}" + (f" VMID {b.vmid}" if b.vmid else "")
        info = {
            "resident": what,
            "hart": b.hart,
            "switch_in": b.start,
            "switch_out": b.end if b.end is not None else f"after step {hi:,} (still resident)",
        }
        lid = label(
            what, "band-label", x0 + 3, lane_id(b.hart), rows(b.hart, ROW_BAND, ROW_CHAIN), 4, bounds=(x0 + 2, x1 - 1)
        )
        svg.append(
            f'<rect class="band" x="{x0:.1f}" y="{y0 + 1}" width="{max(x1 - x0, 0.8):.1f}" '
            f'height="{heights[index(b.hart)] - 2}" fill="{colour}" data-hart="{b.hart}" data-dom="{b.dom}" '
            f'data-vcpu="{b.vcpu}" data-from="{b.start}" data-to="{"" if b.end is None else b.end}" '
            f'data-lbl="{lid}" data-ev="{_attr(info)}"></rect>'
        )

    # the free and the reuse, across all lanes
    for c in chain:
        if c["kind"] not in ("free", "reuse") or not lo <= c["seq"] <= hi:
            continue
        colour = PHASES[c["kind"]][0]
        mx = x(c["seq"])
        what = f"{c['kind']} mfn {_hex(v.get('mfn'))}" if v else c["kind"]
        lid = label(f"{what} @ {c['seq']:,}", "marker-label", mx + 3, "axis", [26, 39], 1, gap=3)
        svg.append(
            f'<line class="marker" data-kind="{c["kind"]}" data-seq="{c["seq"]}" x1="{mx:.1f}" y1="16" '
            f'x2="{mx:.1f}" y2="{bottom}" stroke="{colour}"></line>'
            f'<rect x="{mx - 3:.1f}" y="16" width="6" height="{bottom - 16}" fill="transparent" data-lbl="{lid}" '
            f'data-ev="{_attr({"step": c["seq"], "kind": c["kind"], "text": c["text"]})}"></rect>'
        )

    # the stale entry, from its fill to its removal
    life = _life(ctx, hi)
    if life is not None and life["start"] <= hi and life["shown_end"] >= lo:
        hart, start, end, gone = life["hart"], life["start"], life["end"], life["gone"]
        y0 = top(hart) + ROW_STALE
        info_base = {k: life[k] for k in ("stale entry", "hart", "filled", "removed", "by", "fence", "window")}
        text = f"stale entry {life['stale entry']}: " + (f"{start:,}..{end:,}" if gone is not None else life["fate"])
        lid = label(text, "stale-label", x(start), lane_id(hart), rows(hart, ROW_LABEL, ROW_CHAIN, ROW_BAND), 2, gap=0)
        svg.append(
            f'<g class="stale" data-hart="{hart}" data-from="{start}" data-to="{end}" '
            f'data-gone="{"1" if gone is not None else ""}">'
        )
        cuts = life["cuts"]
        for (a, kind), nxt in zip(cuts, [*cuts[1:], (life["shown_end"], "")], strict=True):
            b = nxt[0]
            if b < lo or a > hi:
                continue
            x0, x1 = x(a), x(b)
            info = dict(info_base, phase=PHASES[kind][1], steps=f"{a:,}..{b:,}")
            svg.append(
                f'<rect class="stale-seg" data-phase="{kind}" x="{x0:.1f}" y="{y0}" width="{max(x1 - x0, 1.5):.1f}" '
                f'height="9" fill="{PHASES[kind][0]}" data-lbl="{lid}" data-ev="{_attr(info)}"></rect>'
            )
        if gone is not None and lo <= gone["seq"] <= hi:
            gx = x(gone["seq"])
            svg.append(f'<line class="stale-end" x1="{gx:.1f}" y1="{y0 - 3}" x2="{gx:.1f}" y2="{y0 + 12}"></line>')
        elif life["shown_end"] > hi or (gone is None and scan.has_gone):
            ex = x(hi)
            svg.append(
                f'<path class="stale-more" d="M{ex - 7:.1f},{y0 - 2} L{ex:.1f},{y0 + 4.5} L{ex - 7:.1f},{y0 + 11} Z" '
                'fill="#dc2626"></path>'
            )
        svg.append("</g>")

    # fences in flight, on the target's lane, in as many rows as overlap
    ends_of: dict[Any, list[float]] = {}
    for f in scan.fences:
        end = f.acked if f.acked is not None else hi
        if f.dst not in lanes or f.dst is None or end < lo or f.sent > hi:
            continue
        x0, x1 = x(f.sent), x(end)
        ends = ends_of.setdefault(f.dst, [])
        r = next((i for i, e in enumerate(ends) if e <= x0 - 1), None)
        if r is None:
            if len(ends) < FENCE_ROWS:
                ends.append(0.0)
                r = len(ends) - 1
            else:
                r = min(range(len(ends)), key=lambda i: ends[i])
        ends[r] = max(ends[r], x1 + 1.5)
        y0 = top(f.dst) + ROW_FENCE + 5 * r
        info = {
            "fence": f.id,
            "from hart": f.src,
            "to hart": f.dst,
            "vmid": f.vmid,
            "gfns": f.gfns,
            "sent": f.sent,
            "taken": f.taken,
            "acked": f.acked if f.acked is not None else f"not by step {hi:,} (in flight)",
        }
        lid = label(
            f"#{f.id} h{f.src}\u2192h{f.dst}", "fence-label", x0 + 2, lane_id(f.dst), rows(f.dst, ROW_LABEL), 3, gap=2
        )
        cls = "bar fence-bar" + (" fence-open" if f.acked is None else "")
        if f.src in lanes and f.src is not None and f.src != f.dst and lo <= f.sent:
            sy = top(f.src) + ROW_DOTS
            svg.append(
                f'<line class="fence-link" x1="{x0:.1f}" y1="{sy:.1f}" x2="{x0:.1f}" y2="{y0 + 1.5:.1f}"></line>'
            )
        svg.append(
            f'<rect class="{cls}" x="{x0:.1f}" y="{y0}" width="{max(x1 - x0, 2):.1f}" height="3" data-id="{f.id}" '
            f'data-src="{f.src}" data-dst="{f.dst}" data-from="{f.sent}" '
            f'data-to="{"" if f.acked is None else f.acked}" data-lbl="{lid}" data-ev="{_attr(info)}"></rect>'
        )

    # every event as a dot
    for ev in scan.dots:
        if not lo <= ev["seq"] <= hi:
            continue
        fields = {k: val for k, val in ev.items() if k not in ("log_level", "chain", "explanation")}
        svg.append(
            f'<circle class="ev" cx="{x(ev["seq"]):.1f}" cy="{top(ev.get("hart")) + ROW_DOTS}" r="3" '
            f'fill="{_colour(ev["event"])}" data-ev="{_attr(fields)}"></circle>'
        )

    # the causal chain
    in_window = [c for c in chain if lo <= c["seq"] <= hi]
    if in_window:
        points = " ".join(f"{x(c['seq']):.1f},{top(c.get('hart')) + ROW_DOTS:.1f}" for c in in_window)
        svg.append(f'<polyline class="chain-path" points="{points}"></polyline>')
    for k, c in enumerate(chain, 1):
        if not lo <= c["seq"] <= hi:
            continue
        cx, hart = x(c["seq"]), c.get("hart")
        lid = label(
            f"{k}. {c['kind']}",
            "chain-label",
            cx + 8,
            lane_id(hart),
            rows(hart, ROW_CHAIN, ROW_BAND, ROW_LABEL),
            1,
            gap=8,
        )
        data = {"step": c["seq"], "hart": hart, "kind": c["kind"], "text": c["text"]}
        svg.append(
            f'<circle class="chain" cx="{cx:.1f}" cy="{top(hart) + ROW_DOTS}" r="6" data-ev="{_attr(data)}" '
            f'data-kind="{html.escape(c["kind"])}" data-seq="{c["seq"]}" data-lbl="{lid}"></circle>'
        )
    svg.extend(labels)  # last: over everything
    body = "\n".join(svg)
    return (
        f'<svg id="{vid}" class="timeline" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'data-lo="{lo}" data-hi="{hi}" data-left="{LEFT}" data-right="{WIDTH - RIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg">\n{body}\n</svg>'
    )


def _life(ctx: _Ctx, hi: int) -> dict[str, Any] | None:
    """The stale entry's life: where it was cached, from when to when, and what happened meanwhile."""
    e, fill, v, scan = ctx.scan.entry, ctx.fill, ctx.v, ctx.scan
    if fill is None:
        return None
    start = e.fill["seq"] if e is not None else fill["seq"]
    gone = e.gone if e is not None else None
    end = gone["seq"] if gone is not None else (v["seq"] if v else hi)
    cuts = [(start, "cached")]
    for c in ctx.chain:
        if (
            c["kind"] in ("unmap", "free", "reuse")
            and start <= c["seq"] <= end
            and c["kind"] not in dict(cuts).values()
        ):
            cuts.append((c["seq"], c["kind"]))
    cuts.sort()
    ent = e.fill if e is not None else {}
    if gone is not None:
        by: Any = gone.get("by") or gone.get("why")
        fate = f"removed at step {gone['seq']:,}" + (" (after this window)" if gone["seq"] > hi else "")
    elif scan.has_gone:
        by, fate = None, "still cached at the end of the log"
    else:
        by, fate = None, "the log has no tlb.gone: drawn to the use"
    return {
        "hart": e.hart if e is not None else fill["hart"],
        "start": start,
        "end": end,
        "gone": gone,
        "shown_end": end if gone is not None or not scan.has_gone else hi + 1,
        "cuts": cuts,
        "fate": fate,
        "stale entry": (
            f"VMID {ent.get('vmid')} L{ent.get('level')} gfn {_hex(ent.get('gfn'))} -> "
            f"{'' if ent.get('leaf', True) else 'table '}mfn {_hex(ent.get('mfn'))}"
            if e is not None
            else "(the log has no tlb.fill for it)"
        ),
        "filled": start,
        "removed": gone["seq"] if gone is not None else None,
        "by": by,
        "fence": gone.get("fence") if gone is not None else None,
        "window": gone.get("window") if gone is not None else None,
    }


def _race(ctx: _Ctx, lo: int, hi: int) -> tuple[int, int] | None:
    """The steps from the unlink to the use or removal, if they are a small part of the window: drawn again."""
    rest = [c["seq"] for c in ctx.chain if c["kind"] != "fill" and lo <= c["seq"] <= hi]
    if ctx.fill is None or not rest:
        return None
    a, b = min(rest), max(rest)
    gone = ctx.scan.entry.gone if ctx.scan.entry is not None else None
    if gone is not None and gone["seq"] <= hi:
        b = max(b, gone["seq"])
    margin = max((b - a) // 8, 5)
    a, b = max(lo, a - margin), min(hi, b + margin)
    return (a, b) if (b - a) * 4 <= hi - lo else None


def write_html(
    path: str | Path, out: str | Path, violation: int | None = None, filters: logview.Filters | None = None
) -> Path:
    summary = logview.summarize(path)
    cfg = summary.start.get("config", {})
    harts = max(int(cfg.get("pcpus", 1) or 1), 1)
    chain: list[dict[str, Any]] = []
    v: dict[str, Any] | None = None
    if violation is None and summary.violations:
        violation = summary.violations[0].get("n")
    if violation is not None:
        v = next((e for e in summary.violations if e.get("n") == violation), None)
        if v is None:
            v = logview.find_violation(path, violation)
        chain = list(v.get("chain") or [])
        if not chain:
            chain = [{"seq": v["seq"], "hart": v.get("hart"), "kind": "use", "text": v.get("headline", "")}]
    lo, hi, notes = _window(chain, v, summary.last_seq, filters)
    fill = next((c for c in chain if c["kind"] == "fill" and c.get("hart") is not None), None)
    fill_at = (fill["seq"], fill["hart"], v.get("mfn") if v else None) if fill else None
    scan = _scan(path, lo, hi, filters, fill_at, v.get("mfn") if v else None)
    ctx = _Ctx(scan, chain, v, fill, [*range(harts), None])

    views = [_draw("lanes", lo, hi, ctx)]
    race = _race(ctx, lo, hi)
    if race is not None:
        views.append(
            f"<h2>the race, zoomed in: steps {race[0]:,}..{race[1]:,}</h2>\n" + _draw("race", race[0], race[1], ctx)
        )

    run_name = f"{cfg.get('workload')} seed {cfg.get('seed')}"
    title = f"violation {v['n']}: {logview.violation_class(v)}" if v else run_name
    shown = len(scan.dots)
    meta = html.escape(
        f"{cfg.get('workload')}  seed {cfg.get('seed')}  profile {cfg.get('profile')}  strategy "
        f"{cfg.get('strategy')}  bugs {', '.join(cfg.get('bugs', [])) or 'none'}  |  steps {lo:,}..{hi:,}, "
        f"{shown:,} of {scan.total:,} events shown"
        + "".join(f"  |  {n}" for n in notes)
        + (f"  |  {v.get('headline')}" if v else "")
    )
    notices = []
    if shown < scan.total:
        notices.append(
            f'<div class="notice" id="capped" data-shown="{shown}" data-total="{scan.total}">showing {shown:,} of '
            f"{scan.total:,} events; use --from/--to for a narrower window to see them all (the causal chain, "
            "fences, vCPU switches and the stale entry's frame are kept, the other events thinned evenly)</div>"
        )
    for what, drawn, total in (
        ("fences in flight", len(scan.fences), scan.fences_total),
        ("vCPU residencies", len(scan.bands), scan.bands_total),
    ):
        if drawn < total:
            notices.append(
                f'<div class="notice">showing the first {drawn:,} of {total:,} {what}; use --from/--to</div>'
            )
    missing = (
        f'<div class="missing"><b>missing or late:</b> {html.escape(v["missing"])}</div>'
        if v and v.get("missing")
        else ""
    )
    legend = "".join(f'<span><i style="background:{c}"></i>{html.escape(k)}</span>' for k, c in COLOURS.items())
    legend += '<span><i style="background:#fff;border:2px solid rgb(220,38,38)"></i>causal chain</span>'
    legend += '<span><i class="sq" style="background:#dbeafe;border:1px solid #9ca3af"></i>vCPU resident</span>'
    legend += '<span><i class="sq" style="background:#2563eb;height:3px"></i>fence sent \u2192 acked</span>'
    legend += "".join(
        f'<span><i class="sq" style="background:{c}"></i>stale entry {html.escape(t)}</span>'
        for c, t in PHASES.values()
    )
    rows_html = "".join(
        f"<tr><td>{k}</td><td>{c['seq']:,}</td><td>{c.get('hart')}</td><td>{html.escape(c['kind'])}</td>"
        f"<td>{html.escape(c['text'])}</td></tr>"
        for k, c in enumerate(chain, 1)
    )
    table = (
        f'<table id="chain"><tr><th>#</th><th>step</th><th>hart</th><th>kind</th><th>event</th></tr>{rows_html}</table>'
        if chain
        else ""
    )
    page = PAGE.format(
        title=html.escape(title),
        meta=meta,
        missing=missing,
        notices="\n".join(notices),
        legend=legend,
        views="\n".join(views),
        table=table,
    )
    target = Path(out)
    target.write_text(page, encoding="utf-8")
    return target
