"""`p2msim inspect --format html`: one self-contained page, one lane per hart.

Events sit along logical time in their hart's lane (the driver has its own);
a violation's causal chain is drawn larger, in red, joined in order; hovering
over any event shows its fields.  No network access: styles, script and the
SVG are all inline.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import orjson

from simulator.engine import logview
from simulator.engine.logread import read_events

MAX_EVENTS = 4000
WIDTH = 1400
LEFT = 110
LANE = 46
TOP = 30

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

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>p2msim: {title}</title>
<style>
body {{ font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #111827; }}
h1 {{ font-size: 17px; margin: 0 0 4px; }}
.meta {{ color: #4b5563; margin-bottom: 8px; }}
.missing {{ background: #fee2e2; border-left: 4px solid #dc2626; padding: 6px 10px; margin: 8px 0; }}
svg {{ border: 1px solid #e5e7eb; background: #fff; }}
.lane rect {{ fill: #f9fafb; }}
.lane:nth-child(odd) rect {{ fill: #f3f4f6; }}
.lane text {{ font-size: 12px; fill: #374151; }}
.ev {{ stroke: none; opacity: .75; cursor: pointer; }}
.ev:hover {{ opacity: 1; stroke: #000; stroke-width: 1px; }}
.chain {{ fill: #fff; stroke: rgb(220, 38, 38); stroke-width: 3px; opacity: 1; }}
.chain-path {{ fill: none; stroke: rgb(220, 38, 38); stroke-width: 1.5px; stroke-dasharray: 5 3; }}
.chain-label {{ font-size: 11px; fill: #991b1b; font-weight: 600; }}
#tip {{ position: fixed; display: none; background: #111827; color: #f9fafb; padding: 6px 8px;
        border-radius: 4px; font: 12px/1.35 ui-monospace, monospace; white-space: pre; pointer-events: none;
        max-width: 640px; z-index: 10; }}
table {{ border-collapse: collapse; margin-top: 12px; }}
td, th {{ padding: 2px 8px; text-align: left; border-bottom: 1px solid #e5e7eb; vertical-align: top; }}
.legend span {{ display: inline-block; margin-right: 14px; }}
.legend i {{ display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 4px; }}
</style></head>
<body>
<h1>{title}</h1>
<div class="meta">{meta}</div>
{missing}
<div class="legend">{legend}</div>
<svg id="lanes" width="{width}" height="{height}" viewBox="0 0 {width} {height}"
     xmlns="http://www.w3.org/2000/svg">
{svg}
</svg>
<div id="tip"></div>
{table}
<script>
(function () {{
  var tip = document.getElementById("tip");
  document.querySelectorAll("[data-ev]").forEach(function (el) {{
    el.addEventListener("mousemove", function (e) {{
      var ev = JSON.parse(el.getAttribute("data-ev"));
      tip.textContent = Object.keys(ev).map(function (k) {{
        return k + ": " + (typeof ev[k] === "object" ? JSON.stringify(ev[k]) : ev[k]);
      }}).join("\\n");
      tip.style.display = "block";
      tip.style.left = (e.clientX + 14) + "px";
      tip.style.top = (e.clientY + 14) + "px";
    }});
    el.addEventListener("mouseleave", function () {{ tip.style.display = "none"; }});
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


def write_html(
    path: str | Path, out: str | Path, violation: int | None = None, filters: logview.Filters | None = None
) -> Path:
    summary = logview.summarize(path)
    cfg = summary.start.get("config", {})
    harts = int(cfg.get("pcpus", 1))
    chain: list[dict[str, Any]] = []
    v: dict[str, Any] | None = None
    if violation is None and summary.violations:
        violation = summary.violations[0].get("n")
    if violation is not None:
        t = logview.violation_timeline(path, violation)
        v = t["violation"]
        chain = [e for e in t["timeline"] if e["chain"]]
    if chain:
        span = max(chain[-1]["seq"] - chain[0]["seq"], 1)
        lo, hi = chain[0]["seq"] - span // 20 - 1, chain[-1]["seq"] + span // 20 + 1
    else:
        lo, hi = 0, summary.last_seq
    if filters is not None:
        lo = filters.seq_from if filters.seq_from is not None else lo
        hi = filters.seq_to if filters.seq_to is not None else hi
    events: list[dict[str, Any]] = []
    for ev in read_events(path):
        if ev["seq"] > hi or len(events) >= MAX_EVENTS:
            break
        if ev["seq"] < lo or ev["event"] in ("run.start", "run.end"):
            continue
        if filters is not None and not filters.match(ev):
            continue
        events.append(ev)
    hi = max(hi, lo + 1)

    plot = WIDTH - LEFT - 20
    lanes = [*range(harts), None]
    height = TOP + LANE * len(lanes) + 30

    def x(seq: int) -> float:
        return LEFT + (seq - lo) * plot / (hi - lo)

    def y(hart: int | None) -> float:
        i = lanes.index(hart) if hart in lanes else len(lanes) - 1
        return TOP + LANE * i + LANE / 2

    svg: list[str] = []
    for i, hart in enumerate(lanes):
        label = "driver" if hart is None else f"hart {hart}"
        svg.append(
            f'<g class="lane" data-hart="{"" if hart is None else hart}"><rect x="0" y="{TOP + LANE * i}" '
            f'width="{WIDTH}" height="{LANE}"></rect><text x="8" y="{TOP + LANE * i + LANE / 2 + 4}">{label}</text></g>'
        )
    svg.append(f'<text x="{LEFT}" y="18" font-size="11" fill="#6b7280">step {lo:,}</text>')
    svg.append(f'<text x="{WIDTH - 20}" y="18" font-size="11" fill="#6b7280" text-anchor="end">step {hi:,}</text>')
    for ev in events:
        fields = {k: val for k, val in ev.items() if k not in ("log_level", "chain", "explanation")}
        data = html.escape(orjson.dumps(fields).decode(), quote=True)
        svg.append(
            f'<circle class="ev" cx="{x(ev["seq"]):.1f}" cy="{y(ev.get("hart")):.1f}" r="3.2" '
            f'fill="{_colour(ev["event"])}" data-ev="{data}"><title>{html.escape(ev["event"])} @ {ev["seq"]}</title>'
            "</circle>"
        )
    if chain:
        points = " ".join(f"{x(c['seq']):.1f},{y(c['hart']):.1f}" for c in chain)
        svg.append(f'<polyline class="chain-path" points="{points}"></polyline>')
        row, last_x = 0, -1e9
        for k, c in enumerate(chain, 1):
            data = html.escape(
                orjson.dumps({"step": c["seq"], "hart": c["hart"], "kind": c["kind"], "text": c["text"]}).decode(),
                quote=True,
            )
            cx, cy = x(c["seq"]), y(c["hart"])
            row = row + 1 if cx - last_x < 70 else 0  # stagger labels of events close in time
            last_x = cx
            svg.append(
                f'<circle class="chain" cx="{cx:.1f}" cy="{cy:.1f}" r="7" data-ev="{data}" data-kind="{c["kind"]}">'
                f"<title>{html.escape(c['text'])}</title></circle>"
            )
            svg.append(
                f'<text class="chain-label" x="{cx + 9:.1f}" y="{cy - 9 - 11 * (row % 3):.1f}">'
                f"{k}. {html.escape(c['kind'])}</text>"
            )

    title = f"violation {v['n']}: {v['cls']}" if v else f"{cfg.get('workload')} seed {cfg.get('seed')}"
    meta = html.escape(
        f"{cfg.get('workload')}  seed {cfg.get('seed')}  profile {cfg.get('profile')}  strategy "
        f"{cfg.get('strategy')}  bugs {', '.join(cfg.get('bugs', [])) or 'none'}  |  steps {lo:,}..{hi:,}, "
        f"{len(events):,} events shown" + (f"  |  {v.get('headline')}" if v else "")
    )
    missing = (
        f'<div class="missing"><b>missing or late:</b> {html.escape(v["missing"])}</div>'
        if v and v.get("missing")
        else ""
    )
    legend = "".join(f'<span><i style="background:{c}"></i>{html.escape(k)}</span>' for k, c in COLOURS.items())
    legend += '<span><i style="background:#fff;border:2px solid rgb(220,38,38)"></i>causal chain</span>'
    rows = "".join(
        f"<tr><td>{k}</td><td>{c['seq']:,}</td><td>{c['hart']}</td><td>{html.escape(c['kind'])}</td>"
        f"<td>{html.escape(c['text'])}</td></tr>"
        for k, c in enumerate(chain, 1)
    )
    table = (
        f'<table id="chain"><tr><th>#</th><th>step</th><th>hart</th><th>kind</th><th>event</th></tr>{rows}</table>'
        if chain
        else ""
    )
    page = PAGE.format(
        title=html.escape(title),
        meta=meta,
        missing=missing,
        legend=legend,
        width=WIDTH,
        height=height,
        svg="\n".join(svg),
        table=table,
    )
    target = Path(out)
    target.write_text(page, encoding="utf-8")
    return target
