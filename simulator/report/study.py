"""The table-freeing study's report: Markdown, JSON and PNG plots (matplotlib, an optional extra).

Every number in the Markdown comes from the study's JSON, which the same
directory holds; the plots are drawn from it too.  Without matplotlib the
report says so in place of each plot and nothing else changes.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from simulator.hunt.study import TIE, answer, cheaper, reload
from simulator.xen.profiles import TABLE_FREE

COLUMNS = (
    ("fences", "remote fences"),
    ("duration", "hypercall (cycles)"),
    ("flushing", "of it flushing"),
    ("lock_hold_max", "p2m lock held, max"),
    ("guest_stall", "guest stall"),
    ("pool_least_free", "pool free, least"),
    ("failed", "op failed"),
    ("violations", "violations"),
)


def _num(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() or abs(v) >= 100 else f"{v:,.1f}"


def _table(cells: list[dict[str, Any]], first: str) -> list[str]:
    head = f"| case | {first + ' | ' if first != 'case' else ''}strategy | " + " | ".join(t for _k, t in COLUMNS) + " |"
    out = [head, "|" + "---|" * (len(COLUMNS) + (2 if first == "case" else 3))]
    for c in cells:
        row = [_case(c), *([str(c[first])] if first != "case" else []), c["strategy"]]
        row += [_num(c[k]) for k, _t in COLUMNS]
        out.append("| " + " | ".join(row) + " |")
    return out


def _case(c: dict[str, Any]) -> str:
    return f"{c['op']} {c['mib']} MiB {c['mapping']}"


def order(names: list[str], values: dict[str, Any]) -> str:
    """'a = b < c': the names in order of their values, ties (within TIE) shown as ties."""
    out = names[0] if names else ""
    for prev, name in itertools.pairwise(names):
        a, b = values.get(prev), values.get(name)
        out += (" < " if a is not None and b is not None and cheaper(a, b) else " = ") + name
    return out


def markdown(body: dict[str, Any], plots: dict[str, str], command: str) -> str:
    f = body["findings"]
    cells = body["cells"]
    one = [c for c in cells if c["vcpus"] == 1]
    main = [c for c in one if c["harts"] == 4 and c["pool"] == "tight" and c["fence_scale"] == 1.0]
    out = [
        "# Defer the free of the page table to avoid the flush?",
        "",
        f"The seed patch's open question (`p2m_free_subtree`), answered by `{command}` "
        f"(grid `{body['grid']}`; regenerate with that command).",
        "",
        "## Answer",
        "",
        answer(body),
        "",
        "## Strategies",
        "",
        "- `flush-per-table`: the tree: `p2m_tlb_flush_sync` before each `p2m_free_table`.",
        "- `gather`: unlinked tables wait on `p2m->deferred_tables`; `p2m_write_unlock` flushes once and frees "
        "them (and a pool that runs dry flushes early and frees them, as `mmu_gather` does).",
        "- `pool-stamp`: tables go to the pool at once with the TLB flush clock's stamp; `paging_alloc_page` "
        "fences the harts that have not flushed since, only when it hands one out again.",
        "- `deferred-flush-pool-free`: the unsafe control: tables to the pool with no flush; the unlock's comes later.",
        "",
        "## Safety: the race hunts",
        "",
        "| strategy | hunts | failing | violations | classes | first failing run |",
        "|---|---|---|---|---|---|",
    ]
    for s in TABLE_FREE:
        v = body["safety"][s]
        first = f"`{v['first']}`" if v["first"] else "-"
        out.append(
            f"| {s} | {v['runs']} ({len(v['workloads'])} workloads x {v['seeds']} seeds) | {v['failing']} | "
            f"{v['violations']} | {', '.join(v['classes']) or '-'} | {first} |"
        )
    out += ["", "## Cost against guest size (4 harts, tight pool)", ""]
    for key in ("fences", "duration"):
        out.append(plots.get(key, ""))
        out.append("")
    cross = {k: v for k, v in f["crossovers"].items() if v}
    if cross:
        out.append(
            "Crossovers (duration of a decrease_reservation, 4K pages): "
            + "; ".join(f"{k} at {', '.join(f'{x:g} MiB' for x in v)}" for k, v in cross.items())
            + "."
        )
    else:
        out.append(
            "No crossover in the range: at every size the strategies' durations keep their order "
            f"({order(f['ranking'], {s: f['duration'][s].get(f['largest_mib']) for s in f['ranking']})} at "
            f"{f['largest_mib']} MiB)."
        )
    out.append("")
    if f["teardown_same"]:
        out.append(
            "A full teardown costs the same fences under every strategy: the ARM-style teardown "
            "(`p2m_clear_root_pages`, one flush, then `p2m_teardown`) frees no table through `p2m_free_subtree`."
        )
        out.append("")
    out += _table(
        sorted(main, key=lambda c: (c["op"], c["mapping"], c["mib"], list(TABLE_FREE).index(c["strategy"]))), "case"
    )
    out += ["", "## Harts (4K pages, tight pool)", ""]
    side = [c for c in one if c["pool"] == "tight" and c["fence_scale"] == 1.0 and c["harts"] != 4]
    side += [c for c in main if c["mib"] == min((x["mib"] for x in side), default=-1) and c["mapping"] != "2M"
             and c["op"] in {x["op"] for x in side}]  # fmt: skip
    out += _table(sorted(side, key=lambda c: (c["op"], c["harts"], list(TABLE_FREE).index(c["strategy"]))), "harts")
    out += ["", "## Pool size (4 harts)", ""]
    pools = [c for c in one if c["pool"] == "ample"]
    ample_cases = {(c["op"], c["mib"]) for c in pools}
    pools += [c for c in main if (c["op"], c["mib"]) in ample_cases and c["mapping"] != "2M"]
    out += _table(sorted(pools, key=lambda c: (c["op"], c["pool"], list(TABLE_FREE).index(c["strategy"]))), "pool")
    fails = {s: n for s, n in f["tight_pool_failures"].items() if n}
    out.append("")
    out.append(
        "With a tight pool no strategy failed the split inside the same hypercall."
        if not fails
        else "With a tight pool the operation failed under: "
        + ", ".join(f"{s} ({n} runs)" for s, n in fails.items())
        + "."
    )
    shared = [c for c in cells if c["vcpus"] != 1]
    if shared:
        cases = {(c["op"], c["mib"]) for c in shared}
        shared += [c for c in main if (c["op"], c["mib"]) in cases and c["mapping"] != "2M"]
        out += ["", "## vCPUs per hart (4 harts, tight pool; above one they take turns on their hart)", ""]
        out += _table(
            sorted(shared, key=lambda c: (c["op"], c["vcpus"], list(TABLE_FREE).index(c["strategy"]))), "vcpus"
        )
    out += ["", "## Sensitivity: fence costs halved and doubled (decrease_reservation, 4K pages)", ""]
    for scale, v in f["sensitivity"].items():
        ranks = "; ".join(
            f"{m} MiB: {order(r, {s: v['durations'][s].get(m) for s in r})}" for m, r in v["ranking"].items()
        )
        out.append(f"- fences {scale}: {ranks}" + (" (the cheapest changes)" if v["best_changes"] else ""))
    out.append("")
    out.append(
        "The conclusion holds under both."
        if f["conclusion_holds"]
        else "The conclusion does NOT hold under every scaling: see above."
    )
    out += [
        "",
        "## Method",
        "",
        "Each cell is the `table-free` workload under `--strategy timed` (virtual cycles from "
        "`simulator/riscv/costs.toml`, each cost with its source), means over its seeds; `fences` are the remote "
        "fence requests the operation sent, `duration` its hypercall from call to return, `flushing` the part of it "
        "in flushes (call to last acknowledgement), `guest stall` the cycles incoming fences took from running "
        "vCPUs over the whole run, `pool free, least` the fewest free pool pages at any allocation during the "
        f"operation (-1: it allocated none).  Durations within {100 * TIE:g}% of each other are ties (IPI "
        "latencies are seeded draws).  The hunts are the untimed race hunts (random strategy) of the profiles.",
        "",
    ]
    return "\n".join(out)


def plots(body: dict[str, Any], where: Path) -> dict[str, str]:
    """PNG plots, by name -> the Markdown that shows it (or says why there is none)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        why = "(no plot: matplotlib is not installed; `pip install 'p2msim[study]'` draws it)"
        return {"fences": why, "duration": why}
    f = body["findings"]
    out = {}
    for key, ylabel in (("fences", "remote fences"), ("duration", "decrease_reservation, virtual cycles")):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        for i, (s, series) in enumerate(f[key].items()):
            if series:
                xs = sorted(series)
                ys = [series[m] for m in xs]
                # strategies that coincide stay visible: each its own marker and dash
                ax.plot(xs, ys, marker="os^x"[i % 4], linestyle=("-", "--", ":", "-.")[i % 4], label=s)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("guest size (MiB, 4K pages)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"decrease_reservation of half the guest: {key}")
        ax.legend()
        ax.grid(True, alpha=0.3)
        name = f"table-free-{key}.png"
        fig.tight_layout()
        fig.savefig(where / name, metadata={"Software": None})  # no version string: the same bytes each time
        plt.close(fig)
        out[key] = f"![{key} against guest size]({name})"
    return out


README_BEGIN, README_END = "<!-- study table-free: generated -->", "<!-- /study -->"


def readme_block(body: dict[str, Any], where: str) -> str:
    """The README's answer: the sentences, the decrease_reservation table by size, one plot (from ``where``)."""
    f = body["findings"]
    sizes = sorted({m for s in f["duration"].values() for m in s})
    head = "| strategy | " + " | ".join(f"{m:,} MiB: fences, cycles" for m in sizes) + " | hunts failing |"
    rows = [head, "|" + "---|" * (len(sizes) + 2)]
    for s in TABLE_FREE:
        d, n = f["duration"].get(s, {}), f["fences"].get(s, {})
        cells = [f"{_num(n.get(m, 0.0))}, {_num(d.get(m, 0.0))}" for m in sizes]
        v = body["safety"][s]
        rows.append(f"| {s} | " + " | ".join(cells) + f" | {v['failing']} of {v['runs']} |")
    return "\n".join(
        [
            README_BEGIN,
            answer(body),
            "",
            f"`decrease_reservation` of half a guest of 4K pages (from 2 MiB in), 4 harts, tight pool, means over "
            f"the seeds (`{body.get('command', 'p2msim study table-free')}`; the whole report: "
            f"[{where}/table-free.md]({where}/table-free.md)):",
            "",
            *rows,
            "",
            f"![remote fences against guest size]({where}/table-free-fences.png)",
            README_END,
        ]
    )


def write(body: dict[str, Any], where: Path, command: str) -> list[Path]:
    where.mkdir(parents=True, exist_ok=True)
    shown = plots(body, where)
    md = where / "table-free.md"
    md.write_text(markdown(body, shown, command))
    js = where / "table-free.json"
    js.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    return [md, js, *(where / f"table-free-{k}.png" for k in shown if shown[k].startswith("!"))]


def main(argv: list[str] | None = None) -> int:
    """``python3 -m simulator.report.study README.md docs/study/table-free.json [--check]``: the README's block."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python3 -m simulator.report.study")
    p.add_argument("readme")
    p.add_argument("study_json")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if the block would change")
    args = p.parse_args(argv)
    text = Path(args.readme).read_text()
    if README_BEGIN not in text or README_END not in text:
        print(f"{args.readme}: no {README_BEGIN} ... {README_END} block", file=sys.stderr)
        return 2
    a, rest = text.split(README_BEGIN, 1)
    _old, b = rest.split(README_END, 1)
    where = Path(args.study_json).parent.as_posix()
    new = a + readme_block(reload(args.study_json), where) + b
    if args.check:
        return 0 if new == text else 1
    Path(args.readme).write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
