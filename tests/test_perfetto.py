"""The Chrome/Perfetto trace export (report/perfetto.py): valid Trace Event Format, and true to the log.

Besides a JSON Schema of the format, the checks follow how Perfetto's JSON
importer reads a trace: complete slices on one thread must nest (a slice that
partly overlaps another is dropped), a v1 flow event binds to the slice open
on its thread when it is read (so each one must follow its own zero-length
slice), and async slices pair by category and id.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from simulator.engine.log import LOG_SCHEMA_VERSION
from simulator.engine.logread import LogError, read_events
from simulator.engine.simulation import Config, run
from simulator.report.perfetto import CHAIN_FLOW_BASE, DRIVER_TID, has_tlb_gone, write_trace

HEX = {"type": "string", "pattern": "^-?0x[0-9a-f]+$"}
HEX_OR_LIST = {"anyOf": [HEX, {"type": "array", "items": HEX}, {"type": "null"}]}  # null: none (malformed-pte)
ARGS = {
    "type": "object",
    "properties": {
        **{k: HEX_OR_LIST for k in ("mfn", "gfn", "fgfn", "old", "new", "pte", "hgatp", "table", "path", "root")},
        "gfns": {"anyOf": [{"const": "all"}, {"type": "array", "items": HEX}]},
    },
}


def _ph(*phases: str) -> dict[str, Any]:
    return {"properties": {"ph": {"enum": list(phases)}}, "required": ["ph"]}


# The Trace Event Format (the JSON object form), as far as this exporter uses it
TRACE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
        "traceEvents": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "ph", "pid", "tid"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "cat": {"type": "string", "minLength": 1},
                    "ph": {"enum": ["X", "B", "E", "i", "I", "b", "e", "n", "s", "t", "f", "M"]},
                    "ts": {"type": "number", "minimum": 0},
                    "dur": {"type": "number", "minimum": 0},
                    "pid": {"type": "integer"},
                    "tid": {"type": "integer"},
                    "id": {"type": ["integer", "string"]},
                    "s": {"enum": ["g", "p", "t"]},
                    "bp": {"const": "e"},
                    "args": ARGS,
                },
                "allOf": [
                    {"if": _ph("X"), "then": {"required": ["ts", "dur"]}},
                    {"if": _ph("B", "E", "i", "I"), "then": {"required": ["ts"]}},
                    {"if": _ph("b", "e", "n"), "then": {"required": ["ts", "cat", "id"]}},
                    {"if": _ph("s", "t", "f"), "then": {"required": ["ts", "cat", "id"]}},
                    {"if": _ph("i", "I"), "then": {"required": ["s"]}},
                    {
                        "if": _ph("M"),
                        "then": {
                            "required": ["args"],
                            "properties": {
                                "name": {
                                    "enum": [
                                        "process_name",
                                        "process_labels",
                                        "process_sort_index",
                                        "thread_name",
                                        "thread_sort_index",
                                    ]
                                }
                            },
                        },
                        "else": {"required": ["ts"]},
                    },
                    {"if": {"not": _ph("s", "t", "f", "M")}, "then": {"required": ["cat"]}},
                ],
            },
        },
    },
}


def tid_of(hart: int | None) -> int:
    return DRIVER_TID if hart is None else hart + 2


def load(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes())


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run with violations (and their chains) and a clean one with many TLB entries and fences."""
    d = tmp_path_factory.mktemp("perfetto")
    bad = d / "violation.jsonl"
    r = run(Config("foreign-unmap-reuse", seed=0, bugs=("no-reuse-flush",), log=str(bad)))
    assert r.violations
    clean = d / "clean.jsonl"
    r = run(Config("teardown-under-load", seed=0, steps=15_000, log=str(clean)))
    assert not r.violations
    return {"violation": bad, "clean": clean}


@pytest.fixture(scope="module")
def traces(logs: dict[str, Path]) -> dict[str, Path]:
    out = {}
    for name, log in logs.items():
        out[name] = log.with_suffix(".trace.json")
        write_trace(log, out[name])
    return out


