"""A Xen tree's own p2m.c as the hypervisor (--xen-tree): the same runs as the Python model, its edits found.

The tree is the pinned upstream copy beside the checkout (../shared/xen); edits are made to a
temporary copy, as a user edits their tree.  Tests skip without a C compiler.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from simulator.cli import main as cli_main
from simulator.ctree.build import SOURCES
from simulator.engine.scenario import Scenario, WorkloadError
from simulator.engine.simulation import Config, ConfigError, run
from tests.conftest import simulate

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT.parent / "shared" / "xen" / "xen-c447b7308b"
WORKLOADS = (
    "balloon",
    "foreign-remap",
    "foreign-unmap-reuse",
    "pool-churn",
    "superpage-shatter",
    "teardown-under-load",
    "vcpu-migration",
    "vmid-rollover",
)

pytestmark = [
    pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc): --xen-tree builds the tree's C"),
    pytest.mark.skipif(not TREE.is_dir(), reason="the pinned Xen sources (../shared/xen) are not beside the checkout"),
]


# what the C and the model word differently: an ASSERT's text (the model's says more, the C's gives file:line)
WORDED = {"ASSERT.unchecked": "what", "ASSERT_UNREACHABLE": "where", "printk": "text"}


def _events(path: Path) -> list[list[bytes]]:
    """The log's events step by step (within a step, as a sorted list: the C's probe reports a freed leaf
    before p2m_get_type's ASSERT, the model after), without run.start and run.end (they name the tree)
    and without the wording of ASSERTs and printk."""
    steps: dict[int, list[bytes]] = {}
    for ln in path.read_bytes().splitlines():
        ev = orjson.loads(ln)
        if ev["event"] in ("run.start", "run.end"):
            continue
        ev.pop(WORDED.get(ev["event"], ""), None)
        steps.setdefault(ev["seq"], []).append(orjson.dumps(ev, option=orjson.OPT_SORT_KEYS))
    return [sorted(v) for _k, v in sorted(steps.items())]


@pytest.mark.parametrize(("workload", "seed"), [(w, 1) for w in WORKLOADS] + [("pool-churn", 2)])
def test_the_trees_c_runs_exactly_as_the_upstream_model(workload: str, seed: int, tmp_path: Path) -> None:
    """Differential: the same seed on the Python upstream profile and on the tree's C gives the same log,
    event for event (every PTE store, fence, free and verdict).  pool-churn seed 2 frees a subtree below
    a root entry, where the tree's loop reads past the table (the model follows it: see the fidelity table)."""
    py, c = tmp_path / "py.jsonl", tmp_path / "c.jsonl"
    base = Config(workload, seed=seed, profile="upstream", log=str(py))
    a = run(base)
    b = run(replace(base, log=str(c), xen_tree=str(TREE)))
    sa, sb = a.to_json(), b.to_json()
    assert (sa["verdict"], sa["steps"], sa["stats"]["fences_sent"], sa["stats"]["frames_freed"]) == (
        sb["verdict"],
        sb["steps"],
        sb["stats"]["fences_sent"],
        sb["stats"]["frames_freed"],
    )
    assert [x["title"] for x in a.causes] == [x["title"] for x in b.causes]
    assert _events(py) == _events(c)


def test_the_c_is_deterministic_on_trio_and_asyncio(tmp_path: Path) -> None:
    cfg = Config("superpage-shatter", seed=3, xen_tree=str(TREE))
    logs = []
    for backend in ("trio", "asyncio", "trio"):
        p = tmp_path / f"{backend}-{len(logs)}.jsonl"
        run(replace(cfg, backend=backend, log=str(p)))
        logs.append(p.read_bytes())
    assert logs[0] == logs[1] == logs[2]


def test_windows_are_credited_to_the_c_functions() -> None:
    r = run(Config("teardown-under-load", seed=1, xen_tree=str(TREE)))
    assert r.verdict == "clean"
    assert {"p2m_tlb_flush_sync in p2m_write_unlock", "p2m_tlb_flush_sync in p2m_free_subtree"} <= set(
        r.windows["closed_by"]
    )


# -- edits a Xen developer makes to their tree -----------------------------------------------------------

FLUSH_FREE = "    p2m_tlb_flush_sync(p2m);\n\n    p2m_free_table(p2m, pg);\n}"
UNLOCK = "    p2m_tlb_flush_sync(p2m);\n\n    write_unlock(&p2m->lock);\n}"
FREE_LIST = "    while ( (pg = page_list_remove_head(&p2m->deferred)) )\n        paging_free_page(p2m->domain, pg);\n"


