"""`p2msim inspect`: summaries, timelines, filters, and logs that are not what they should be."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from simulator.cli import main as cli_main
from simulator.engine.log import LOG_SCHEMA_VERSION
from simulator.engine.simulation import Config, run


@pytest.fixture(scope="module")
def failing_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log = tmp_path_factory.mktemp("logs") / "run.jsonl"
    r = run(Config("teardown-under-load", seed=0, bugs=("no-flush-before-table-free",), log=str(log)))
    assert r.violations
    return log


def test_summary_names_the_run_and_its_violations(failing_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["inspect", str(failing_log)]) == 0
    out = capsys.readouterr().out
    assert "teardown-under-load  seed 0  profile fixed" in out
    assert "bugs no-flush-before-table-free" in out
    assert "violations: " in out and "walk-through-reused-table" in out
    assert f"p2msim inspect {failing_log} --violation 1" in out


def test_summary_json(failing_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["inspect", str(failing_log), "--json"]) == 0
    s = orjson.loads(capsys.readouterr().out)
    assert s["schema"] == LOG_SCHEMA_VERSION and s["run"]["seed"] == 0 and s["stop"] == "done"
    assert s["findings"] == len(s["violations"]) >= 1 and s["violation_count"] >= s["findings"]
    assert s["events"]["run.start"] == 1 and s["events"]["oracle.violation"] == s["findings"]
    assert sum(c["violations"] for c in s["causes"]) == s["findings"]
    assert s["lines"] == sum(s["events"].values())


def test_violation_timeline_shows_the_chain_and_the_missing_step(
    failing_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["inspect", str(failing_log), "--violation", "1"]) == 0
    out = capsys.readouterr().out
    for word in ("fill:", "unmap:", "free:", "reuse:", "stale use:"):
        assert word in out
    assert "MISSING OR LATE: no p2m_tlb_flush between the unlink" in out
    assert "h0 h1 h2 h3" in out  # one lane per hart
    assert cli_main(["inspect", str(failing_log), "--violation", "1", "--json"]) == 0
    t = orjson.loads(capsys.readouterr().out)
    kinds = [e["kind"] for e in t["timeline"] if e["chain"]]
    assert kinds[0] == "fill" and kinds[-1] == "use" and {"unmap", "free", "reuse"} <= set(kinds)
    seqs = [e["seq"] for e in t["timeline"]]
    assert seqs == sorted(seqs)


def test_timeline_filters(failing_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["inspect", str(failing_log), "--hart", "3", "--event", "fence.", "--json"]) == 0
    evs = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert evs and all(e["hart"] == 3 and e["event"].startswith("fence.") for e in evs)
    assert cli_main(["inspect", str(failing_log), "--mfn", "66", "--from", "4000", "--to", "5000", "--json"]) == 0
    evs = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert evs and all(4000 <= e["seq"] <= 5000 for e in evs)
    assert all(e.get("mfn") == 66 or 66 in e.get("path", ()) for e in evs)
    assert cli_main(["inspect", str(failing_log), "--gfn", str(0x10000), "--dom", "1", "--json"]) == 0
    assert capsys.readouterr().out == ""  # nothing happened at that gfn


def test_a_missing_violation_number_is_an_error(failing_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["inspect", str(failing_log), "--violation", "999"]) == 2
    assert "no violation 999" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda lines: [*lines[:5], b'{"seq": 3, "hart": 1, "event"', *lines[6:]], ":6: not valid JSON"),
        (lambda lines: [*lines[:-1], lines[-1][:-1]], "truncated line"),
        (lambda lines: [b'{"seq":0,"hart":null,"event":"tlb.fill"}', *lines[1:]], ":1: the first line is 'tlb.fill'"),
        (lambda lines: [*lines[:3], b"[1, 2, 3]", *lines[4:]], ":4: not a p2msim event"),
        (lambda lines: [], "empty log"),
    ],
)
def test_a_corrupt_log_is_one_line_naming_the_line(
    failing_log: Path, tmp_path: Path, damage, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = failing_log.read_bytes().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(x + b"\n" for x in damage(lines))[: None if "truncated" not in words else -1])
    assert cli_main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_a_million_line_log_is_summarised_in_bounded_memory(tmp_path: Path) -> None:
    log = tmp_path / "big.jsonl"
    with log.open("wb") as fh:
        fh.write(
            orjson.dumps(
                {
                    "seq": 0,
                    "hart": None,
                    "event": "run.start",
                    "v": LOG_SCHEMA_VERSION,
                    "version": "0.1.0",
                    "config": {"workload": "synthetic", "seed": 1, "pcpus": 4},
                }
            )
            + b"\n"
        )
        line = b'{"seq":%d,"hart":%d,"event":"tlb.fill","leaf":true,"vmid":1,"level":0,"gfn":%d,"mfn":%d,"path":[65]}\n'
        for i in range(1, 1_000_000):
            fh.write(line % (i, i & 3, i & 0xFFFF, i & 0xFFF))
    # VmHWM, the peak of this process's own memory: ru_maxrss would count the parent's RSS at fork
    # (it survives exec), which is the size of the test process that ran the tests before this one
    code = (
        "import sys\n"
        "from simulator.cli import main\n"
        "rc = main(['inspect', sys.argv[1], '--json'])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(int(hwm.split()[1]))\n"
        "sys.exit(rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(log)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary, rss_kib = r.stdout.splitlines()
    assert orjson.loads(summary)["lines"] == 1_000_000
    assert int(rss_kib) < 150 * 1024, f"inspect used {int(rss_kib) // 1024} MiB for a 1M-line log"
