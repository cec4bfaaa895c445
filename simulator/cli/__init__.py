"""The command line: run, list, bench.

Exit codes: 0 clean, 1 violation found, 2 bad input (one line on stderr, never
a traceback), 3 incomplete (the step budget ended the run: nothing was checked
at the end, so it is not clean).  Human output leads with the verdict's numbers and ends with the
command that replays the run; ``--json`` prints one deterministic object.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

from simulator import __version__
from simulator.cli.args import CliError, Parser, at_least_one, param, positive, seconds, shared_config, xen_tree_option

EXIT_CLEAN, EXIT_VIOLATION, EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_VACUOUS = 0, 1, 2, 3, 5
EXIT_NOTHING_TO_COMPARE = 4  # replay: the source recorded no digest or verdict to hold the replay to


class _PipeSafeStdout:
    """stdout for a reader that may go away (``p2msim run ... | head -1``): once the pipe closes, the rest
    of the output is dropped and the command goes on, so its exit code is still the verdict's."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.closed_pipe = False

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._close()
        return len(text)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._close()

    def _close(self) -> None:
        self.closed_pipe = True
        with contextlib.suppress(OSError, ValueError):  # the interpreter's flush at exit needs somewhere to go
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def build_parser() -> argparse.ArgumentParser:
    from simulator.cli.sweep import add_arguments as add_sweep_arguments
    from simulator.hunt.sweep import SEED_TIMEOUT

    p = Parser(prog="p2msim", description="Hunt stale-translation races in Xen's RISC-V P2M code.")
    p.add_argument("--version", action="version", version=f"p2msim {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    r = sub.add_parser("run", help="run one seeded race hunt on a workload")
    r.add_argument("workload", help="a built-in workload name (see `p2msim list`) or a path to a .py file")
    r.add_argument("--seed", type=positive, default=0)
    r.add_argument("--strategy", default="random", help="random, pct, or timed (virtual time: durations)")
    r.add_argument(
        "--costs",
        default="",
        metavar="FILE",
        help="a TOML cost table over the defaults (simulator/riscv/costs.toml), for --strategy timed",
    )
    r.add_argument("--pct-depth", type=positive, default=3, help="bug depth for --strategy pct")
    r.add_argument("--pcpus", type=positive, default=4, help="harts (physical CPUs)")
    r.add_argument("--profile", default="fixed", help="which version of Xen's bookkeeping runs")
    r.add_argument("--bug", action="append", default=[], help="inject a catalogued bug (repeatable)")
    r.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="FILE",
        help="a variant file: your change to the model, as register_variant(name, description, apply) (repeatable)",
    )
    r.add_argument(
        "--steps", type=positive, default=0, help="step budget (default: 25,000 x harts squared, at least 400,000)"
    )
    r.add_argument("--mode", default="sv39x4", help="G-stage mode: sv39x4, sv48x4 or sv57x4")
    r.add_argument("--vmid-bits", type=positive, default=7)
    r.add_argument("--tlb-leaf", type=positive, default=64, help="leaf TLB entries per hart")
    r.add_argument("--tlb-nonleaf", type=positive, default=16, help="non-leaf (walk cache) entries per hart")
    r.add_argument(
        "--tlb-negative",
        type=positive,
        default=0,
        help="negative entries per hart: invalid PTEs a faulting walk caches (default 0: none)",
    )
    r.add_argument(
        "--tlb-multi",
        action="store_true",
        help="the TLB may hold several entries for one address (a refill keeps the old one; a lookup uses any)",
    )
    r.add_argument("--frames", type=positive, default=16384, help="host memory in 4 KiB frames")
    r.add_argument(
        "--speculate",
        type=float,
        default=0.02,
        metavar="P",
        help="probability per hypervisor instruction boundary (and per guest quantum) of a speculative walk "
        "while hgatp is active (default 0.02; 0: off)",
    )
    r.add_argument(
        "--xen-opt",
        type=param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Xen boot option (repeatable): vmid=0 turns VMIDs off",
    )
    r.add_argument("--debug-build", action="store_true", help="CONFIG_DEBUG: a failed ASSERT() is a panic finding")
    xen_tree_option(r)
    r.add_argument(
        "--ad",
        default="svade",
        help="the machine's A/D scheme: svade (a clear A or D faults; Xen sets them) or svadu (the walk sets "
        "them in the PTE it read, so a stale walk writes)",
    )
    r.add_argument(
        "--svinval",
        default="",
        metavar="HARTS",
        help="harts with Svinval ('all' or IDs like 0,2): their remote fences run as SFENCE.W.INVAL, "
        "HINVAL.GVMA..., SFENCE.INVAL.IR",
    )
    r.add_argument("-p", "--param", type=param, action="append", default=[], help="workload parameter key=value")
    r.add_argument("--strict", action="store_true", help="stale use of a freed (not yet reused) frame is a violation")
    r.add_argument("--log", help="write the JSON-lines event log here")
    r.add_argument("--log-level", default="debug", help="debug (every event), info or error")
    r.add_argument("--backend", default="trio", help="trio or asyncio")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    r.add_argument(
        "--traceback", action="store_true", help="on an error in the workload or a variant, print its whole traceback"
    )

    ls = sub.add_parser("list", help="list workloads, profiles, bugs and strategies")
    ls.add_argument("workload", nargs="?", help="one workload: its parameters, with defaults and meanings")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.add_argument(
        "--functions", action="store_true", help="every C function the model mirrors: upstream, glue, or model"
    )

    i = sub.add_parser("inspect", help="summarise a log, or show a violation's causal chain as a timeline")
    i.add_argument("log", help="a JSON-lines log from `p2msim run --log`, or a schedule file (replayed first)")
    i.add_argument("--violation", type=positive, metavar="N", help="the timeline of violation N")
    i.add_argument("--mfn", type=positive, help="only events about this host frame")
    i.add_argument("--gfn", type=positive, help="only events about this guest frame (with --dom)")
    i.add_argument("--dom", type=positive)
    i.add_argument("--hart", type=positive)
    i.add_argument("--event", help="only events whose name starts with this")
    i.add_argument("--from", dest="seq_from", type=positive, metavar="SEQ")
    i.add_argument("--to", dest="seq_to", type=positive, metavar="SEQ")
    i.add_argument("--json", action="store_true")
    i.add_argument(
        "--check",
        action="store_true",
        help="validate LOG (or a schedule) against its published JSON Schema and the log's own rules (first line "
        "run.start, last run.end, run.error or run.interrupted, seq never decreasing); exit 1 if not valid",
    )
    i.add_argument(
        "--format",
        choices=("text", "html", "perfetto"),
        default="text",
        help="text (default), html (a page), or perfetto (Chrome/Perfetto trace-event JSON: ui.perfetto.dev)",
    )
    i.add_argument(
        "-o", "--out", help="where --format html or perfetto writes (default: LOG.html, LOG.trace.json; - for stdout)"
    )
    i.add_argument(
        "--no-tlb", action="store_true", help="perfetto: leave out the TLB entries' lives (most of a trace's size)"
    )

    rp = sub.add_parser("replay", help="re-execute a logged run or a schedule and confirm the same verdict")
    rp.add_argument("source", help="a log or a schedule file")
    rp.add_argument("--backend", default=None)
    rp.add_argument("--log", help="log the replay here")
    rp.add_argument("--json", action="store_true")
    rp.add_argument("--traceback", action="store_true", help="on an error in the workload, print its whole traceback")

    sh = sub.add_parser("shrink", help="minimise a failing run to the smallest schedule that fails the same way")
    sh.add_argument("source", help="a log or a schedule file of a failing run")
    sh.add_argument("-o", "--out", help="where to write the minimal schedule (default: SOURCE.shrunk.json)")
    sh.add_argument("--max-tests", type=positive, default=400)
    sh.add_argument("--max-seconds", type=positive, default=180)
    sh.add_argument("--json", action="store_true")

    m = sub.add_parser("matrix", help="every bug against the workloads that can expose it, and the clean profiles")
    m.add_argument("--seeds", type=positive, default=50, help="seeds per bug, workload and strategy")
    m.add_argument("--clean-seeds", type=positive, default=500, help="seeds per clean profile and workload")
    m.add_argument("--jobs", type=at_least_one, default=2)
    m.add_argument("--bug", action="append", default=[], help="only these bugs (repeatable)")
    m.add_argument("--workload", action="append", default=[], help="only these workloads (repeatable)")
    m.add_argument("--strategy", action="append", default=[], help="random, pct, uncontrolled (repeatable)")
    m.add_argument(
        "--record",
        action="store_true",
        help="write where each bug was found into the record `p2msim list` shows (simulator/hunt/exposed.json)",
    )
    m.add_argument(
        "--seed-timeout",
        type=seconds,
        default=SEED_TIMEOUT,
        metavar="S",
        help=f"a seed with no verdict after S seconds is a timeout, not a hang (default {SEED_TIMEOUT:g})",
    )
    xen_tree_option(
        m, help="run the catalogue on this Xen tree's C: bugs that replace a function the C provides are skipped"
    )
    m.add_argument("--json", action="store_true")

    cp = sub.add_parser(
        "compare", help="your variant (or your Xen tree) against a baseline, the same seeds, side by side"
    )
    cp.add_argument("--variant", action="append", default=[], metavar="FILE", help="a variant file")
    cp.add_argument("--against", default="fixed", help="the baseline profile (default fixed); the variant runs on it")
    xen_tree_option(cp, help="your Xen tree: its p2m.c, paging.c and vmid.c are the variant side's (needs cc)")
    xen_tree_option(cp, "--against-tree", "the baseline's Xen tree (default: the Python model)")
    cp.add_argument("--workload", action="append", default=[], help="only these workloads (default: every built-in)")
    cp.add_argument("--seeds", type=at_least_one, default=20, help="seeds 0..N-1 per workload (default 20)")
    cp.add_argument("--jobs", type=at_least_one, default=2)
    cp.add_argument("--seed-timeout", type=seconds, default=SEED_TIMEOUT, metavar="S")
    cp.add_argument("--strict", action="store_true", help="stale use of a freed (not yet reused) frame is a finding")
    cp.add_argument("--json", action="store_true")

    add_sweep_arguments(sub.add_parser("sweep", help="run a range of seeds in parallel and summarise the failing ones"))

    b = sub.add_parser("bench", help="measure the hot path against a dict-lookup baseline")
    b.add_argument("--json", action="store_true")
    b.add_argument("--backend", default="trio")
    b.add_argument("--steps", type=at_least_one, default=600_000)
    b.add_argument(
        "--repeat", type=at_least_one, default=None, help="measurements (the median is taken; 3, or 1 with --sweep)"
    )
    b.add_argument(
        "--workloads",
        action="store_true",
        help="every built-in workload at one seed: steps/s and runs/s, and a step's cost in dict lookups",
    )
    b.add_argument("--seed", type=int, default=1, help="the seed of --workloads (default 1)")
    b.add_argument(
        "--workload",
        action="append",
        default=[],
        help="with --workloads: only these (repeatable); with --sweep: the one to sweep (teardown-under-load)",
    )
    b.add_argument(
        "--sweep",
        action="store_true",
        help="a sweep with --jobs 1 and with --jobs N, beside what N processes give over one on this machine",
    )
    b.add_argument("--seeds", type=at_least_one, default=40, help="with --sweep: seeds 0..N-1 (default 40)")
    b.add_argument("--jobs", type=at_least_one, default=None, help="with --sweep: processes (default: one per core)")

    st = sub.add_parser("study", help="studies that answer a design question with numbers (table-free)")
    st.add_argument("question", help="table-free: defer the free of the page table to avoid the flush?")
    st.add_argument("--quick", action="store_true", help="a reduced grid that runs in about a minute")
    st.add_argument("--grid", default=None, help="full (the default), quick, or tiny (the test suite's)")
    st.add_argument("-o", "--output", metavar="DIR", default=None, help="write the report, JSON and plots there")
    st.add_argument("--json", action="store_true", help="print the study's JSON")
    st.add_argument("--jobs", type=at_least_one, default=None, help="processes (default: one per core)")
    st.add_argument(
        "--from", dest="source", metavar="JSON", default=None, help="no runs: the report again from a study's JSON"
    )
    return p


EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
_terminated = False


def _on_sigterm(_signum: int, _frame: Any) -> None:
    """SIGTERM ends a command as Ctrl-C does (the log's last line, workers stopped), with exit code 143."""
    global _terminated
    _terminated = True
    signal.raise_signal(signal.SIGINT)  # the event loop's own SIGINT handler takes it from here


def main(argv: list[str] | None = None) -> int:
    if not isinstance(sys.stdout, _PipeSafeStdout):
        sys.stdout = _PipeSafeStdout(sys.stdout)  # type: ignore[assignment]
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    rc = _main(argv)
    return EXIT_TERMINATED if _terminated and rc == EXIT_INTERRUPTED else rc


def _main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "list":
            return cmd_list(args)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command == "sweep":
            from simulator.cli.sweep import run_cli

            return run_cli(args)
        if args.command == "matrix":
            return cmd_matrix(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "replay":
            return cmd_replay(args)
        if args.command == "shrink":
            return cmd_shrink(args)
        if args.command == "study":
            return cmd_study(args)
        raise CliError(f"unknown command {args.command}")
    except CliError as exc:
        print(f"p2msim: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        seq, log = getattr(exc, "seq", None), getattr(exc, "log", None)
        where = f" at step {seq:,}" if seq is not None else ""
        kept = f"; {log} is complete up to there" if log else ""
        print(f"p2msim: {'terminated' if _terminated else 'interrupted'}{where}{kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`p2msim run ... | head`): not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CLEAN


def cmd_run(args: argparse.Namespace) -> int:
    from simulator.engine.scenario import WorkloadError
    from simulator.engine.simulation import Config, ConfigError, run

    cfg = Config(
        **shared_config(args),
        seed=args.seed,
        strategy=args.strategy,
        pct_depth=args.pct_depth,
        pcpus=args.pcpus,
        profile=args.profile,
        vmid_bits=args.vmid_bits,
        tlb_leaf=args.tlb_leaf,
        tlb_nonleaf=args.tlb_nonleaf,
        log=args.log,
        log_level=args.log_level,
        speculate=args.speculate,
    )
    try:
        result = run(cfg)
    except (ConfigError, WorkloadError) as exc:
        raise _user_error(exc, args.traceback) from None
    for note in result.notes:
        print(f"p2msim: note: {note}", file=sys.stderr)
    if args.json:
        sys.stdout.write(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(result))
        if result.schedule_path:
            print(f"schedule: {result.schedule_path}   (p2msim replay / p2msim shrink take it)")
    if result.output_errors:
        for err in result.output_errors:  # the verdict above stands; the files it names are not there
            print(f"p2msim: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return VERDICT_EXIT.get(result.verdict, EXIT_CLEAN)


def _user_error(exc: BaseException, wanted: bool) -> CliError:
    """The one-line error for a failure in the user's code; with --traceback, the whole Python traceback
    first (for authors)."""
    original = getattr(exc, "original", None)
    if original is None:
        return CliError(str(exc))
    if wanted:
        import traceback

        traceback.print_exception(original, file=sys.stderr)
        return CliError(str(exc))
    return CliError(f"{exc}; --traceback shows the whole traceback")


VERDICT_EXIT = {"violation": EXIT_VIOLATION, "incomplete": EXIT_INCOMPLETE, "vacuous": EXIT_VACUOUS}


def render(result) -> str:  # type: ignore[no-untyped-def]
    from simulator.engine import findings, windows

    c = result.config
    s = result.stats
    hit_rate = 100.0 * s["tlb_hits"] / max(1, s["accesses"])
    out = [
        f"p2msim {__version__}  workload {c.workload}  profile {c.profile}  strategy {c.strategy}  seed {c.seed}"
        + (f"  bugs {', '.join(c.bugs)}" if c.bugs else ""),
        f"{c.pcpus} harts, {c.mode.capitalize().replace('x4', 'x4')}, TLB {c.tlb_leaf} leaf + {c.tlb_nonleaf} "
        f"non-leaf{f' + {c.tlb_negative} negative' if c.tlb_negative else ''} entries/hart"
        + (" (several per address)" if c.tlb_multi else "")
        + f", VMID {c.vmid_bits} bits"
        + ("" if c.boot_option("vmid", True) and c.vmid_bits > 1 else " (VMIDs off)")
        + (f", speculation {c.speculate}" if c.speculate else ", no speculation")
        + (", debug build" if c.debug_build else "")
        + (", hardware A/D updates (Svadu)" if c.ad == "svadu" else "")
        + (f", Svinval on {'every hart' if c.svinval == 'all' else 'harts ' + c.svinval}" if c.svinval else ""),
        "",
        f"  steps       {s['steps']:>10,}   accesses    {s['accesses']:>10,}   TLB hit rate   {hit_rate:5.1f}%",
        f"  walks       {s['walks']:>10,}   fences sent {s['fences_sent']:>10,}   fences acked {s['fences_acked']:>7,}",
        f"  frames freed{s['frames_freed']:>10,}   frames reused{s['frames_reused']:>9,}   "
        f"stale (benign) {s['stale_benign']:>5,}",
        "",
    ]

    if result.violations:
        out.append(f"VIOLATIONS: {result.counts}")
        out += findings.render(
            result.causes, {v.n: v.explain() for v in result.violations}, len(result.violations), result.findings
        )
    elif result.stop_reason == "budget":
        out.append(
            f"INCOMPLETE: the step budget ({c.budget:,} steps) ended the run before the workload finished: no "
            "violation so far, and the end-of-run invariants were not checked (give --steps more)"
        )
    elif result.vacuous:
        out.append(
            f"VACUOUS: no violation, but {result.vacuous}: this run proves nothing (exit {EXIT_VACUOUS}; "
            "see the README's race windows)"
        )
    else:
        warn = f", {result.warning_count} warning(s)" if result.warning_count else ", no warning"
        out.append(
            f"CLEAN: no violation{warn}, all invariants held "
            f"({len(result.destroyed)} domains destroyed, nothing left behind)"
        )
    if result.windows and result.stop_reason != "budget":
        if result.violations:
            out.append("")
        out.extend(windows.block(result.windows))
    if "timing" in s:
        out.append("")
        out.extend(timing_block(s["timing"]))
    if result.measures:
        out.append("")
        out.append("the workload measured: " + ", ".join(f"{k} {v:,}" for k, v in result.measures.items()))
    if result.warnings:
        out.append("")
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(result.warning_kinds.items(), key=lambda kv: -kv[1]))
        out.append(f"WARNINGS: {result.warning_count:,} stale use(s) that could do no harm ({kinds}); the first:")
        out.append(f"  {result.warnings[0]}")
    out.append("")
    if c.strategy == "uncontrolled":
        out.append("replay: none - the uncontrolled strategy lets the event loop schedule, so runs do not repeat")
    else:
        out.append(f"replay: {result.replay_command}")
    if result.violations and not c.log:
        out.append(f"log:    {result.replay_command} --log run.jsonl   then   p2msim inspect run.jsonl --violation 1")
    elif result.violations and not result.output_errors:
        out.append(f"log:    {c.log}   inspect: p2msim inspect {c.log} --violation 1")
    return "\n".join(out)


def timing_block(t: dict[str, Any]) -> list[str]:
    """A timed run's durations, in virtual cycles (engine.timing)."""
    out = [
        f"virtual time: {t['cycles']:,} cycles; {t['ipis']:,} IPIs; guests stalled by fences "
        f"{t['guest_stall']['total']:,} cycles ({', '.join(f'{x:,}' for x in t['guest_stall']['per_hart'])} by hart)",
        f"  {'':<40} {'count':>7} {'mean':>10} {'max':>10} {'total':>12}   (cycles)",
    ]
    for kind, form in (("hypercalls", "hypercall {}"), ("flushes", "{} to its last ack"), ("lock_holds", "{} held")):
        for name, v in t[kind].items():
            label = form.format(name)
            inner = f"   (flushing {v['flushing']:,})" if v.get("flushing") else ""
            out.append(f"  {label:<40} {v['count']:>7,} {v['mean']:>10,} {v['max']:>10,} {v['total']:>12,}{inner}")
    return out


def _log_or_replayed(path: str) -> str:
    """inspect takes a schedule too: replay it into a log next to it first."""
    from simulator.engine import schedule
    from simulator.engine.scenario import WorkloadError
    from simulator.engine.simulation import ConfigError
    from simulator.hunt.replay import replay

    if not path.endswith(".json"):
        return path
    if not Path(path).is_file():
        try:
            schedule.load(path)  # the one-line error that names what is wrong with the path
        except schedule.ScheduleError as exc:
            raise CliError(str(exc)) from None
    log = path + ".jsonl"
    try:
        with open(log, "ab"):
            pass
    except OSError as exc:  # a read-only directory: replay somewhere that takes it, and say where
        import tempfile

        log = str(Path(tempfile.mkdtemp(prefix="p2msim-")) / (Path(path).name + ".jsonl"))
        print(f"p2msim: note: cannot write {path}.jsonl ({exc.strerror}); replayed into {log}", file=sys.stderr)
    try:
        replay(path, log=log)
    except (schedule.ScheduleError, ConfigError, WorkloadError) as exc:
        raise CliError(str(exc)) from None
    return log


def cmd_inspect(args: argparse.Namespace) -> int:
    from simulator.engine.logread import LogError
    from simulator.report import logview

    filters = logview.Filters(args.mfn, args.gfn, args.dom, args.hart, args.event, args.seq_from, args.seq_to)
    filtering = any(x is not None for x in vars(filters).values())
    try:
        if args.check:  # before a schedule is replayed: the file itself is checked
            from simulator.report import schema

            c = schema.check(args.log)
            print(c.render())
            return EXIT_CLEAN if c.ok else EXIT_VIOLATION
        path = _log_or_replayed(args.log)
        if args.format == "html":
            from simulator.report.html import write_html

            target = args.out or path + ".html"
            try:
                out = write_html(path, target, args.violation, filters)
            except OSError as exc:
                raise CliError(f"cannot write {target}: {exc.strerror}") from None
            print(f"wrote {out}")
            return EXIT_CLEAN
        if args.format == "perfetto":
            from simulator.report.perfetto import write_trace

            target = args.out or path + ".trace.json"
            sink = sys.stdout.buffer if target == "-" else target
            try:
                stats = write_trace(path, sink, seq_from=args.seq_from, seq_to=args.seq_to, tlb=not args.no_tlb)
            except OSError as exc:
                raise CliError(f"cannot write {target}: {exc.strerror}") from None
            if target != "-":
                print(f"{stats.describe()} to {target}   open it in https://ui.perfetto.dev or chrome://tracing")
            return EXIT_CLEAN
        if args.violation is not None:
            summary = logview.summarize(path)
            t = logview.violation_timeline(path, args.violation, filters if filtering else None)
            if args.json:
                print(orjson.dumps(t).decode())
            else:
                print(logview.render_violation(t, summary.start.get("config", {}).get("pcpus", 1)))
            return EXIT_CLEAN
        if filtering:
            for ev in logview.timeline(path, filters):
                print(orjson.dumps(ev).decode() if args.json else logview.render_event(ev))
            return EXIT_CLEAN
        s = logview.summarize(path)
        print(orjson.dumps(s.to_json()).decode() if args.json else logview.render_summary(s))
    except LogError as exc:
        raise CliError(str(exc)) from None
    return EXIT_CLEAN


def cmd_replay(args: argparse.Namespace) -> int:
    from simulator.engine.scenario import WorkloadError
    from simulator.engine.schedule import ScheduleError
    from simulator.engine.simulation import ConfigError
    from simulator.hunt.replay import replay

    try:
        rp = replay(args.source, backend=args.backend, log=args.log)
    except (ScheduleError, ConfigError, WorkloadError) as exc:
        raise _user_error(exc, args.traceback) from None
    written_by = rp.recorded.get("version")
    if written_by is not None and written_by != __version__:
        print(
            f"p2msim: note: {args.source} was written by p2msim {written_by}, this is {__version__}: a changed "
            "model replays differently",
            file=sys.stderr,
        )
    r = rp.result
    classes = sorted({v.cls for v in r.violations})
    if args.json:
        print(
            orjson.dumps(
                {
                    "source": rp.source,
                    "reproduced": rp.reproduced,
                    "compared": list(rp.compared),
                    "same_digest": rp.same_digest,
                    "same_verdict": rp.same_verdict,
                    "diverged_at": rp.diverged_at,
                    "changed": list(rp.changed),
                    "digest": r.digest,
                    "recorded_digest": rp.recorded.get("digest"),
                    "classes": classes,
                    "violations": r.violation_count,
                }
            ).decode()
        )
    else:
        verdict = f"{r.counts}: {', '.join(classes)}" if classes else r.verdict
        if rp.nothing_to_compare:
            print(
                f"NOTHING TO COMPARE: {verdict}; digest {r.digest}: {rp.source} records no digest or verdict "
                "(an interrupted run, or a schedule without its verdict)"
            )
        elif rp.reproduced:
            print(f"REPRODUCED: {verdict}; digest {r.digest} (same as recorded)")
            for why in rp.changed:
                print(f"  note: {why}, and the run is the same")
        elif rp.changed:
            # a changed input explains the difference: say that, not a step where the schedules part
            print(f"CHANGED: {verdict}; digest {r.digest}, recorded {rp.recorded.get('digest')}")
            for why in rp.changed:
                print(f"  {why}")
        else:
            print(f"DIVERGED: {verdict}; digest {r.digest}, recorded {rp.recorded.get('digest')}")
            if rp.diverged_at is not None:
                print(f"  the schedules part ways at step {rp.diverged_at:,}")
        if r.violations:
            print()
            print(r.explain())
    if rp.nothing_to_compare:
        return EXIT_NOTHING_TO_COMPARE
    return EXIT_CLEAN if rp.reproduced else EXIT_VIOLATION


def cmd_shrink(args: argparse.Namespace) -> int:
    from simulator.engine.scenario import WorkloadError
    from simulator.engine.schedule import ScheduleError
    from simulator.engine.simulation import ConfigError
    from simulator.hunt.shrink import shrink_file

    def progress(msg: str) -> None:
        if not args.json:
            print(f"  {msg}", flush=True)

    try:
        s = shrink_file(
            args.source, args.out, max_tests=args.max_tests, max_seconds=args.max_seconds, progress=progress
        )
    except (ScheduleError, ConfigError, WorkloadError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(
            orjson.dumps(
                {
                    "class": s.cls,
                    "before": s.before.__dict__,
                    "to_first_violation": s.to_first.__dict__,
                    "after": s.after.__dict__,
                    "tests": s.tests,
                    "schedule": str(s.path),
                }
            ).decode()
        )
        return EXIT_CLEAN
    print(f"shrunk {s.cls} in {s.tests} runs ({s.seconds:.1f} s)")
    print(f"  before: {s.before.describe()}")
    print(f"          (up to its first violation: {s.to_first.describe()})")
    print(f"  after:  {s.after.describe()}")
    print(f"  wrote {s.path}")
    print(f"  p2msim replay {s.path}   |   p2msim inspect {s.path} --violation 1")
    return EXIT_CLEAN


def _harts(mod: Any) -> str:
    least, why = getattr(mod, "PCPUS", (1, ""))
    return f"{least}+ harts: {why}" if least > 1 else "any number of harts"


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from simulator.engine.bugs import BUGS
    from simulator.engine.simulation import builtin_workloads
    from simulator.engine.strategies import STRATEGIES
    from simulator.hunt import exposure
    from simulator.xen import fidelity
    from simulator.xen.profiles import ALIASES, PROFILES, UPSTREAM_COMMIT

    console = Console(width=120)
    if args.json:
        print(orjson.dumps(_list_json(args), option=orjson.OPT_INDENT_2).decode())
        return EXIT_CLEAN
    if args.workload:
        return _list_workload(args.workload, console)
    if args.functions:
        t = Table(title=f"model functions against the Xen tree at {UPSTREAM_COMMIT[:10]}", title_justify="left")
        for col in ("model", "async", "upstream", "verdict", "how it differs, or where it comes from"):
            t.add_column(col)
        for r in fidelity.rows():
            o = r.origin
            note = o.differs + ("; fixed: " + ", ".join(o.fixes) if o.fixes else "")
            t.add_row(
                f"{r.module}.{r.method}",
                "yes" if r.is_async else "",
                f"{o.file} {o.c_name}" if o.kind != fidelity.MODEL else "-",
                o.verdict,
                note,
            )
        console.print(t)
        return EXIT_CLEAN
    profiles = [(n, f"{p.description}. Shows: {p.shows}") for n, p in PROFILES.items()]
    profiles += [(old, f"old name of {new} (deprecated)") for old, new in ALIASES.items()]
    glue = sorted({r.origin.c_name for r in fidelity.rows() if r.origin.kind == fidelity.GLUE})
    for title, rows in (
        ("workloads", [(n, f"{m.DESCRIPTION} ({_harts(m)})") for n, m in builtin_workloads().items()]),
        ("profiles", profiles),
        (
            "glue (stubs or absent in the tree; from ARM or common code, the same on every profile)",
            [("", ", ".join(glue))],
        ),
        ("bugs", [(n, f"{b.description}; {exposure.describe(n)}") for n, b in BUGS.items()]),
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


def _workload_json(name: str, mod: Any) -> dict[str, Any]:
    from simulator.engine.params import params

    pcpus = getattr(mod, "PCPUS", (1, ""))
    return {
        "name": name,
        "description": getattr(mod, "DESCRIPTION", ""),
        "pcpus": pcpus[0],
        "pcpus_why": pcpus[1],
        # the most domains alive at once (a function of the parameters, for some workloads: its defaults')
        "domains": _domains(mod),
        "params": [{"name": k, "default": v, "meaning": m} for k, v, m in params(mod)],
    }


def _domains(mod: Any) -> Any:
    d = getattr(mod, "DOMAINS", None)
    return d(dict(getattr(mod, "PARAMS", {}))) if callable(d) else d


def _load(name: str) -> Any:
    from simulator.engine.simulation import ConfigError, load_workload

    try:
        return load_workload(name)
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _list_workload(name: str, console: Any) -> int:
    from rich.table import Table

    w = _workload_json(name, _load(name))
    console.print(f"[bold]{w['name']}[/bold]: {w['description']}")
    console.print(f"harts: at least {w['pcpus']} ({w['pcpus_why']})" if w["pcpus_why"] else "harts: any number")
    if not w["params"]:
        console.print("parameters: none")
        return EXIT_CLEAN
    t = Table(title="parameters (-p NAME=VALUE)", title_justify="left")
    for col in ("name", "default", "meaning"):
        t.add_column(col)
    for p in w["params"]:
        t.add_row(p["name"], str(p["default"]), p["meaning"])
    console.print(t)
    return EXIT_CLEAN


def _list_json(args: argparse.Namespace) -> dict[str, Any]:
    from simulator.engine import windows
    from simulator.engine.bugs import BUGS
    from simulator.engine.simulation import builtin_workloads
    from simulator.engine.strategies import STRATEGIES
    from simulator.hunt import exposure
    from simulator.xen import fidelity
    from simulator.xen.profiles import ALIASES, PROFILES, UPSTREAM_COMMIT

    if args.workload:
        return _workload_json(args.workload, _load(args.workload))
    if args.functions:
        return {
            "upstream": UPSTREAM_COMMIT,
            "functions": [
                {
                    "model": f"{r.module}.{r.method}",
                    "async": r.is_async,
                    "kind": r.origin.kind,
                    "file": r.origin.file,
                    "c_name": r.origin.c_name,
                    "verdict": r.origin.verdict,
                    "differs": r.origin.differs,
                    "fixes": list(r.origin.fixes),
                }
                for r in fidelity.rows()
            ],
        }
    return {
        "version": __version__,
        "workloads": [_workload_json(n, m) for n, m in builtin_workloads().items()],
        "profiles": [{"name": n, "description": p.description, "shows": p.shows} for n, p in PROFILES.items()],
        "aliases": dict(ALIASES),
        "bugs": [
            {
                "name": n,
                "description": b.description,
                "shape_of": b.shape_of,
                "workloads": list(b.workloads),
                "found": exposure.describe(n),
            }
            for n, b in BUGS.items()
        ],
        "strategies": dict(STRATEGIES),
        "windows": windows.WINDOWS,
    }


def cmd_matrix(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from simulator.engine import windows
    from simulator.engine.bugs import BUGS
    from simulator.engine.simulation import builtin_workloads, did_you_mean
    from simulator.hunt.matrix import STRATEGIES, Cell, matrix

    for b in args.bug:
        if b not in BUGS:
            raise CliError(f"unknown bug {b!r} (see `p2msim list`)" + did_you_mean(b, list(BUGS)))
    names = builtin_workloads()
    for w in args.workload:
        if w not in names:
            raise CliError(f"unknown workload {w!r} (built-in: {', '.join(names)})" + did_you_mean(w, list(names)))
    for s in args.strategy:
        if s not in STRATEGIES:
            raise CliError(f"unknown strategy {s!r} (choose from {', '.join(STRATEGIES)})")
    console = Console(stderr=True)

    def progress(item: object) -> None:
        if args.json:
            return
        if isinstance(item, Cell):
            verdict = (
                f"found after {item.seeds_to_first} seed(s)" if item.detected else f"not found in {item.seeds_run}"
            )
            console.print(f"  {item.bug} on {item.workload} ({item.strategy}): {verdict}")
        else:
            console.print(f"  {item.profile} on {item.workload}: {item.violations} of {item.seeds} seeds failing")

    out = matrix(
        args.seeds,
        args.clean_seeds,
        args.jobs,
        args.bug or None,
        args.workload or None,
        tuple(args.strategy) or STRATEGIES,
        progress,
        args.seed_timeout,
        xen_tree=args.xen_tree,
    )
    if args.record:
        from simulator.hunt import exposure

        path = exposure.record(out["cells"], args.seeds)
        console.print(f"recorded where each bug was found in {path}")
    if args.json:
        print(orjson.dumps(out).decode())
    else:
        t = Table(title=f"detection ({args.seeds} seeds at most)", title_justify="left")
        for col in ("bug", "workload", "strategy", "detected", "seeds to first", "seconds to first", "class"):
            t.add_column(col)
        for c in out["cells"]:
            t.add_row(
                c["bug"],
                c["workload"],
                c["strategy"] + (" (not reproducible)" if c["strategy"] == "uncontrolled" else ""),
                "yes" if c["detected"] else "no",
                str(c["seeds_to_first"] or "-"),
                str(c["seconds_to_first"] or "-"),
                c["class"] or "-",
            )
        c2 = Table(title=f"clean profiles ({args.clean_seeds} seeds each)", title_justify="left")
        for col in (
            "profile",
            "workload",
            "seeds",
            "failing seeds",
            "classes",
            "hit step budget",
            "timed out",
            "vacuous",
            "warnings",
            "race windows opened",
        ):
            c2.add_column(col)
        for r in out["clean"]:
            opened = r["windows"].get("opened", {})
            c2.add_row(
                r["profile"],
                r["workload"],
                str(r["seeds"]),
                str(r["violations"]),
                ", ".join(f"{k} {v}" for k, v in r["classes"].items()) or "-",
                str(r["budget_hits"]),
                str(r["timeouts"]),
                str(r["vacuous"]),
                f"{r['warnings']:,}",
                f"{sum(opened.get(k, 0) for k in windows.CACHED):,} stale entries, "
                f"{sum(opened.get(k, 0) for k in windows.USES):,} stale uses",
            )
        con = Console(width=160)
        con.print(t)
        con.print(c2)
        for r in out["clean"]:
            if r.get("first_error"):
                con.print(
                    f"{r['profile']} {r['workload']}: {r['classes'].get('error', 0)} seeds could not run the"
                    f" workload to its end; the first, {r['first_error']}"
                )
        if out.get("skipped"):
            con.print(f"not run on the tree's C (they replace a function it provides): {', '.join(out['skipped'])}")
        con.print(
            f"bugs found: {out['bugs_found']} of {out['bugs']}"
            + (f" (missed: {', '.join(out['missed'])})" if out["missed"] else "")
            + f"; median seconds to first detection: {out['median_seconds_to_first']}"
            + f"; clean-profile violations: {out['clean_violations']}"
            + (f"; INCOMPLETE clean runs: {out['clean_incomplete']}" if out["clean_incomplete"] else "")
        )
    if out["missed"] or out["clean_violations"]:
        return EXIT_VIOLATION
    return EXIT_INCOMPLETE if out["clean_incomplete"] else EXIT_CLEAN


def cmd_compare(args: argparse.Namespace) -> int:
    from simulator.engine.scenario import WorkloadError
    from simulator.engine.simulation import ConfigError, builtin_workloads, did_you_mean
    from simulator.hunt.compare import compare

    names = builtin_workloads()
    for w in args.workload:
        if w not in names and not w.endswith(".py"):
            raise CliError(
                f"unknown workload {w!r} (built-in: {', '.join(names)}; or a .py file)" + did_you_mean(w, list(names))
            )
    from simulator.engine.simulation import Config

    if not args.variant and not args.xen_tree:
        raise CliError("compare needs a change to judge: --variant FILE, or --xen-tree DIR (your tree)")
    try:
        out = compare(
            tuple(args.variant),
            args.against,
            args.workload or None,
            args.seeds,
            args.jobs,
            args.seed_timeout,
            Config("", strict=args.strict),
            xen_tree=args.xen_tree,
            against_tree=args.against_tree,
        )
    except (ConfigError, WorkloadError) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(orjson.dumps(out).decode())
    else:
        print(render_compare(out))
    return EXIT_VIOLATION if out["adds"] else EXIT_CLEAN


def render_compare(out: dict[str, Any]) -> str:
    from simulator.engine import windows

    def pair(b: int, v: int) -> str:
        return f"{b:,} -> {v:,}" + ("" if b == v else f" ({100 * (v - b) / b:+.1f}%)" if b else "")

    lines = [
        f"p2msim {__version__} compare  {', '.join(out['variants'])}  against {out['against']}  "
        f"seeds 0:{out['seeds']} per workload",
        "",
        f"{'workload':<22} {'failing seeds (base -> variant)':<32} {'fences sent':<26} {'frames freed':<24} steps",
    ]
    for w, sides in out["workloads"].items():
        b, v = sides["baseline"], sides["variant"]
        lines.append(
            f"{w:<22} {len(b['failing'])} -> {len(v['failing']):<27} {pair(b['fences_sent'], v['fences_sent']):<26} "
            f"{pair(b['frames_freed'], v['frames_freed']):<24} {pair(b['steps'], v['steps'])}"
        )
    tb, tv = out["total"]["baseline"], out["total"]["variant"]
    fences, freed = pair(tb["fences_sent"], tv["fences_sent"]), pair(tb["frames_freed"], tv["frames_freed"])
    lines.append(
        f"{'all':<22} {len(tb['failing'])} -> {len(tv['failing']):<27} {fences:<26} {freed:<24} "
        f"{pair(tb['steps'], tv['steps'])}"
    )
    lines.append(
        f"warnings {pair(tb['warnings'], tv['warnings'])}; frames reused "
        f"{pair(tb['frames_reused'], tv['frames_reused'])}; runs without a verdict (budget or timeout) "
        f"{tb['incomplete']} -> {tv['incomplete']}"
    )
    if tv["compared"] < tv["runs"]:
        lines.append(
            f"(the numbers are over the {tv['compared']:,} of {tv['runs']:,} seeds that ran to the end on both sides)"
        )
    wb, wv = tb["windows"], tv["windows"]
    opened = [k for k in windows.WINDOWS if wb.get("opened", {}).get(k) or wv.get("opened", {}).get(k)]
    if opened:
        lines.append("")
        lines.append("race windows opened (base -> variant):")
        for k in opened:
            lines.append(f"  {k:<26} {pair(wb.get('opened', {}).get(k, 0), wv.get('opened', {}).get(k, 0))}")
        closers = sorted(
            {*wb.get("closed_by", {}), *wv.get("closed_by", {})},
            key=lambda d: (-(wb.get("closed_by", {}).get(d, 0) + wv.get("closed_by", {}).get(d, 0)), d),
        )
        lines.append("removed by (base -> variant):")
        width = max(len(d) for d in closers)
        for d in closers:
            lines.append(f"  {d:<{width}} {pair(wb.get('closed_by', {}).get(d, 0), wv.get('closed_by', {}).get(d, 0))}")
    lines.append("")
    for title, key in (("the variant ADDS", "adds"), ("the variant removes", "removes")):
        if out[key]:
            lines.append(f"{title}:")
            for c in out[key]:
                what = f"{c['case']} in {c['function']}" if c["function"] else c["case"]
                lines.append(f"  {c['class']}: {what} ({c['seeds']} seed(s)); {c['replay']}")
    if not out["adds"] and not out["removes"]:
        lines.append("the same findings on both sides" + (": none" if not tb["failing"] else ""))
    elif not out["adds"]:
        lines.append("the variant adds no finding")
    return "\n".join(lines)


def cmd_study(args: argparse.Namespace) -> int:
    from simulator.hunt.study import GRIDS, answer, reload, study
    from simulator.report import study as report

    if args.question != "table-free":
        raise CliError(f"unknown study {args.question!r} (studies: table-free)")
    if args.quick and args.grid not in (None, "quick"):
        raise CliError(f"--quick is --grid quick, not --grid {args.grid}")
    name = "quick" if args.quick else args.grid or "full"
    if name not in GRIDS:
        raise CliError(f"unknown grid {name!r} (choose from {', '.join(GRIDS)})")
    out = Path(args.output) if args.output else None
    if out is not None and out.exists() and not out.is_dir():
        raise CliError(f"-o {out}: exists and is not a directory")
    jobs = args.jobs or os.cpu_count() or 1
    command = "p2msim study table-free" + {"full": "", "quick": " --quick"}.get(name, f" --grid {name}")
    if args.jobs:
        command += f" --jobs {args.jobs}"
    if out is not None:
        command += f" -o {args.output}"
    if args.source:
        try:
            body = reload(args.source)
        except (OSError, ValueError, KeyError) as exc:
            raise CliError(f"--from {args.source}: not a study's JSON ({exc})") from None
        command = str(body.get("command", command))
    else:
        from simulator.engine.scenario import WorkloadError
        from simulator.engine.simulation import ConfigError

        try:
            body = study(GRIDS[name], jobs, None if args.json else lambda s: print(s, file=sys.stderr))
        except (ConfigError, WorkloadError) as exc:
            raise CliError(f"study table-free: a run failed: {exc}") from None
        body["command"] = command
    if out is not None:
        for path in report.write(body, out, command):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    else:
        print(answer(body))
    return EXIT_CLEAN


def cmd_bench(args: argparse.Namespace) -> int:
    from simulator.hunt.bench import bench

    if args.backend not in ("trio", "asyncio"):
        raise CliError(f"unknown backend {args.backend!r} (trio or asyncio)")
    if args.sweep:
        return _bench_sweep(args)
    if args.workloads or args.workload:
        return _bench_workloads(args)
    r = bench(args.backend, args.steps, args.repeat or 3)
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


def _bench_sweep(args: argparse.Namespace) -> int:
    from simulator.engine.simulation import ConfigError, load_workload
    from simulator.hunt.bench import sweep_bench
    from simulator.hunt.sweep import SweepError

    if args.workloads:
        raise CliError("bench: --sweep or --workloads, not both")
    if len(args.workload) > 1:
        raise CliError("bench --sweep sweeps one workload (one --workload)")
    workload = args.workload[0] if args.workload else "teardown-under-load"
    try:
        load_workload(workload)  # a bad name or file is a one-line error before any process starts
        r = sweep_bench(workload, args.seeds, args.jobs or 0, args.backend, args.repeat or 1)
    except (ConfigError, SweepError) as exc:
        raise CliError(f"bench --sweep: {exc}") from None
    if args.json:
        print(orjson.dumps(r).decode())
        return EXIT_CLEAN
    print(f"p2msim {__version__} bench --sweep ({r['workload']}, seeds 0:{r['seeds']}, {r['backend']})")
    for j, key in ((1, "1"), (r["jobs"], "n")):
        print(f"  --jobs {j:<3} {r['runs_per_s_' + key]:>8.2f} runs/s   ({r['seconds_' + key]:.1f} s)")
    verdict = "within" if r["speedup"] >= r["target_speedup"] else "UNDER"
    print(f"  speed-up     {r['speedup']:>8.2f}x         ({verdict} the target of {r['target_speedup']}x)")
    print(
        f"  machine      {r['machine_speedup']:>8.2f}x         (a dict loop in {r['jobs']} processes at once over one, "
        "measured between the sweeps)"
    )
    print(f"  efficiency   {100 * r['efficiency']:>8.0f}%          (the sweep's speed-up over the machine's)")
    return EXIT_CLEAN


def _bench_workloads(args: argparse.Namespace) -> int:
    from simulator.engine.simulation import builtin_workloads
    from simulator.hunt.bench import workloads_bench

    known = list(builtin_workloads())
    for w in args.workload:
        if w not in known:
            raise CliError(f"unknown built-in workload {w!r} (choose from {', '.join(known)})")
    r = workloads_bench(args.seed, args.repeat or 3, args.backend, args.workload or None)
    if args.json:
        print(orjson.dumps(r).decode())
        return EXIT_CLEAN
    print(f"p2msim {__version__} bench --workloads ({r['backend']}, seed {r['seed']}, median of {r['repeat']})")
    print(f"{'workload':<22}{'verdict':<11}{'steps':>10}{'seconds':>9}{'steps/s':>10}{'runs/s':>8}{'lookups/step':>14}")
    for w in r["workloads"]:
        print(
            f"{w['workload']:<22}{w['verdict']:<11}{w['steps']:>10,}{w['seconds']:>9.2f}{w['steps_per_s']:>10,}"
            f"{w['runs_per_s']:>8.2f}{w['lookups_per_step']:>14.1f}"
        )
    t = r["total"]
    print(
        f"{'all':<22}{'':<11}{t['steps']:>10,}{t['seconds']:>9.2f}{t['steps_per_s']:>10,}{'':>8}{t['lookups_per_step']:>14.1f}"
    )
    print("lookups/step: a step's cost in plain dict lookups, each measured beside its run (lower is faster)")
    return EXIT_CLEAN


if __name__ == "__main__":
    raise SystemExit(main())
