"""Race windows: counted from the machine, credited to what really closed them, and VACUOUS when none opened."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from simulator.engine import windows
from simulator.engine.simulation import Config, run

ROOT = Path(__file__).resolve().parents[1]
FREE_SUBTREE = "p2m_tlb_flush_sync in p2m_free_subtree"
REUSE_FLUSH = "filtered_flush_tlb_mask in alloc_heap_pages"


def test_the_readme_table_is_the_code() -> None:
    readme = (ROOT / "README.md").read_text()
    assert windows.table() in readme
    for name in windows.WINDOWS:
        assert f"`{name}`" in readme


def test_each_defence_is_credited_only_while_it_exists() -> None:
    """The flush before the table free closes windows on fixed; with it removed, it closes none, and
    the windows it closed are now reused-cached (found by the oracle: a violation)."""
    fixed = run(Config(workload="teardown-under-load", seed=0))
    assert fixed.verdict == "clean"
    assert fixed.windows["closed_by"].get(FREE_SUBTREE, 0) > 0
    assert "reused-cached" not in fixed.windows["opened"]
    bug = run(Config(workload="teardown-under-load", seed=0, bugs=("no-flush-before-table-free",)))
    assert bug.verdict == "violation"
    assert FREE_SUBTREE not in bug.windows["closed_by"]
    assert bug.windows["opened"].get("reused-cached", 0) > 0
    assert bug.windows["opened"].get("used-reused", 0) > 0


def test_the_reuse_flush_closes_the_reused_windows_of_foreign_unmaps() -> None:
    fixed = run(Config(workload="foreign-unmap-reuse", seed=1))
    assert fixed.verdict == "clean" and fixed.windows["opened"]["reused-cached"] > 0
    assert fixed.windows["closed_by"][REUSE_FLUSH] > 0
    bug = run(Config(workload="foreign-unmap-reuse", seed=1, bugs=("no-reuse-flush",)))
    assert REUSE_FLUSH not in bug.windows["closed_by"] and bug.verdict == "violation"


def test_vmid_reuse_with_live_entries_is_a_window_the_switch_flush_closes() -> None:
    r = run(Config(workload="vmid-rollover", seed=2, vmid_bits=2))
    assert r.verdict == "clean"
    assert r.windows["opened"]["vmid-alias-cached"] > 0
    assert any("in p2m_ctxt_switch_to" in d or "in p2m_handle_vmenter" in d for d in r.windows["closed_by"])
    wide = run(Config(workload="vmid-rollover", seed=2, vmid_bits=7))  # no VMID is ever reused
    assert "vmid-alias-cached" not in wide.windows["opened"]


def test_windows_do_not_depend_on_the_backend() -> None:
    a = run(Config(workload="pool-churn", seed=3, backend="trio"))
    b = run(Config(workload="pool-churn", seed=3, backend="asyncio"))
    assert a.windows == b.windows and a.windows["opened"]
    assert a.digest == b.digest


QUIET = """
DOMAINS = (1,)

async def main(sim):
    d = await sim.create_domain(1, vcpus=1, pool_pages=4)
    await sim.populate(d, 0x10, 8)
    await sim.run_vcpu(d.vcpus[0], 1, sim.pattern([(0x10, 8)]))
    await sim.elapse(2000)
"""

RACY = """
DOMAINS = (1,)

async def main(sim):
    d = await sim.create_domain(1, vcpus=1, pool_pages=4)
    await sim.populate(d, 0x10, 8)
    await sim.run_vcpu(d.vcpus[0], 1, sim.pattern([(0x10, 8)]))
    await sim.elapse(500)
    await sim.on(0, "decrease_reservation", sim.xen.decrease_reservation, d, 0x10, 8)
    await sim.elapse(500)
"""


def _cli(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "w.py"
    f.write_text(body)
    return subprocess.run(
        [sys.executable, "-m", "simulator", "run", str(f), "--pcpus", "2"], capture_output=True, text=True
    )


def test_a_run_that_opened_no_window_is_vacuous_and_exits_5(tmp_path: Path) -> None:
    out = _cli(tmp_path, QUIET)
    assert out.returncode == 5, out.stdout + out.stderr
    assert "VACUOUS: no violation, but no race window opened" in out.stdout
    assert "CLEAN" not in out.stdout


def test_the_same_guest_unmapping_under_its_vcpu_is_clean_and_says_why(tmp_path: Path) -> None:
    out = _cli(tmp_path, RACY)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "CLEAN: no violation" in out.stdout
    m = re.search(r"race windows: ([\d,]+) stale TLB entries \((.*)\), removed by\n +(\S.*?) +([\d,]+)", out.stdout)
    assert m is not None, out.stdout
    assert "p2m_tlb_flush_sync in p2m_write_unlock" in out.stdout or "in decrease_reservation" in out.stdout


def test_a_free_that_races_its_fence_is_counted_as_such() -> None:
    """With the remote fence asynchronous the frame is freed while the fence is on its way (the window the
    synchronous flush closes); on fixed no free ever happens while the fence that removes the entry flies."""
    bug = run(Config(workload="teardown-under-load", seed=0, bugs=("async-remote-fence",)))
    assert bug.windows["in_flight"].get("freed-cached", 0) + bug.windows["in_flight"].get("reused-cached", 0) > 0
    fixed = run(Config(workload="teardown-under-load", seed=0))
    assert fixed.windows["in_flight"] == {}