def edited_tree(dst: Path, edit: str) -> Path:
    """A copy of the pinned tree's P2M sources with ``edit`` made to them."""
    x = dst / "xen"
    for rel in SOURCES:
        (x / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(TREE / "xen" / rel, x / rel)
    if edit.endswith("+fix-underflow"):  # paging_alloc_page decrements total_pages only for a page it takes
        edit = edit.removesuffix("+fix-underflow")
        pc = (x / "arch/riscv/paging.c").read_text()
        old = "    d->arch.paging.total_pages--;\n    spin_unlock"
        assert old in pc
        (x / "arch/riscv/paging.c").write_text(
            pc.replace(old, "    if ( pg )\n        d->arch.paging.total_pages--;\n    spin_unlock")
        )
    c = (x / "arch/riscv/p2m.c").read_text()
    h = (x / "arch/riscv/include/asm/p2m.h").read_text()
    assert FLUSH_FREE in c and UNLOCK in c
    if edit == "drop-flush":  # no p2m_tlb_flush_sync before the table goes to the pool
        c = c.replace(FLUSH_FREE, "    p2m_free_table(p2m, pg);\n}")
    elif edit == "flush-after-free":  # the flush moved after p2m_free_table
        c = c.replace(FLUSH_FREE, "    p2m_free_table(p2m, pg);\n\n    p2m_tlb_flush_sync(p2m);\n}")
    elif edit.startswith("defer"):  # the seed's XXX: tables kept on a list that p2m_write_unlock frees
        h = h.replace(
            "    struct page_list_head pages;\n",
            "    struct page_list_head pages;\n\n    /* tables unlinked under the lock, freed at unlock */\n"
            "    struct page_list_head deferred;\n",
        )
        c = c.replace(
            FLUSH_FREE,
            "    p2m_free_metadata_page(p2m, &pg->v.md.pg);\n    page_list_del(pg, &p2m->pages);\n"
            "    page_list_add_tail(pg, &p2m->deferred);\n}",
        )
        decl = "    struct page_info *pg;\n\n"
        if edit == "defer-free-before-flush":
            c = c.replace(UNLOCK, decl + FREE_LIST + "\n" + UNLOCK)
        else:
            c = c.replace(
                UNLOCK, decl + "    p2m_tlb_flush_sync(p2m);\n\n" + FREE_LIST + "\n    write_unlock(&p2m->lock);\n}"
            )
    elif edit == "null-table":  # a NULL dereference in the C: the machine would crash, p2msim must not
        c = c.replace(
            FLUSH_FREE,
            "    p2m_tlb_flush_sync(p2m);\n\n    if ( level == 1 ) pg = NULL;\n    p2m_free_table(p2m, pg);\n}",
        )
    elif edit == "broken":
        c = c.replace("    p2m->need_flush = false;", "    p2m->need_flush = false", 1)
    (x / "arch/riscv/p2m.c").write_text(c)
    (x / "arch/riscv/include/asm/p2m.h").write_text(h)
    return dst


def test_a_callback_from_the_trees_c_is_explained_by_the_c_functions_it_was_called_from() -> None:
    """c_stack crosses a C callback (paging_free_page called by the tree's p2m_free_page): its C callers,
    then the Python that started the C.  So the tree's over-read is blamed on its p2m_free_subtree, with
    the free's path, exactly as on the model (it named the hypercall: the walk stopped at the callback)."""
    base = Config("pool-churn", seed=2, profile="upstream+handle_guest_page_faults")
    a, b = run(base), run(replace(base, xen_tree=str(TREE)))
    # (the same causes; a title may differ where the C's own load names no PTE index)
    assert [(x.get("defence"), x.get("function")) for x in a.causes] == [
        (x.get("defence"), x.get("function")) for x in b.causes
    ]
    mapped = [v for v in b.violations if v.cls == "freed-while-mapped"]
    assert mapped and {v.cause.function for v in mapped if v.cause is not None} == {"p2m_free_subtree"}
    assert "in paging_free_page <- p2m_free_page <- p2m_free_table <- p2m_free_subtree" in mapped[0].explain()


def test_after_the_trees_double_free_the_model_and_the_c_break_alike() -> None:
    """The tree's double free of a table runs page_list_del on p2m->pages for a page the freelist holds:
    the model's lists are the C's (xen/mm.h through page_info.list), so both end where the C does, at the
    same step, with the same failed map (a deque once held the page twice, and the model went on)."""
    base = Config("pool-churn", seed=0, profile="upstream+handle_guest_page_faults")
    with pytest.raises(WorkloadError) as model:
        run(base)
    with pytest.raises(WorkloadError) as tree:
        run(replace(base, xen_tree=str(TREE)))
    assert str(model.value) == str(tree.value) and "failed at step 24,949" in str(model.value), str(model.value)


def _hunt(tree: Path, seeds: range, strict: bool = False) -> list[object]:
    out = []
    for s in seeds:
        r = run(Config("teardown-under-load", seed=s, strict=strict, xen_tree=str(tree)))
        assert r.verdict in ("clean", "violation"), r.verdict
        out.append(r)
    return out


@pytest.mark.parametrize(
    ("edit", "strict", "bug", "where"),
    [
        ("drop-flush", False, "deferred-flush-pool-free", "p2m_free_subtree"),
        ("flush-after-free", True, "flush-after-table-free", "p2m_free_subtree"),
        ("defer-free-before-flush", True, None, "p2m_write_unlock"),
    ],
)
def test_an_edit_of_the_c_is_found_with_a_chain_in_the_c(
    edit: str, strict: bool, bug: str | None, where: str, tmp_path: Path
) -> None:
    """Under --profile fixed (the bookkeeping the tree lacks supplied) each unsafe edit is found, and the
    first cause names the C function that freed too early, as the matching catalogued bug of the Python
    model does (the deferral frees in p2m_write_unlock, before its flush)."""
    tree = edited_tree(tmp_path, edit)
    results = _hunt(tree, range(2), strict)
    assert all(r.verdict == "violation" for r in results)  # type: ignore[attr-defined]
    first = results[0].causes[0]  # type: ignore[attr-defined]
    assert f"missing in {where}" in first["title"], first["title"]
    if bug is not None:
        py = run(Config("teardown-under-load", seed=0, strict=strict, bugs=(bug,)))
        assert py.verdict == "violation"
        assert first["title"].split(":")[0] == py.causes[0]["title"].split(":")[0]


def test_the_same_deferral_done_right_and_the_unmodified_tree_are_silent(tmp_path: Path) -> None:
    """The other side: the deferral that flushes before it frees, and the tree as it is, find nothing.

    The deferral holds tables until unlock, so the pool runs dry, and the tree's paging_alloc_page then
    decrements total_pages on an empty freelist: that accounting finding (the tree's own, from its
    paging.c) is all the deferral shows, and with that line fixed too it is silent."""
    for tree in (edited_tree(tmp_path / "defer", "defer-after-flush+fix-underflow"), TREE):
        assert all(r.verdict == "clean" for r in _hunt(tree, range(2), strict=True))  # type: ignore[attr-defined]
    dry = _hunt(edited_tree(tmp_path / "dry", "defer-after-flush"), range(1), strict=True)[0]
    assert dry.verdict == "violation"  # type: ignore[attr-defined]
    assert all("pool" in c["title"] for c in dry.causes)  # type: ignore[attr-defined]


def test_the_foreign_remap_finding_comes_from_the_c() -> None:
    """The tree's own p2m_set_entry/p2m_free_subtree order leaks the foreign reference (release build), or
    trips p2m_get_type's ASSERT, with the tree's file and line (debug build), even on the fixed profile."""
    rel = run(Config("foreign-remap", seed=0, xen_tree=str(TREE)))
    assert rel.verdict == "violation"
    assert "foreign reference" in rel.causes[0]["title"]
    dbg = run(Config("foreign-remap", seed=0, xen_tree=str(TREE), debug_build=True))
    assert dbg.verdict == "violation"
    assert "type > p2m_first_external at xen/arch/riscv/p2m.c:559 in p2m_get_type" in dbg.causes[0]["title"]


def test_bad_trees_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (str(tmp_path / "nowhere"), "no such directory"),
        (str(tmp_path), "not a Xen tree"),
        (str(edited_tree(tmp_path / "broken", "broken")), "xen/arch/riscv/p2m.c:246:5: error"),
    ]
    for tree, want in cases:
        assert cli_main(["run", "teardown-under-load", "--xen-tree", tree]) == 2
        err = capsys.readouterr().err.strip()
        assert want in err and "\n" not in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="replaces p2m_tlb_flush_sync, which comes from the tree's C"):
        run(Config("teardown-under-load", bugs=("no-flush-before-table-free",), xen_tree=str(TREE)))


