"""The command line: run, list, bench.

Exit codes: 0 clean, 1 violation found, 2 bad input (one line on stderr, never
a traceback).  Human output leads with the verdict's numbers and ends with the
command that replays the run; ``--json`` prints one deterministic object.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

import orjson

from simulator import __version__

EXIT_CLEAN, EXIT_VIOLATION, EXIT_BAD_INPUT = 0, 1, 2


class CliError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(message)


def _positive(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return v


def _param(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="p2msim", description="Hunt stale-translation races in Xen's RISC-V P2M code.")
    p.add_argument("--version", action="version", version=f"p2msim {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run one seeded race hunt on a workload")
    r.add_argument("workload", help="a built-in workload name (see `p2msim list`) or a path to a .py file")
    r.add_argument("--seed", type=_positive, default=0)
    r.add_argument("--strategy", default="random", help="random or pct")
    r.add_argument("--pct-depth", type=_positive, default=3, help="bug depth for --strategy pct")
    r.add_argument("--pcpus", type=_positive, default=4, help="harts (physical CPUs)")
    r.add_argument("--profile", default="fixed", help="which version of Xen's bookkeeping runs")
    r.add_argument("--bug", action="append", default=[], help="inject a catalogued bug (repeatable)")
    r.add_argument("--steps", type=_positive, default=400_000, help="step budget")
    r.add_argument("--mode", default="sv39x4", help="G-stage mode: sv39x4, sv48x4 or sv57x4")
    r.add_argument("--vmid-bits", type=_positive, default=7)
    r.add_argument("--tlb-leaf", type=_positive, default=64, help="leaf TLB entries per hart")
    r.add_argument("--tlb-nonleaf", type=_positive, default=16, help="non-leaf (walk cache) entries per hart")
    r.add_argument("--frames", type=_positive, default=16384, help="host memory in 4 KiB frames")
    r.add_argument("-p", "--param", type=_param, action="append", default=[], help="workload parameter key=value")
    r.add_argument("--strict", action="store_true", help="stale use of a freed (not yet reused) frame is a violation")
    r.add_argument("--log", help="write the JSON-lines event log here")
    r.add_argument("--log-level", default="debug", help="debug (every event), info or error")
    r.add_argument("--backend", default="trio", help="trio or asyncio")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")

    sub.add_parser("list", help="list workloads, profiles, bugs and strategies")

    b = sub.add_parser("bench", help="measure the hot path against a dict-lookup baseline")
    b.add_argument("--json", action="store_true")
    b.add_argument("--backend", default="trio")
    b.add_argument("--steps", type=_positive, default=600_000)
    b.add_argument("--repeat", type=_positive, default=3)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "list":
            return cmd_list()
        if args.command == "bench":
            return cmd_bench(args)
        raise CliError(f"unknown command {args.command}")
    except CliError as exc:
        print(f"p2msim: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("p2msim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`p2msim run ... | head`): not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CLEAN


def cmd_run(args: argparse.Namespace) -> int:
    from simulator.engine.scenario import WorkloadError
    from simulator.engine.simulation import Config, ConfigError, run

    cfg = Config(
        workload=args.workload,
        seed=args.seed,
        strategy=args.strategy,
        pct_depth=args.pct_depth,
        pcpus=args.pcpus,
        profile=args.profile,
        bugs=tuple(args.bug),
        steps=args.steps,
        mode=args.mode,
        vmid_bits=args.vmid_bits,
        tlb_leaf=args.tlb_leaf,
        tlb_nonleaf=args.tlb_nonleaf,
        frames=args.frames,
        backend=args.backend,
        log=args.log,
        log_level=args.log_level,
        strict=args.strict,
        params=tuple(args.param),
    )
    try:
        result = run(cfg)
    except (ConfigError, WorkloadError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        sys.stdout.write(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(result))
    return EXIT_VIOLATION if result.violations else EXIT_CLEAN


def render(result) -> str:  # type: ignore[no-untyped-def]
    c = result.config
    s = result.stats
    hit_rate = 100.0 * s["tlb_hits"] / max(1, s["accesses"])
    out = [
        f"p2msim {__version__}  workload {c.workload}  profile {c.profile}  strategy {c.strategy}  seed {c.seed}"
        + (f"  bugs {', '.join(c.bugs)}" if c.bugs else ""),
        f"{c.pcpus} harts, {c.mode.capitalize().replace('x4', 'x4')}, TLB {c.tlb_leaf} leaf + {c.tlb_nonleaf} "
        f"non-leaf entries/hart, VMID {c.vmid_bits} bits",
        "",
        f"  steps       {s['steps']:>10,}   accesses    {s['accesses']:>10,}   TLB hit rate   {hit_rate:5.1f}%",
        f"  walks       {s['walks']:>10,}   fences sent {s['fences_sent']:>10,}   fences acked {s['fences_acked']:>7,}",
        f"  frames freed{s['frames_freed']:>10,}   frames reused{s['frames_reused']:>9,}   "
        f"stale (benign) {s['stale_benign']:>5,}",
        "",
    ]
    if result.stop_reason == "budget":
        out.append(f"note: the step budget ({c.steps:,}) ended the run before the workload finished")
    if result.violations:
        n = len(result.violations)
        more = f" ({result.violation_count:,} stale uses in all)" if result.violation_count > n else ""
        out.append(f"VIOLATIONS: {n} distinct{more}")
        for i, v in enumerate(result.violations, 1):
            out.append("")
            out.append(f"VIOLATION {i} of {n}: {v.explain()}")
    else:
        warn = f", {result.warning_count} warning(s)" if result.warning_count else ", no warning"
        done = (
            f" ({len(result.destroyed)} domains destroyed, nothing left behind)" if result.stop_reason == "done" else ""
        )
        out.append(f"CLEAN: no violation{warn}, all invariants held{done}")
    if result.warnings:
        out.append("")
        out.append(f"WARNINGS: {result.warning_count} stale use(s) of freed, not yet reused frames (first shown):")
        out.append(f"  {result.warnings[0]}")
    out.append("")
    out.append(f"replay: {result.replay_command}")
    if result.violations and not c.log:
        out.append(f"log:    {result.replay_command} --log run.jsonl")
    return "\n".join(out)


def cmd_list() -> int:
    from rich.console import Console
    from rich.table import Table

    from simulator.engine.bugs import BUGS
    from simulator.engine.simulation import builtin_workloads
    from simulator.engine.strategies import STRATEGIES
    from simulator.xen.profiles import PROFILES

    console = Console(width=120)
    for title, rows in (
        ("workloads", [(n, m.DESCRIPTION) for n, m in builtin_workloads().items()]),
        ("profiles", [(n, p.description) for n, p in PROFILES.items()]),
        ("bugs", [(n, b.description) for n, b in BUGS.items()]),
        ("strategies", list(STRATEGIES.items())),
    ):
        t = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
        t.add_column(style="bold", no_wrap=True)
        t.add_column()
        for name, desc in rows:
            t.add_row(name, desc)
        console.print(t)
        console.print()
    return EXIT_CLEAN


def cmd_bench(args: argparse.Namespace) -> int:
    from simulator.engine.bench import bench

    if args.backend not in ("trio", "asyncio"):
        raise CliError(f"unknown backend {args.backend!r} (trio or asyncio)")
    r = bench(args.backend, args.steps, args.repeat)
    if args.json:
        print(orjson.dumps(r).decode())
        return EXIT_CLEAN
    print(f"p2msim {__version__} bench ({r['backend']}, median of {r['repeat']})")
    print(
        f"  accesses_per_s          {r['accesses_per_s']:>12,}   "
        f"(TLB hit rate {100 * r['tlb_hit_rate']:.2f}%, oracle on, log off)"
    )
    print(f"  switches_per_s          {r['switches_per_s']:>12,}")
    print(f"  baseline_lookups_per_s  {r['baseline_lookups_per_s']:>12,}   (plain dict lookups, same process)")
    verdict = "within" if r["baseline_ratio"] <= r["target_ratio"] else "OVER"
    print(f"  baseline / accesses     {r['baseline_ratio']:>12}   ({verdict} the target of {r['target_ratio']})")
    return EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(main())
