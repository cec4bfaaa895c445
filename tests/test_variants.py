"""Variants: your change to the model as a file, checked when applied, compared with a baseline.

The variant files are written here: a correct one (gather the tables
p2m_free_subtree frees until p2m_write_unlock, one flush for all) and a wrong
one (the same, but the flush is dropped), and the trap a new user hits first
(an async method replaced by a plain function).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.engine.simulation import Config

GATHER = '''"""Gather the tables p2m_free_subtree frees until p2m_write_unlock: one flush for all of them."""
from simulator import register_variant


def apply(xen):
    pending = []
    inside = [0] * len(xen.harts)
    free_subtree, flush_sync = xen.p2m_free_subtree, xen.p2m_tlb_flush_sync
    free_page, write_unlock = xen.p2m_free_page, xen.p2m_write_unlock

    async def p2m_free_subtree(p2m, entry, ctx):
        cpu = xen.smp_processor_id()
        inside[cpu] += 1
        try:
            await free_subtree(p2m, entry, ctx)
        finally:
            inside[cpu] -= 1

    async def p2m_tlb_flush_sync(p2m):
        if not inside[xen.smp_processor_id()]:
            await flush_sync(p2m)

    async def p2m_free_page(p2m, pg):
        if inside[xen.smp_processor_id()]:
            pending.append((p2m, pg))
        else:
            await free_page(p2m, pg)

    async def p2m_write_unlock(p2m):
        mine = [pg for q, pg in pending if q is p2m]
        pending[:] = [(q, pg) for q, pg in pending if q is not p2m]
        if {free_first}:  # wrong: the tables go back to the pool before the flush
            for pg in mine:
                await free_page(p2m, pg)
        await write_unlock(p2m)
        if not {free_first}:
            for pg in mine:
                await free_page(p2m, pg)

    xen.p2m_free_subtree = p2m_free_subtree
    xen.p2m_tlb_flush_sync = p2m_tlb_flush_sync
    xen.p2m_free_page = p2m_free_page
    xen.p2m_write_unlock = p2m_write_unlock


register_variant("{name}", __doc__, apply)
'''

PLAIN = """from simulator import register_variant


def apply(xen):
    def p2m_tlb_flush(p2m):
        return None

    xen.p2m_tlb_flush = p2m_tlb_flush


register_variant("plain-flush", "a plain function where the model has an async one", apply)
"""


def p2msim(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "gather.py").write_text(GATHER.format(free_first="False", name="gather"))
    (tmp_path / "lost.py").write_text(GATHER.format(free_first="True", name="gather-free-first"))
    (tmp_path / "plain.py").write_text(PLAIN)
    (tmp_path / "empty.py").write_text("x = 1\n")
    (tmp_path / "broken.py").write_text("from simulator import register_variant\n\n1 / 0\n")
    return tmp_path


def test_a_correct_variant_runs_clean_and_replays(files: Path) -> None:
    r = p2msim("run", "teardown-under-load", "--variant", "gather.py", "--log", "g.jsonl", cwd=files)
    assert r.returncode == 0 and "CLEAN" in r.stdout, r.stdout + r.stderr
    assert "replay: p2msim run teardown-under-load --seed 0 --variant gather.py" in r.stdout
    assert p2msim("replay", "g.jsonl", cwd=files).stdout.startswith("REPRODUCED")


def test_a_wrong_variant_is_found_with_its_cause(files: Path) -> None:
    r = p2msim("run", "teardown-under-load", "--variant", "lost.py", "--strict", "--json", cwd=files)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert {(v["cause"]["defence"], v["cause"]["case"]) for v in out["violations"] if v["cause"]} == {
        ("flush-before-free", "late/free-before-flush")
    }


@pytest.mark.parametrize(
    ("file", "error"),
    [
        ("plain.py", "variant file plain.py replaces p2m_tlb_flush, an async method, with a plain function ("),
        ("empty.py", "empty.py registers no variant: call register_variant(name, description, apply)"),
        ("broken.py", "broken.py: ZeroDivisionError: division by zero (line 3)"),
        ("none.py", "variant file none.py does not exist"),
    ],
)
def test_a_variant_that_cannot_work_is_one_line(files: Path, file: str, error: str) -> None:
    r = p2msim("run", "pool-churn", "--variant", file, cwd=files)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert error in line
    if file == "plain.py":
        assert line.endswith(f"{files / 'plain.py'}:5): make it `async def` and await what it calls")


def test_a_bug_that_replaces_an_async_method_by_a_plain_one_is_caught_too(files: Path) -> None:
    (files / "w.py").write_text(
        "from simulator.engine.bugs import register_bug\nNAME = 'w'\n\n"
        "def _plain(xen):\n    xen.p2m_free_page = lambda p2m, pg: None\n\n"
        "register_bug('plain-free', 'a plain free', _plain)\n\n"
        "async def main(sim):\n    await sim.elapse(5)\n"
    )
    r = p2msim("run", "w.py", "--bug", "plain-free", cwd=files)
    assert r.returncode == 2 and "bug plain-free replaces p2m_free_page, an async method" in r.stderr


def test_compare_names_what_a_variant_adds(files: Path) -> None:
    args = ("compare", "--seeds", "3", "--workload", "teardown-under-load", "--strict", "--json")
    bad = p2msim(*args, "--variant", "lost.py", cwd=files)
    assert bad.returncode == 1, bad.stderr
    out = json.loads(bad.stdout)
    assert {(c["class"], c["case"]) for c in out["adds"]} == {("stale-free", "late/free-before-flush")}
    assert all(c["replay"].endswith("--variant lost.py --strict") for c in out["adds"])
    good = p2msim(*args, "--variant", "gather.py", cwd=files)
    assert good.returncode == 0, good.stderr
    out = json.loads(good.stdout)
    assert out["adds"] == [] and out["total"]["variant"]["runs"] == 3
    text = p2msim("compare", "--seeds", "2", "--workload", "teardown-under-load", "--variant", "gather.py", cwd=files)
    assert "fences sent" in text.stdout and "the same findings on both sides: none" in text.stdout


def test_no_variant_leaves_the_identity_and_digest_as_they_were() -> None:
    assert "variants" not in Config("pool-churn").identity()
    assert Config("pool-churn", variants=("x.py",)).identity()["variants"] == ["x.py"]