def test_schema_and_counts(logs: dict[str, Path], traces: dict[str, Path]) -> None:
    validator = jsonschema.Draft202012Validator(TRACE_SCHEMA)
    jsonschema.Draft202012Validator.check_schema(TRACE_SCHEMA)
    for path in traces.values():
        doc = load(path)
        errors = list(validator.iter_errors(doc))
        assert not errors, errors[0]
        assert doc["displayTimeUnit"] in ("ms", "ns") and doc["otherData"]["time"].startswith("ts is the log's seq")
    # the counts returned are what was written
    st = write_trace(logs["violation"], buf := io.BytesIO())
    events = orjson.loads(buf.getvalue())["traceEvents"]
    assert st.events == len(events) and st.bytes == len(buf.getvalue())
    kinds: dict[str, int] = defaultdict(int)
    for ev in events:
        kinds[f"{ev.get('cat', 'meta')}:{ev['ph']}"] += 1
    assert dict(kinds) == dict(st.counts)
    assert st.describe().startswith(f"wrote {len(events):,} events (")


def test_the_schema_rejects_what_viewers_reject() -> None:
    validator = jsonschema.Draft202012Validator(TRACE_SCHEMA)
    ok = {"name": "a", "cat": "c", "ph": "X", "ts": 1, "dur": 0, "pid": 1, "tid": 2}
    assert validator.is_valid({"traceEvents": [ok]})
    for bad in (
        {k: v for k, v in ok.items() if k != "dur"},  # a complete slice needs its duration
        ok | {"dur": -1},
        ok | {"ph": "b"},  # an async slice needs an id
        ok | {"args": {"mfn": 123}},  # addresses are hex strings
        ok | {"args": {"mfn": "123"}},
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": 2},  # metadata needs its args
    ):
        assert not validator.is_valid({"traceEvents": [bad]}), bad


def test_one_track_per_hart_and_the_driver(logs: dict[str, Path], traces: dict[str, Path]) -> None:
    for name, path in traces.items():
        events = load(path)["traceEvents"]
        pcpus = next(read_events(logs[name]))["config"]["pcpus"]
        names = {ev["tid"]: ev["args"]["name"] for ev in events if ev["ph"] == "M" and ev["name"] == "thread_name"}
        assert names == {tid_of(h): f"hart {h}" for h in range(pcpus)} | {DRIVER_TID: "workload driver"}
        procs = [ev for ev in events if ev["ph"] == "M" and ev["name"] == "process_name"]
        assert [p["args"]["name"] for p in procs] == ["p2msim"] and {ev["pid"] for ev in events} == {1}
        # every event of a hart in the log is drawn on that hart's track (never on another)
        used = {ev["tid"] for ev in events if ev["ph"] != "M"}
        assert used <= set(names) and len(used & {tid_of(h) for h in range(pcpus)}) >= 2


def test_violations_have_an_instant_and_a_flow_through_their_chain(
    logs: dict[str, Path], traces: dict[str, Path]
) -> None:
    events = load(traces["violation"])["traceEvents"]
    violations = [ev for ev in read_events(logs["violation"]) if ev["event"] == "oracle.violation"]
    assert violations and all(len(v["chain"]) >= 2 for v in violations)
    for v in violations:
        n = v["n"]
        instants = [ev for ev in events if ev["ph"] == "i" and ev["cat"] == "violation" and ev["args"]["n"] == n]
        assert len(instants) == 1
        inst = instants[0]
        assert (
            inst["ts"] == v["seq"] and inst["tid"] == tid_of(v["hart"]) and inst["name"].startswith(f"VIOLATION {n}:")
        )
        assert inst["args"]["mfn"] == f"{v['mfn']:#x}" and inst["args"]["class"] == v["class"]
        flow = [ev for ev in events if ev["ph"] in "stf" and ev.get("id") == CHAIN_FLOW_BASE + n]
        chain = v["chain"]
        assert [ev["ph"] for ev in flow] == ["s"] + ["t"] * (len(chain) - 2) + ["f"]
        assert [(ev["ts"], ev["tid"]) for ev in flow] == [(c["seq"], tid_of(c["hart"])) for c in chain]
        steps = [ev for ev in events if ev.get("cat") == "chain" and ev["ph"] == "X" and ev["args"]["violation"] == n]
        assert [s["args"]["kind"] for s in steps] == [c["kind"] for c in chain]
        assert [s["args"]["text"] for s in steps] == [c["text"] for c in chain]


