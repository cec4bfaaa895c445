"""The published JSON Schemas (simulator/report/schema.py): one definition of the log's events, the
schedule and every --json output, shipped in simulator/schemas/, and held to real outputs both ways:
what p2msim writes passes, and a log with one wrong line gets one message naming that line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from simulator.engine.log import LOG_SCHEMA_VERSION, READABLE_VERSIONS, WIDE
from simulator.engine.scenario import Scenario, WorkloadError
from simulator.engine.simulation import DEFAULTS, MACHINE_OPTIONS, Config, builtin_workloads, run
from simulator.report import schema
from tests.conftest import TINY_STUDY_GROUP, simulate

ROOT = Path(__file__).resolve().parents[1]
# one worker runs this module: its outputs of every command (``real``) are made once, not once per worker
pytestmark = pytest.mark.xdist_group(TINY_STUDY_GROUP)  # (with test_study's tiny-study tests: one study)
# a log of schema version 3 (written by p2msim before 6b10115: PTE values as integers, pte.write's
# table as mfn, no tlb.gone), cut down to the first two lines of each event and the last line
V3_LOG = Path(__file__).parent / "data" / "log-v3.log"  # (*.jsonl is ignored by git)
NOT_LOGGED = {"invariant"}  # an observer event the oracle turns into a violation, never a line of its own


# -- real outputs -------------------------------------------------------------------------------------


def _parallel(cmds: dict[str, tuple[list[str], tuple[int, ...]]], cwd: Path) -> dict[str, str]:
    """Run p2msim commands side by side; each must exit with one of its codes."""
    procs = {
        k: subprocess.Popen(
            [sys.executable, "-m", "simulator", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for k, (args, _codes) in cmds.items()
    }
    out = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode in cmds[k][1], f"{cmds[k][0]}: exit {p.returncode}\n{stderr.decode()}"
        out[k] = stdout.decode()
    return out


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, tiny_study: tuple[str, Path]) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("schema")
    log = d / "run.jsonl"
    first = _parallel(
        {
            "run": (["run", "foreign-unmap-reuse", "--seed", "0", "--bug", "no-reuse-flush", "--log", str(log),
                     "--json"], (1,)),
            "clean": (["run", "foreign-remap", "--seed", "0", "--json"], (0,)),
            "sweep": (["sweep", "foreign-unmap-reuse", "--seeds", "0:3", "--bug", "no-reuse-flush", "--json",
                       "--out", str(d / "seeds.jsonl")], (1,)),
            "compare": (["compare", "--variant", "gather-until-unlock", "--seeds", "1", "--workload",
                         "foreign-unmap-reuse", "--json"], (0, 1)),
            "matrix": (["matrix", "--seeds", "1", "--clean-seeds", "1", "--bug", "no-reuse-flush", "--workload",
                        "foreign-unmap-reuse", "--strategy", "random", "--json"], (0,)),
        },
        d,
    )  # fmt: skip
    sched = d / "run.jsonl.schedule.json"
    second = _parallel(
        {
            "inspect": (["inspect", str(log), "--json"], (0,)),
            "inspect-v3": (["inspect", str(V3_LOG), "--json"], (0,)),
            "replay": (["replay", str(log), "--json"], (0,)),
            "replay-schedule": (["replay", str(sched), "--json", "--log", str(d / "replayed.jsonl")], (0,)),
            "inspect-violation": (["inspect", str(log), "--violation", "1", "--json"], (0,)),
            "shrink": (["shrink", str(log), "-o", str(d / "shrunk.json"), "--max-tests", "4", "--json"], (0,)),
            "bench": (["bench", "--json", "--steps", "20000", "--repeat", "1"], (0,)),
            "bench-workloads": (
                ["bench", "--workloads", "--workload", "foreign-remap", "--repeat", "1", "--json"],
                (0,),
            ),
            "bench-sweep": (["bench", "--sweep", "--workload", "foreign-remap", "--seeds", "2", "--json"], (0,)),
        },
        d,
    )
    out: dict[str, Any] = {k: orjson.loads(v) for k, v in {**first, **second, "study": tiny_study[0]}.items()}
    out["sweep-seed"] = [orjson.loads(line) for line in (d / "seeds.jsonl").read_bytes().splitlines()]
    out["schedule"] = orjson.loads(sched.read_bytes())
    out["shrunk-schedule"] = orjson.loads((d / "shrunk.json").read_bytes())
    out["dir"], out["log"], out["schedule_path"] = d, log, sched
    return out


DOCUMENT_OF = {  # real output -> the schema it must pass
    "run": "run",
    "clean": "run",
    "inspect": "inspect",
    "inspect-v3": "inspect",
    "replay": "replay",
    "replay-schedule": "replay",
    "sweep": "sweep",
    "sweep-seed": "sweep-seed",
    "compare": "compare",
    "matrix": "matrix",
    "schedule": "schedule",
    "shrunk-schedule": "schedule",
    "inspect-violation": "inspect-violation",
    "shrink": "shrink",
    "bench": "bench",
    "bench-workloads": "bench-workloads",
    "bench-sweep": "bench-sweep",
    "study": "study-table-free",
}


@pytest.mark.parametrize("output", list(DOCUMENT_OF))
def test_every_real_output_passes_its_published_schema(real: dict[str, Any], output: str) -> None:
    name = DOCUMENT_OF[output]
    published = schema.load(f"{name}-{schema.DOCUMENTS[name][0]}.json")
    v = Draft202012Validator(published)
    docs = real[output] if output == "sweep-seed" else [real[output]]
    assert docs
    for doc in docs:
        assert [e.message for e in v.iter_errors(doc)] == []
        assert schema.check_document(name, doc) == []


def test_what_the_outputs_say_is_what_was_run(real: dict[str, Any]) -> None:
    assert real["run"]["verdict"] == "violation" and real["clean"]["verdict"] == "clean"
    assert real["replay"]["reproduced"] and real["replay-schedule"]["reproduced"]
    assert real["inspect"]["schema"] == LOG_SCHEMA_VERSION and real["inspect-v3"]["schema"] == 3
    assert len(real["sweep-seed"]) == 3 and real["matrix"]["cells"] and real["compare"]["workloads"]


def test_a_wrong_output_is_named_field_by_field(real: dict[str, Any]) -> None:
    doc = dict(real["run"], steps="many", surprise=1)
    del doc["digest"]
    doc["stats"] = dict(doc["stats"], walks=-1)
    assert schema.check_document("run", doc) == [
        "run: unknown field 'surprise'",
        "run: 'digest' is missing",
        "run: 'stats.walks' is -1, expected an integer >= 0",
        "run: 'steps' is \"many\", expected an integer >= 0",
    ]
    bad = dict(real["schedule"], decisions=[[1, 0], [2]])
    assert schema.check_document("schedule", bad) == [
        "schedule: 'decisions[1]' is [2]: [2] is too short",
    ]


# -- the schemas themselves -------------------------------------------------------------------------------


def test_the_shipped_schemas_are_the_generated_ones() -> None:
    made = schema.schemas()
    shipped = sorted(p.name for p in schema.SCHEMA_DIR.glob("*.json"))
    assert shipped == sorted(made), "run: python3 -m simulator.report.schema --write"
    for name, s in made.items():
        assert (schema.SCHEMA_DIR / name).read_bytes() == schema.render(s), (
            f"{name} differs from the definition: run python3 -m simulator.report.schema --write"
        )


def test_every_schema_is_a_valid_versioned_draft_2020_12_schema() -> None:
    for name, s in schema.schemas().items():
        Draft202012Validator.check_schema(s)
        kind, version = name.removesuffix(".json").rsplit("-", 1)
        assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert s["$id"] == f"https://p2msim.invalid/schema/{kind}/{version}.json"
        assert s["title"] and s["description"]
    ids = {s["$id"] for s in schema.schemas().values()}
    for v in READABLE_VERSIONS:
        assert f"https://p2msim.invalid/schema/log-line/{v}.json" in ids
    assert "https://p2msim.invalid/schema/run/1.json" in ids and "https://p2msim.invalid/schema/schedule/1.json" in ids


def test_every_event_and_field_has_a_meaning() -> None:
    for name, e in schema.EVENTS.items():
        assert e.level in ("debug", "info", "error") and e.meaning, name
        for k, fld in e.fields.items():
            assert fld.meaning and "\n" not in fld.meaning, f"{name}.{k}"
    assert set(schema.COMMON) == {"seq", "t", "hart", "event", "log_level"}


def _emitted() -> set[str]:
    """Every event name the code can write: emit("..."), observer.event(h, "..."), log.<level>(h, "...")."""
    names: set[str] = set()
    fences: set[str] = set()
    for p in (ROOT / "simulator").rglob("*.py"):
        text = p.read_text()
        for rx in (
            r'\bemit\(\s*f?"([^"]+)"',
            r'observer\.event\(\s*[^,()]+(?:\([^)]*\))?,\s*f?"([^"]+)"',
            r'\blog\.(?:debug|info|error)\(\s*[^,]+,\s*f?"([^"]+)"',
        ):
            names.update(m.group(1) for m in re.finditer(rx, text))
        fences.update(m.group(1) for m in re.finditer(r'on_fence\([^,]+,\s*"(\w+)"', text))
    assert fences == {"sent", "taken", "acked", "local"}
    names.discard("fence.{what}")  # the oracle's on_fence: one event per kind the machine reports
    return names | {f"fence.{k}" for k in fences}


def test_the_definition_is_every_event_the_code_writes_and_no_other() -> None:
    emitted = _emitted() - NOT_LOGGED
    assert sorted(emitted - set(schema.EVENTS)) == [], "events the code writes that the definition lacks"
    assert sorted(set(schema.EVENTS) - emitted) == [], "events defined that no code writes"


def test_the_64_bit_fields_are_the_logs_wide_ones() -> None:
    """log.py writes every field named in WIDE as hex, whatever the event: each must be defined so."""
    for name, e in schema.EVENTS.items():
        for k, fld in e.fields.items():
            assert isinstance(fld.type, schema.Wide) == (k in WIDE), f"{name}.{k}"


def test_the_configuration_is_the_runs_identity() -> None:
    fields = schema.CONFIG.fields
    assert set(DEFAULTS.identity()) == {k for k, fld in fields.items() if not fld.optional}
    every = Config(
        "w",
        ad="svadu",
        svinval="all",
        tlb_negative=2,
        tlb_multi=True,
        variants=("v.py",),
        xen_tree="~/src/xen",
        costs="c.toml",
    )
    assert set(every.identity()) == set(fields)
    assert {k for k, fld in fields.items() if fld.optional} == set(MACHINE_OPTIONS)


# -- check_log --------------------------------------------------------------------------------------------


def _events(path: Path) -> set[str]:
    return {orjson.loads(line)["event"] for line in path.read_bytes().splitlines()}


def test_the_logs_of_every_builtin_workload_pass(tmp_path: Path) -> None:
    seen: set[str] = set()
    for w in builtin_workloads():
        log = tmp_path / f"{w}.jsonl"
        run(Config(w, seed=0, log=str(log)))
        assert schema.check_log(log) == [], w
        seen |= _events(log)
    assert seen <= set(schema.EVENTS)
    assert {"run.start", "run.end", "pte.write", "tlb.fill", "tlb.gone", "hypercall"} <= seen


def test_the_logs_of_a_violation_a_clock_hsm_an_error_and_an_interrupt_pass(
    real: dict[str, Any], tmp_path: Path
) -> None:
    assert schema.check_log(real["log"]) == []
    assert "oracle.violation" in _events(real["log"])

    async def harts(sim: Scenario) -> None:
        d1 = await sim.create_domain(1, vcpus=1, pool_pages=4)
        await sim.populate(d1, 0x10, 16)
        await sim.run_vcpu(d1.vcpus[0], 1, sim.pattern([(0x10, 16)], write_ratio=0.5))
        await sim.elapse(300)
        await sim.hart_stop(1)
        await sim.on(0, "decrease_reservation", sim.xen.decrease_reservation, d1, 0x10, 16)
        await sim.hart_suspend(2)
        d2 = await sim.create_domain(2, vcpus=1, pool_pages=4)
        await sim.populate(d2, 0x4000, 16)
        await sim.hart_start(1)
        await sim.run_vcpu(d2.vcpus[0], 1, sim.pattern([(0x4000, 16)]))
        await sim.elapse(300)
        for d in (d1, d2):
            await sim.pause(d)
            await sim.destroy(d)

    log = tmp_path / "hsm.jsonl"
    simulate(harts, pcpus=3, profile="fixed+tlbflush_clock", log=str(log))
    assert schema.check_log(log) == []
    assert {"cpu_down", "cpu_up", "hsm.stop", "hsm.start", "hsm.started", "hsm.suspend", "tlbflush.stamp"} <= _events(
        log
    )

    async def fails(sim: Scenario) -> None:
        await sim.create_domain(1, vcpus=1, pool_pages=4)
        raise ValueError("the workload's own error")

    async def interrupted(sim: Scenario) -> None:
        await sim.create_domain(1, vcpus=1, pool_pages=4)
        raise KeyboardInterrupt

    for main, last in ((fails, "run.error"), (interrupted, "run.interrupted")):
        log = tmp_path / f"{last}.jsonl"
        with pytest.raises((WorkloadError, KeyboardInterrupt)):
            simulate(main, pcpus=2, log=str(log))
        assert orjson.loads(log.read_bytes().splitlines()[-1])["event"] == last
        assert schema.check_log(log) == []


def test_a_log_of_version_3_is_checked_by_its_own_rules(tmp_path: Path) -> None:
    assert schema.check_log(V3_LOG) == []
    assert schema.check(V3_LOG).version == 3
    lines = V3_LOG.read_bytes().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if b'"pte.write"' in line)
    ev = orjson.loads(lines[i])
    for change, expected in (
        ({"old": "0x1"}, "pte.write: 'old' is \"0x1\", expected an integer >= 0"),
        ({"table": ev["mfn"]}, "pte.write: unknown field 'table'"),
    ):
        bad = tmp_path / "v3.jsonl"
        bad.write_bytes(b"".join([*lines[:i], orjson.dumps(ev | change) + b"\n", *lines[i + 1 :]]))
        assert schema.check_log(bad) == [f"{bad}:{i + 1}: {expected}"]
    gone = b'{"seq":%d,"hart":0,"event":"tlb.gone","log_level":"debug"}\n' % ev["seq"]
    bad.write_bytes(b"".join([*lines[: i + 1], gone, *lines[i + 1 :]]))
    assert schema.check_log(bad) == [f"{bad}:{i + 2}: unknown event 'tlb.gone' (log version 3)"]


@pytest.fixture(scope="module")
def small(real: dict[str, Any]) -> list[bytes]:
    """A real log cut down to its first 200 lines, the first 20 of each event after them, and its last
    line: a short log that is still valid."""
    lines = real["log"].read_bytes().splitlines(keepends=True)
    seen: dict[str, int] = {}
    out = []
    for n, line in enumerate(lines):
        event = orjson.loads(line)["event"]
        seen[event] = seen.get(event, 0) + 1
        if n < 200 or seen[event] <= 20 or n == len(lines) - 1:
            out.append(line)
    assert any(b'"pte.write"' in x for x in out) and any(b'"tlb.fill"' in x for x in out)
    return out


def _at(lines: list[bytes], event: str) -> int:
    return next(i for i, line in enumerate(lines) if orjson.loads(line)["event"] == event)


def _corrupt(lines: list[bytes], how: str) -> tuple[list[bytes], int, str]:
    """The log with one line made wrong, the line's number and the message it must get."""
    lines = list(lines)
    i = _at(lines, "pte.write")
    ev = orjson.loads(lines[i])

    def put(e: dict[str, Any]) -> None:
        lines[i] = orjson.dumps(e) + b"\n"

    if how == "int-pte":
        put(ev | {"old": 16})
        return lines, i + 1, "pte.write: 'old' is 16, expected a hex string (\"0x...\")"
    if how == "missing-field":
        put({k: v for k, v in ev.items() if k != "idx"})
        return lines, i + 1, "pte.write: 'idx' is missing"
    if how == "unknown-field":
        put(ev | {"colour": "red"})
        return lines, i + 1, "pte.write: unknown field 'colour'"
    if how == "unknown-event":
        put(ev | {"event": "pte.wrote"})
        return lines, i + 1, "unknown event 'pte.wrote'"
    if how == "wrong-level":
        put(ev | {"log_level": "info"})
        return lines, i + 1, "pte.write: 'log_level' is \"info\", expected 'debug'"
    if how == "seq-backwards":
        before = orjson.loads(lines[i - 1])["seq"]
        assert before > 0
        put(ev | {"seq": 0})
        return lines, i + 1, f"seq 0 after seq {before} (line {i}): seq never decreases"
    if how == "truncated":
        n = len(lines)
        lines[-1] = lines[-1][: len(lines[-1]) // 2]
        return lines, n, "truncated line (no newline at the end of the log)"
    if how == "no-end":
        del lines[-1]
        last = orjson.loads(lines[-1])["event"]
        return lines, len(lines), f'the log ends with "{last}", not run.end, run.error or run.interrupted (cut short?)'
    if how == "after-end":
        lines.append(lines[-1])  # run.end again
        return lines, len(lines), f"a line after run.end (line {len(lines) - 1}), which ends the log"
    if how == "case-field":
        j = _at(lines, "hypercall")
        call = orjson.loads(lines[j])
        assert call["op"] == "populate_physmap"
        lines[j] = orjson.dumps(call | {"pages": 8}) + b"\n"
        return lines, j + 1, "hypercall: 'pages' is not a field of hypercall with op \"populate_physmap\""
    if how == "not-json":
        lines[i] = lines[i][:-10] + b"\n"
        return lines, i + 1, "not valid JSON"
    raise AssertionError(how)


CORRUPTIONS = [
    "int-pte",
    "missing-field",
    "unknown-field",
    "unknown-event",
    "wrong-level",
    "seq-backwards",
    "truncated",
    "no-end",
    "after-end",
    "case-field",
    "not-json",
]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_one_wrong_line_is_one_message_naming_it(small: list[bytes], tmp_path: Path, how: str) -> None:
    log = tmp_path / "run.jsonl"
    log.write_bytes(b"".join(small))
    assert schema.check_log(log) == []
    lines, lineno, message = _corrupt(small, how)
    log.write_bytes(b"".join(lines))
    assert schema.check_log(log) == [f"{log}:{lineno}: {message}"]


def test_the_first_line_decides_the_version(small: list[bytes], tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    start = orjson.loads(small[0])
    log.write_bytes(b"".join([orjson.dumps(start | {"v": 9}) + b"\n", *small[1:]]))
    assert schema.check_log(log) == [f"{log}:1: log schema version 9, this p2msim reads 3, 4"]
    log.write_bytes(b"".join(small[1:]))
    first = orjson.loads(small[1])["event"]
    assert schema.check_log(log) == [f'{log}:1: the first line is "{first}", not run.start']
    log.write_bytes(b"")
    assert schema.check_log(log) == [f"{log}: empty log"]


def test_the_messages_stop_at_twenty_and_count_the_rest(small: list[bytes], tmp_path: Path) -> None:
    lines = list(small)
    bad = [n for n, line in enumerate(lines) if b'"tlb.fill"' in line or b'"frame.hand_out"' in line][:30]
    assert len(bad) == 30
    for n in bad:
        lines[n] = lines[n].replace(b'"log_level":"debug"', b'"log_level":"loud"')
    log = tmp_path / "run.jsonl"
    log.write_bytes(b"".join(lines))
    problems = schema.check_log(log)
    assert len(problems) == 21 and problems[-1] == "... and 10 more problems"
    assert problems[0].startswith(f"{log}:{bad[0] + 1}: ")


def test_check_takes_a_schedule_too(real: dict[str, Any], tmp_path: Path) -> None:
    assert schema.check(real["schedule_path"]).ok
    bad = tmp_path / "bad.schedule.json"
    bad.write_bytes(orjson.dumps(dict(real["schedule"], fallback="lucky")))
    assert schema.check(bad).problems == [f"{bad}: schedule: 'fallback' is \"lucky\", expected one of exact, fair"]


def test_the_module_checks_from_the_command_line(real: dict[str, Any], tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "simulator.report.schema", "--check", str(V3_LOG)], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "valid" in ok.stdout and "log-line/3.json" in ok.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(V3_LOG.read_bytes()[:-1])
    r = subprocess.run([sys.executable, "-m", "simulator.report.schema", "--check", str(bad)], capture_output=True)
    assert r.returncode == 1 and b"truncated line" in r.stdout and b"NOT VALID: 1 problem against" in r.stdout


# -- the published line schema and the fast path agree with jsonschema ---------------------------------------


def test_the_published_line_schema_judges_lines_as_check_log_does(small: list[bytes]) -> None:
    v = Draft202012Validator(schema.load(f"log-line-{LOG_SCHEMA_VERSION}.json"))
    for line in small:
        ev = orjson.loads(line)
        assert [e.message for e in v.iter_errors(ev)] == [], ev["event"]
    ev = orjson.loads(small[_at(small, "pte.write")])
    assert not v.is_valid(ev | {"old": 16})
    assert not v.is_valid(ev | {"event": "pte.wrote"})
    assert not v.is_valid({k: x for k, x in ev.items() if k != "table"})
    v3 = Draft202012Validator(schema.load("log-line-3.json"))
    assert all(v3.is_valid(orjson.loads(line)) for line in V3_LOG.read_bytes().splitlines())


ODD_VALUES = [None, -1, 0, 1, 2**64, 1.5, True, "", "x", "0x1f", [], [1], {}, {"a": 1}]


def test_the_fast_check_never_passes_what_jsonschema_rejects(small: list[bytes]) -> None:
    samples: dict[str, dict[str, Any]] = {}
    for line in [*small, *V3_LOG.read_bytes().splitlines()]:
        ev = orjson.loads(line)
        samples.setdefault(ev["event"], ev)
    checked = 0
    for version in READABLE_VERSIONS:
        for name, ev in samples.items():
            fast = schema._fast_check(name, version)
            if fast is None:
                continue
            val = schema._validator(name, version)
            variants = [ev, {**ev, "extra": 1}]
            variants += [{k: x for k, x in ev.items() if k != key} for key in ev]
            variants += [{**ev, key: odd} for key in ev for odd in ODD_VALUES]
            cases = schema.EVENTS[name].cases
            if cases is not None:  # hypercall: each op with the fields of another
                variants += [{**ev, cases[0]: value} for value in cases[1]]
            for m in variants:
                if fast(m):
                    checked += 1
                    assert val.is_valid(m), (version, name, m)
    assert checked > 100


def test_the_fast_check_takes_the_bulk_of_a_log(real: dict[str, Any]) -> None:
    for name in ("tlb.fill", "tlb.gone", "frame.hand_out", "frame.assign", "frame.free", "put_page", "pte.write"):
        assert schema._fast_check(name, LOG_SCHEMA_VERSION) is not None, name
    lines = real["log"].read_bytes().splitlines()
    fast = 0
    for line in lines:
        ev = orjson.loads(line)
        check = schema._fast_check(ev["event"], LOG_SCHEMA_VERSION)
        fast += bool(check is not None and check(ev))
    assert fast >= 0.99 * len(lines)