def test_the_cli_replays_and_compares_trees(tmp_path: Path) -> None:
    """run prints a replay command with --xen-tree; compare puts an edited tree against the base tree."""
    mine = edited_tree(tmp_path, "drop-flush")
    r = subprocess.run(
        [sys.executable, "-m", "simulator", "run", "teardown-under-load", "--xen-tree", str(mine), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1, r.stderr
    assert f"--xen-tree {mine}" in orjson.loads(r.stdout)["replay"]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator",
            "compare",
            "--xen-tree",
            str(mine),
            "--against-tree",
            str(TREE),
            "--workload",
            "teardown-under-load",
            "--seeds",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1, out.stderr
    res = orjson.loads(out.stdout)
    assert res["total"]["baseline"]["failing"] == [] and len(res["total"]["variant"]["failing"]) == 2
    assert any(a["function"] == "p2m_free_subtree" for a in res["adds"])


def test_the_readme_lists_the_functions_that_come_from_the_c() -> None:
    from simulator.ctree.p2m import README_BEGIN, README_END, readme_block

    text = (ROOT / "README.md").read_text()
    assert text.split(README_BEGIN, 1)[1].split(README_END, 1)[0] == readme_block()


def test_a_fault_in_the_c_is_a_panic_finding_not_a_crash(tmp_path: Path) -> None:
    """A NULL dereference in the tree's C stops the machine with a panic that names the C's call chain."""
    r = run(Config("teardown-under-load", seed=0, xen_tree=str(edited_tree(tmp_path, "null-table"))))
    assert r.verdict == "violation"
    assert r.causes[0]["title"].startswith(
        "panic: Xen panicked: the tree's C faulted: SIGSEGV at address 0x20 in p2m_free_metadata_page <- "
        "p2m_free_table <- p2m_free_subtree"
    )
    again = run(Config("teardown-under-load", seed=1, xen_tree=str(TREE)))  # the process goes on as before
    assert again.verdict == "clean"


def test_matrix_knows_which_bugs_the_c_replaces(capsys: pytest.CaptureFixture[str]) -> None:
    """A bug that replaces a function the C provides is skipped by matrix --xen-tree; one that mutates the
    heap, the SBI or the glue runs on the C; compare needs a change to judge."""
    from simulator.hunt.matrix import replaced_from_c

    assert {"p2m_tlb_flush_sync", "p2m_free_subtree"} <= set(replaced_from_c("no-flush-before-table-free"))
    assert replaced_from_c("no-reuse-flush") == [] and replaced_from_c("async-remote-fence") == []
    assert cli_main(["compare", "--workload", "balloon"]) == 2
    err = capsys.readouterr().err.strip()
    assert "compare needs a change to judge: --variant FILE, or --xen-tree DIR" in err and "\n" not in err


# -- vmid.c and the context switch of p2m.c, from the C --------------------------------------------------


@pytest.mark.parametrize(
    ("workload", "seed", "profile", "vmid_bits"),
    [
        ("vmid-rollover", 3, "upstream+handle_guest_page_faults", 2),
        ("vmid-rollover", 3, "fixed", 2),
        ("vcpu-migration", 1, "fixed", 7),
    ],
)
def test_vmid_c_runs_exactly_as_the_model(
    workload: str, seed: int, profile: str, vmid_bits: int, tmp_path: Path
) -> None:
    """With 2 VMID bits every hart runs out of VMIDs again and again: the C's vmid_handle_vmenter,
    vmid_flush_hart, p2m_handle_vmenter and p2m_ctxt_switch_to give the model's log event for event (the
    assignments, the rollovers, the hgatp writes and the fences they ask for), on the tree as it is and with
    the fixed profile's context-switch glue around it (VMID before hgatp, vmid_flush_vcpu on migration)."""
    py, c = tmp_path / "py.jsonl", tmp_path / "c.jsonl"
    base = Config(workload, seed=seed, profile=profile, vmid_bits=vmid_bits, log=str(py), log_level="debug")
    a = run(base)
    b = run(replace(base, log=str(c), xen_tree=str(TREE)))
    assert a.verdict == b.verdict and [x["title"] for x in a.causes] == [x["title"] for x in b.causes]
    events = _events(c)
    assert _events(py) == events
    names = [orjson.loads(e)["event"] for step in events for e in step]
    assert names.count("vmid.assign") > 10 and names.count("hgatp.write") > 10
    if workload == "vmid-rollover":
        assert names.count("vmid.rollover") > 5


def test_a_generation_overflow_in_the_cs_vmid_data_turns_vmids_off() -> None:
    """this_cpu(vmid_data) is the C's: a test sets it as a debugger would, and the C's vmid_flush_hart
    disables VMIDs on the overflow (its printk is logged), as the model's does."""
    from tests.test_upstream import _time_share

    async def main(sim: Scenario) -> None:
        sim.xen.vmid_data[0].generation = (1 << 64) - 1
        sim.xen.vmid_data[0].next_vmid = sim.xen.vmid_data[0].max_vmid + 1
        await _time_share(sim)

    r = simulate(main, pcpus=1, profile="upstream", speculate=0.0, xen_tree=str(TREE))
    assert not r.clean and r.violations[0].cls == "vmid-alias", r.explain()
    assert simulate(main, pcpus=1, profile="fixed", xen_tree=str(TREE)).clean


def test_the_vmid_boot_option_reaches_the_c() -> None:
    """--xen-opt vmid=0 sets the tree's boolean_param: every vCPU runs with VMID 0 and, on upstream, one
    domain uses another's translations; the next simulation in the process has the tree's default again."""
    from tests.test_upstream import _time_share

    tree = {"pcpus": 1, "profile": "upstream", "speculate": 0.0, "xen_tree": str(TREE)}
    off = simulate(_time_share, xen_opts=(("vmid", "0"),), **tree)
    assert any(v.cls == "vmid-alias" and "VMID 0" in v.headline for v in off.violations), off.explain()
    assert simulate(_time_share, **tree).clean


NEW_GENERATION = "    return vmid->vmid == 1;\n"


def test_an_edit_of_vmid_c_is_found_as_the_catalogued_bug_is(tmp_path: Path) -> None:
    """vmid_handle_vmenter that never asks for the flush a new generation needs (the C edit of the catalogued
    vmid-rollover-no-flush) is found under --profile fixed with the same cause; the tree as it is is silent."""
    tree = edited_tree(tmp_path, "none")
    vc = tree / "xen" / "arch/riscv/vmid.c"
    assert NEW_GENERATION in vc.read_text()
    vc.write_text(vc.read_text().replace(NEW_GENERATION, "    return 0;\n"))
    for seed in range(2):
        base = Config("vmid-rollover", seed=seed, vmid_bits=2)
        c = run(replace(base, xen_tree=str(tree)))
        py = run(replace(base, bugs=("vmid-rollover-no-flush",)))
        assert c.verdict == py.verdict == "violation"
        assert c.causes[0]["title"].split(":")[0] == py.causes[0]["title"].split(":")[0], c.causes[0]["title"]
        assert run(replace(base, xen_tree=str(TREE))).verdict == "clean"


def test_arm_broadcast_cannot_replace_the_trees_vmid_c(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["run", "vmid-rollover", "--profile", "arm-broadcast", "--xen-tree", str(TREE)]) == 2
    err = capsys.readouterr().err.strip()
    assert "in place of the tree's vmid.c: it cannot run with --xen-tree" in err and "\n" not in err


def test_matrix_counts_a_broken_workload_once_and_says_why() -> None:
    """On the tree's C pool-churn seed 0 cannot finish (the over-read freed tables it still uses, so a map
    fails): the clean row counts it as one "error" class, and keeps the first message for the reader."""
    from simulator.hunt.matrix import matrix

    out = matrix(seeds=1, clean_seeds=1, jobs=1, bugs=["no-reuse-flush"], workloads=["pool-churn"], xen_tree=str(TREE))
    (row,) = out["clean"]
    assert row["profile"] == "fixed" and row["classes"].get("error") == 1
    assert not any(k.startswith("error:") for k in row["classes"])
    assert row["first_error"].startswith("seed 0: workload pool-churn failed at step ")


def test_compare_names_an_invariant_finding_by_what_it_says() -> None:
    """A finding with no causal case (an invariant) is told apart by its headline, numbers taken out: the
    tree's leaked foreign reference is one cause over its seeds, not a blank 'invariant:  in'."""
    from simulator.hunt.compare import compare

    out = compare((), workloads=["foreign-remap"], seeds=2, jobs=1, xen_tree=str(TREE))
    cases = {a["case"] for a in out["adds"] if a["class"] == "invariant"}
    assert cases and all(c and "0x" not in c for c in cases), out["adds"]
    assert any("the reference it held was never dropped" in c for c in cases)
    assert all(a["seeds"] == 2 for a in out["adds"])