def test_flows_bind_to_their_own_slice_and_finish(logs: dict[str, Path], traces: dict[str, Path]) -> None:
    for name, path in traces.items():
        events = load(path)["traceEvents"]
        flows: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        for i, ev in enumerate(events):
            if ev["ph"] not in "stf":
                continue
            # Perfetto binds a flow event to the slice open on its thread when it reads it: ours is the
            # zero-length slice just before it (events of one step are read in file order)
            prev = events[i - 1]
            assert prev["ph"] == "X" and prev["dur"] == 0 and (prev["ts"], prev["tid"]) == (ev["ts"], ev["tid"])
            assert prev["cat"] == ev["cat"]
            flows[(ev["cat"], ev["id"])].append(ev)
        assert flows
        for (cat, fid), evs in flows.items():
            phases = "".join(ev["ph"] for ev in evs)
            assert re.fullmatch(r"st*f", phases), (cat, fid, phases)
            assert [ev["ts"] for ev in evs] == sorted(ev["ts"] for ev in evs)
            assert evs[-1]["bp"] == "e"
        # each remote fence: sent on the sender's track, then taken and acked on the target's
        sent = {ev["id"]: ev for ev in read_events(logs[name]) if ev["event"] == "fence.sent"}
        assert sent and {fid for cat, fid in flows if cat == "fence"} == set(sent)
        for fid, ev in sent.items():
            evs = flows[("fence", fid)]
            assert evs[0]["tid"] == tid_of(ev["src"]) and evs[0]["ts"] == ev["seq"]
            assert all(e["tid"] == tid_of(ev["dst"]) for e in evs[1:])


