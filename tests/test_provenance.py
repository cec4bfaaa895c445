"""Replay in the real world: from another directory, after an edit, on changed code; errors that name the
user's own line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]


def p2msim(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simulator", *args], cwd=cwd, capture_output=True, text=True)


def _recorded(tmp_path: Path) -> tuple[Path, Path]:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    shutil.copy(ROOT / "workloads" / "foreign_unmap_reuse.py", here / "mine.py")
    r = p2msim("run", "mine.py", "--bug", "no-reuse-flush", "--log", "run.jsonl", cwd=here)
    assert r.returncode == 1, r.stderr
    return here, there


def test_a_log_records_what_ran_and_replays_from_another_directory(tmp_path: Path) -> None:
    here, there = _recorded(tmp_path)
    start = orjson.loads((here / "run.jsonl").read_bytes().split(b"\n", 1)[0])
    src = start["sources"]
    assert src["workload"]["path"] == str((here / "mine.py").resolve()) and len(src["workload"]["hash"]) == 16
    assert len(src["model"]) == 16
    for source in ("../here/run.jsonl", "../here/run.jsonl.schedule.json"):
        r = p2msim("replay", source, cwd=there)  # mine.py is not here: found where it was recorded
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("REPRODUCED: ") and "changed" not in r.stdout


def test_an_edited_workload_is_named_as_the_change_not_as_a_divergence(tmp_path: Path) -> None:
    here, there = _recorded(tmp_path)
    mine = here / "mine.py"
    mine.write_text(mine.read_text().replace('"reserve": 8,', '"reserve": 9,'))
    r = p2msim("replay", "../here/run.jsonl", cwd=there)
    assert r.returncode == 1
    assert r.stdout.startswith("CHANGED: ") and "part ways" not in r.stdout
    assert f"the workload changed since this was recorded ({mine.resolve()}: hash " in r.stdout
    j = orjson.loads(p2msim("replay", "../here/run.jsonl", "--json", cwd=there).stdout)
    assert not j["reproduced"] and j["changed"] and "workload changed" in j["changed"][0]


def test_a_changed_model_is_said_even_when_the_run_is_the_same(tmp_path: Path) -> None:
    here, there = _recorded(tmp_path)
    sched = here / "run.jsonl.schedule.json"
    data = orjson.loads(sched.read_bytes())
    data["sources"]["model"] = "0" * 16  # as if recorded by other model code
    moved = there / "copy.schedule.json"
    moved.write_bytes(orjson.dumps(data))
    r = p2msim("replay", "copy.schedule.json", cwd=there)
    assert r.returncode == 0 and r.stdout.startswith("REPRODUCED: ")
    assert "note: the model changed since this was recorded (source hash 0000000000000000 -> " in r.stdout


BROKEN = """
DOMAINS = (1,)


def helper(d):
    return d.vcpus[7]


async def main(sim):
    d = await sim.create_domain(1, vcpus=1, pool_pages=4)
    helper(d)
"""


def test_an_error_in_the_users_code_names_its_line_and_traceback_shows_it_all(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(BROKEN)
    r = p2msim("run", "bad.py", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"list index out of range (at {tmp_path / 'bad.py'}:6 in helper)" in r.stderr
    assert "--traceback shows the whole traceback" in r.stderr and "Traceback" not in r.stderr
    t = p2msim("run", "bad.py", "--traceback", cwd=tmp_path)
    assert t.returncode == 2 and "Traceback (most recent call last)" in t.stderr
    assert 'bad.py", line 11, in main' in t.stderr and t.stderr.rstrip().endswith("in helper)")