def test_async_tlb_slices_pair_up_in_lanes(logs: dict[str, Path], traces: dict[str, Path]) -> None:
    for name, path in traces.items():
        events = load(path)["traceEvents"]
        fills = sum(1 for ev in read_events(logs[name]) if ev["event"] == "tlb.fill")
        by_id: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for ev in events:
            if ev["ph"] in "be":
                assert ev["cat"] == "tlb"
                by_id[(ev["cat"], ev["id"])].append(ev)
        assert fills and sum(1 for evs in by_id.values() for ev in evs if ev["ph"] == "b") == fills
        for evs in by_id.values():
            evs.sort(key=lambda ev: ev["ts"])  # a viewer reads them in time order
            assert "".join(ev["ph"] for ev in evs) == "be" * (len(evs) // 2), evs[:4]
            assert len({ev["name"] for ev in evs}) == 1 and len({ev["tid"] for ev in evs}) == 1
            for b, e in zip(evs[::2], evs[1::2], strict=True):
                assert b["ts"] <= e["ts"]
            for e, b in zip(evs[1::2], evs[2::2], strict=False):
                assert b["ts"] > e["ts"]  # a lane is taken again only at a later step
        # lanes stay few: per hart and kind, about as many as entries held at once (a lane freed at a step
        # is not taken again at that step); with tlb.gone that is at most the TLB's capacity
        lanes: dict[str, int] = defaultdict(int)
        for _cat, fid in by_id:
            lanes[fid.rsplit(".", 1)[0]] += 1
        held: dict[str, int] = defaultdict(int)
        most: dict[str, int] = defaultdict(int)
        for ev in sorted((ev for evs in by_id.values() for ev in evs), key=lambda ev: (ev["ts"], ev["ph"] == "b")):
            group = ev["id"].rsplit(".", 1)[0]
            held[group] += 1 if ev["ph"] == "b" else -1
            most[group] = max(most[group], held[group])
        for group, n in lanes.items():
            assert most[group] <= n <= most[group] + 4, (group, n, most[group])
        cfg = next(read_events(logs[name]))["config"]
        if has_tlb_gone(logs[name]):
            assert max(n for g, n in lanes.items() if g.endswith(".leaf")) <= cfg["tlb_leaf"] + 4
            assert max(n for g, n in lanes.items() if g.endswith(".walk")) <= cfg["tlb_nonleaf"] + 4
        b = next(ev for ev in events if ev["ph"] == "b")
        assert re.fullmatch(r"0x[0-9a-f]+", b["args"]["mfn"]) and b["args"]["path"][0].startswith("0x")


def test_complete_slices_nest_on_every_track(traces: dict[str, Path]) -> None:
    """Perfetto drops a complete slice that partly overlaps one before it on its thread."""
    for path in traces.values():
        events = load(path)["traceEvents"]
        per_tid: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        for ev in events:
            if ev["ph"] == "X" and ev["dur"] > 0:
                per_tid[ev["tid"]].append((ev["ts"], ev["ts"] + ev["dur"], ev["name"]))
        cats = {ev["cat"] for ev in events if ev["ph"] == "X" and ev["dur"] > 0}
        assert {"vcpu", "hypercall"} <= cats
        for spans in per_tid.values():
            spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
            open_: list[tuple[int, int, str]] = []
            for s in spans:
                while open_ and open_[-1][1] <= s[0]:
                    open_.pop()
                assert not open_ or s[1] <= open_[-1][1], (open_[-1], s)
                open_.append(s)


def test_residency_and_instants_match_the_log(logs: dict[str, Path], traces: dict[str, Path]) -> None:
    events = load(traces["violation"])["traceEvents"]
    log = list(read_events(logs["violation"]))
    ins = [ev for ev in log if ev["event"] == "switch_in"]
    vcpus = [ev for ev in events if ev.get("cat") == "vcpu"]
    assert len(vcpus) == len(ins)
    ins.sort(key=lambda e: (e["seq"], tid_of(e["hart"])))
    for ev, sw in zip(sorted(vcpus, key=lambda e: (e["ts"], e["tid"])), ins, strict=True):
        assert (
            ev["ts"] == sw["seq"]
            and ev["tid"] == tid_of(sw["hart"])
            and ev["name"] == f"dom{sw['dom']} vcpu{sw['vcpu']}"
        )
        assert ev["args"]["hgatp"].startswith("0x8")  # Sv39x4 in MODE
    frees = [ev for ev in log if ev["event"] == "frame.free"]
    drawn = [ev for ev in events if ev.get("cat") == "frame" and ev["name"].startswith("free")]
    assert [(ev["ts"], ev["args"]["mfn"]) for ev in drawn] == [(f["seq"], f"{f['mfn']:#x}") for f in frees]
    reuses = [ev for ev in log if ev["event"] == "frame.hand_out" and ev["gen"] > 1]
    drawn = [ev for ev in events if ev.get("cat") == "frame" and ev["name"].startswith("reuse")]
    assert reuses and len(drawn) == len(reuses)
    warnings = [ev for ev in log if ev["event"] == "oracle.warning"]
    assert warnings and len([ev for ev in events if ev.get("cat") == "warning"]) == len(warnings)
    calls = [ev for ev in log if ev["event"] == "hypercall"]
    assert len([ev for ev in events if ev.get("cat") == "hypercall"]) == len(calls)


def test_same_log_same_bytes(logs: dict[str, Path], traces: dict[str, Path], tmp_path: Path) -> None:
    again = tmp_path / "again.json"
    write_trace(logs["violation"], again)
    assert again.read_bytes() == traces["violation"].read_bytes()
    buf = io.BytesIO()
    write_trace(logs["violation"], buf)
    assert buf.getvalue() == again.read_bytes()


def test_inferred_tlb_ends_agree_with_tlb_gone(logs: dict[str, Path], tmp_path: Path) -> None:
    """Without tlb.gone, an entry's end is inferred from fences: where the log says a fence removed it,
    the inferred end is that very step; where a capacity eviction did, the inferred end is later."""
    log = logs["clean"]
    if not has_tlb_gone(log):
        pytest.skip("this model logs no tlb.gone")
    stripped = tmp_path / "no-gone.jsonl"
    with log.open("rb") as src, stripped.open("wb") as dst:
        dst.writelines(line for line in src if b'"event":"tlb.gone"' not in line)
    assert not has_tlb_gone(stripped)

    def entries(trace: dict[str, Any]) -> list[tuple[int, int, int, str]]:
        begun: dict[str, int] = {}
        spans: list[tuple[int, int, int, str]] = []
        for ev in trace["traceEvents"]:
            if ev["ph"] == "b":
                begun[ev["id"]] = len(spans)
                spans.append((ev["tid"], ev["ts"], -1, ""))
            elif ev["ph"] == "e":
                i = begun.pop(ev["id"])
                spans[i] = (*spans[i][:2], ev["ts"], ev["args"]["why"])
        return spans  # in fill order

    buf = io.BytesIO()
    assert write_trace(log, buf).tlb_ends == "tlb.gone"
    truth = entries(orjson.loads(buf.getvalue()))
    buf = io.BytesIO()
    assert write_trace(stripped, buf).tlb_ends == "inferred"
    inferred = entries(orjson.loads(buf.getvalue()))
    assert len(truth) == len(inferred) > 1000
    by_fence = 0
    for t, i in zip(truth, inferred, strict=True):
        assert t[:2] == i[:2]
        if t[3] == "fence":
            by_fence += 1
            assert i[2] == t[2], (t, i)
        else:
            assert i[2] >= t[2], (t, i)
    assert by_fence > 100


# -- small hand-made logs: what the runs above may not show ------------------------------------------


def write_log(path: Path, events: list[dict[str, Any]], **config: Any) -> Path:
    cfg = {"workload": "hand-made", "seed": 0, "pcpus": 2, "tlb_leaf": 8, "tlb_nonleaf": 4} | config
    lines = [{"seq": 0, "hart": None, "event": "run.start", "v": LOG_SCHEMA_VERSION, "config": cfg}]
    lines += events
    path.write_bytes(b"".join(orjson.dumps(ev) + b"\n" for ev in lines))
    return path


def rec(seq: int, hart: int | None, event: str, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "hart": hart, "event": event, **fields}


def fill(seq: int, hart: int, gfn: int, mfn: int, *, leaf: bool = True, level: int = 0, vmid: int = 1) -> dict:
    return rec(seq, hart, "tlb.fill", leaf=leaf, vmid=vmid, level=level, gfn=gfn, mfn=mfn, path=[0x70])


def trace_of(tmp_path: Path, events: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    log = write_log(tmp_path / "log.jsonl", events)
    buf = io.BytesIO()
    write_trace(log, buf, **kw)
    doc = orjson.loads(buf.getvalue())
    jsonschema.validate(doc, TRACE_SCHEMA)
    return doc["traceEvents"]


def tlb_ends(events: list[dict[str, Any]]) -> dict[str, tuple[int, str]]:
    """gfn -> (end step, why) of each TLB entry."""
    begun: dict[str, str] = {}
    ends: dict[str, tuple[int, str]] = {}
    for e in events:
        if e["ph"] == "b":
            begun[e["id"]] = e["args"]["gfn"]
        elif e["ph"] == "e":
            ends[begun.pop(e["id"])] = (e["ts"], e["args"]["why"])
    return ends


def test_hypercall_ends_after_its_last_hypervisor_event(tmp_path: Path) -> None:
    events = trace_of(
        tmp_path,
        [
            rec(10, 0, "switch_in", dom=1, vcpu=0, vmid=0),
            rec(12, 0, "hypercall", op="decrease_reservation", dom=1, gfn=0x40000, nr=4),
            rec(13, 0, "pte.write", mfn=0x7A, idx=0, old=0x1E401, new=0),
            rec(15, 0, "frame.free", mfn=0x79, gen=1, to="free", why="p2m_free_page"),
            rec(18, 0, "fence.taken", id=1, src=1, dst=0, vmid=None, gfns=None),  # an interrupt: not the call's
            rec(18, 0, "fence.acked", id=1, src=1, dst=0, vmid=None, gfns=None),
            fill(20, 0, 0x40010, 0x99),  # the guest runs again
            rec(30, 0, "hypercall", op="populate_physmap", dom=1, gfn=0x40200, nr=1, order=0),
            rec(31, 0, "pte.write", mfn=0x7A, idx=1, old=0, new=0x1E801),
            rec(32, 0, "hypercall.end", op="populate_physmap", dom=1),  # logged: exact
            rec(33, 0, "p2m_write_lock", dom=1),
            rec(35, 0, "p2m_write_unlock", dom=1),
            rec(40, 0, "switch_out", dom=1, vcpu=0),
        ],
    )
    calls = [e for e in events if e.get("cat") == "hypercall"]
    assert [(c["name"], c["ts"], c["dur"]) for c in calls] == [
        ("decrease_reservation(dom1, 0x40000)", 12, 4),  # ends after step 15, not at the fence of step 18
        ("populate_physmap(dom1, 0x40200)", 30, 2),
    ]
    assert calls[0]["args"]["end"].startswith("inferred: tlb.fill at step 20") and calls[0]["args"]["gfn"] == "0x40000"
    assert calls[1]["args"]["end"] == "logged (hypercall.end)"
    (lock,) = [e for e in events if e.get("cat") == "lock"]
    assert (lock["name"], lock["ts"], lock["dur"], lock["tid"]) == ("p2m write lock dom1", 33, 2, tid_of(0))
    (vcpu,) = [e for e in events if e.get("cat") == "vcpu"]
    assert (vcpu["ts"], vcpu["dur"]) == (10, 30)
    # an acked fence whose sending is not in the log draws its slices, with no dangling flow
    assert [e["name"] for e in events if e.get("cat") == "fence"] == [
        "fence #1 taken (from hart 1)",
        "fence #1 acked (from hart 1)",
    ]


def test_inferred_tlb_ends_follow_the_fences_that_cover_them(tmp_path: Path) -> None:
    events = trace_of(
        tmp_path,
        [
            fill(5, 0, 0x40000, 0x7A, leaf=False, level=2),  # walk cache
            fill(6, 0, 0x40010, 0x90),
            fill(7, 0, 0x40011, 0x91),
            fill(8, 0, 0x40200, 0x800, level=1),  # a 2M leaf
            fill(9, 0, 0x40012, 0x92, vmid=2),
            fill(9, 1, 0x40020, 0x90),  # another hart's
            rec(10, 0, "fence.local", id=0, src=0, dst=0, vmid=1, gfns=[0x40010, 0x40205]),
            fill(12, 0, 0x40011, 0x93),  # a refill of the same address
            rec(14, 1, "fence.sent", id=7, src=1, dst=0, vmid=None, gfns=None),
            rec(16, 0, "fence.taken", id=7, src=1, dst=0, vmid=None, gfns=None),
            fill(16, 0, 0x40013, 0x94),
            rec(17, 0, "fence.acked", id=7, src=1, dst=0, vmid=None, gfns=None),
            rec(20, 0, "fence.sent", id=8, src=0, dst=1, vmid=None, gfns=None),  # never taken
            rec(25, None, "run.end", stop="done"),
        ],
    )
    ends = tlb_ends(events)
    assert ends["0x40010"] == (10, "fence.local (inferred)")  # covered by the address fence
    assert ends["0x40200"] == (10, "fence.local (inferred)")  # the 2M leaf covers 0x40205
    assert ends["0x40000"] == (16, "fence.taken (inferred)")  # an address fence keeps walk-cache entries
    assert ends["0x40012"] == (16, "fence.taken (inferred)")  # VMID 2: not the address fence's
    assert ends["0x40013"] == (25, "end")
    gone_11 = [e for e in events if e["ph"] == "e" and e["args"]["why"] == "refill (inferred)"]
    assert [e["ts"] for e in gone_11] == [12]
    # hart 1's entry lives on: fences are per hart
    assert [e["ts"] for e in events if e["ph"] == "e" and e["tid"] == tid_of(1)] == [25]
    # the fence never taken still finishes its flow, at a slice saying so on its target
    flow = [e for e in events if e["ph"] in "stf" and e["id"] == 8]
    assert [(e["ph"], e["ts"], e["tid"]) for e in flow] == [("s", 20, tid_of(0)), ("f", 25, tid_of(1))]
    last = [e for e in events if e.get("cat") == "fence" and e["ph"] == "X"][-1]
    assert last["name"] == "fence #8 not taken: still in flight at the end"


def test_tlb_gone_ends_entries_exactly(tmp_path: Path) -> None:
    gone = {"vmid": 1, "level": 0, "fence": None, "window": None}
    events = trace_of(
        tmp_path,
        [
            fill(5, 0, 0x40010, 0x90),
            fill(6, 0, 0x40011, 0x91),
            rec(8, 0, "tlb.gone", leaf=True, gfn=0x40010, mfn=0x90, why="capacity", **gone),
            rec(9, 0, "fence.local", id=0, src=0, dst=0, vmid=None, gfns=None),  # no inference: gone says
            rec(12, 0, "tlb.gone", leaf=True, gfn=0x40011, mfn=0x91, why="fence", **gone | {"fence": 4}),
            rec(12, 0, "tlb.gone", leaf=True, gfn=0x40099, mfn=0x99, why="fence", **gone),  # unknown: ignored
        ],
    )
    assert tlb_ends(events) == {"0x40010": (8, "capacity"), "0x40011": (12, "fence")}
    assert [e["args"].get("fence") for e in events if e["ph"] == "e"] == [None, 4]


def test_window_clips_slices_and_drops_what_is_outside(tmp_path: Path) -> None:
    log = [
        rec(10, 0, "switch_in", dom=1, vcpu=0, vmid=1),
        fill(11, 0, 0x40010, 0x90),
        rec(12, 1, "fence.sent", id=3, src=1, dst=0, vmid=None, gfns=None),
        rec(20, 0, "frame.free", mfn=0x50, gen=1, to="free", why="x"),
        rec(30, 0, "fence.taken", id=3, src=1, dst=0, vmid=None, gfns=None),
        rec(30, 0, "fence.acked", id=3, src=1, dst=0, vmid=None, gfns=None),
        rec(40, 0, "frame.free", mfn=0x51, gen=1, to="free", why="x"),
        rec(50, 0, "switch_out", dom=1, vcpu=0),
    ]
    events = trace_of(tmp_path, log, seq_from=15, seq_to=35)
    (vcpu,) = [e for e in events if e.get("cat") == "vcpu"]
    assert (vcpu["ts"], vcpu["dur"]) == (15, 20)
    assert [e["args"]["mfn"] for e in events if e.get("cat") == "frame"] == ["0x50"]
    assert [(e["ph"], e["ts"]) for e in events if e.get("cat") == "tlb"] == [("b", 15), ("e", 30)]
    flow = [e for e in events if e["ph"] in "stf"]
    assert [(e["ph"], e["ts"]) for e in flow] == [("s", 30), ("f", 30)]  # the sending is outside


def test_a_bad_log_leaves_no_trace(tmp_path: Path) -> None:
    log = write_log(tmp_path / "log.jsonl", [rec(1, 0, "frame.free", mfn=1, gen=1, to="free", why="x")])
    log.write_bytes(log.read_bytes() + b'{"seq": 2, "hart": 0, "event": "frame.fr')  # cut mid-line
    out = tmp_path / "trace.json"
    with pytest.raises(LogError, match="truncated line"):
        write_trace(log, out)
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_everything_and_no_tlb(logs: dict[str, Path]) -> None:
    log = logs["violation"]
    lines = sum(1 for _ in read_events(log))
    full, lean = io.BytesIO(), io.BytesIO()
    st_full = write_trace(log, full, everything=True)
    st_lean = write_trace(log, lean, tlb=False)
    assert st_full.counts["log:i"] > 0 and st_full.events > lines / 2
    assert st_lean.counts["tlb:b"] == 0 and st_lean.counts["violation:i"] == st_full.counts["violation:i"]
    for buf in (full, lean):
        jsonschema.validate(orjson.loads(buf.getvalue()), TRACE_SCHEMA)
