"""The oracle invents nothing: a stale use is a violation only where a frame's new life makes it harmful.

Hand-built events on a bare machine (memory, one hart, the oracle), no hypervisor:
the hand-out window, the scrub, the hand-over to the new owner, its first store,
and the background scrub of a free frame.
"""

from __future__ import annotations

from types import SimpleNamespace

from simulator.engine.log import EventLog
from simulator.engine.oracle import Oracle
from simulator.riscv import memory as M
from simulator.riscv.observer import Observer
from simulator.riscv.pte import SV39X4, make_leaf_pte
from simulator.riscv.tlb import TlbEntry, tlb_key

GFN, TABLE = 0x10, 0x20


class _Conductor:
    seq = 0
    current = None


def _machine() -> tuple[Oracle, M.Memory, _Conductor]:
    conductor = _Conductor()
    mem = M.Memory(4096, Observer())
    harts = [SimpleNamespace(vmid=1, hgatp_clock=0, speculating=False, current_job=None, root_mfn=0)]
    oracle = Oracle(mem, conductor, EventLog(None, conductor), harts, SV39X4, [])  # type: ignore[arg-type]
    mem.observer = oracle
    return oracle, mem, conductor


def _translation(mem: M.Memory, conductor: _Conductor, mfn: int) -> TlbEntry:
    """Frame ``mfn`` given to dom1 and mapped at GFN; a hart caches the leaf."""
    mem.hand_out(mfn, M.DOMAIN, 1, "dom1 RAM")
    mem.assign(mfn, 1)
    mem.hand_out(TABLE, M.TABLE, M.NO_OWNER, "p2m table")
    pte = make_leaf_pte(mfn, 0b110)
    mem.write_pte(TABLE, 0, pte)
    e = TlbEntry(tlb_key(1, 0, GFN), True, 1, 0, GFN, mfn, 0b110, mem.clock, TABLE, 0, pte, 0, conductor.seq, ())
    e.set_source(mem.table(TABLE))
    return e


def _step(conductor: _Conductor, n: int = 1) -> None:
    conductor.seq += n


def _reuse(mem: M.Memory, conductor: _Conductor, mfn: int) -> None:
    """The mapping goes, the frame is freed and handed out again (for dom2)."""
    _step(conductor)
    mem.write_pte(TABLE, 0, 0)
    _step(conductor)
    mem.retire(mfn, M.FREE, "freed")
    _step(conductor)
    mem.hand_out(mfn, M.DOMAIN, 2, "dom2 RAM")


def test_a_stale_read_in_the_hand_out_window_is_a_warning() -> None:
    oracle, mem, c = _machine()
    e = _translation(mem, c, 0x100)
    _reuse(mem, c, 0x100)
    oracle.on_reused_use(0, "leaf", e, 0x100, GFN, False)  # before the scrub
    mem.clear_page(0x100, "scrubbed for dom2 RAM")
    oracle.on_reused_use(0, "leaf", e, 0x100, GFN, False)  # after the scrub, not yet dom2's
    mem.assign(0x100, 2)
    assert oracle.violation_count == 0 and oracle.warning_count == 2
    assert "not yet given away" in oracle.warnings[0]


def test_a_stale_write_after_the_scrub_survives_into_the_new_owner() -> None:
    oracle, mem, c = _machine()
    e = _translation(mem, c, 0x100)
    _reuse(mem, c, 0x100)
    mem.clear_page(0x100, "scrubbed for dom2 RAM")
    _step(c, 5)
    oracle.on_reused_use(0, "leaf", e, 0x100, GFN, True)  # lands after the scrub ...
    assert oracle.violation_count == 0  # ... pending: the frame is nobody's yet
    _step(c, 5)
    mem.assign(0x100, 2)  # ... and dom2 gets it with the write in it
    assert oracle.violation_count == 1
    v = oracle.violations[0]
    assert v.cls == "reused-other-domain" and v.mfn == 0x100 and "survives" in v.headline
    kinds = [k for _, _, k, _ in v.chain]
    assert kinds.index("scrub") < kinds.index("use") < kinds.index("assign")


def test_a_stale_write_before_the_scrub_is_wiped() -> None:
    oracle, mem, c = _machine()
    e = _translation(mem, c, 0x100)
    _reuse(mem, c, 0x100)
    oracle.on_reused_use(0, "leaf", e, 0x100, GFN, True)  # before the scrub: wiped
    mem.clear_page(0x100, "scrubbed for dom2 RAM")
    mem.assign(0x100, 2)
    assert oracle.violation_count == 0 and oracle.warning_count == 1


def _given_to_dom2() -> tuple[Oracle, M.Memory, TlbEntry]:
    """dom1's stale translation, and its frame scrubbed and given to dom2."""
    oracle, mem, c = _machine()
    e = _translation(mem, c, 0x100)
    _reuse(mem, c, 0x100)
    mem.clear_page(0x100, "scrubbed for dom2 RAM")
    mem.assign(0x100, 2)
    return oracle, mem, e


def test_once_the_new_owner_has_it_reads_of_its_data_and_any_write_are_violations() -> None:
    oracle, mem, e = _given_to_dom2()
    oracle.on_reused_use(0, "leaf", e, 0x100, GFN, False)  # dom2 stored nothing yet: zeros
    assert oracle.violation_count == 0 and "before its new owner stored anything" in oracle.warnings[-1]
    mem.written[0x100] = 1  # dom2 writes its data
    oracle.on_reused_use(0, "leaf", e, 0x100, GFN, False)
    assert oracle.violation_count == 1 and oracle.violations[0].cls == "reused-other-domain"


def test_a_write_to_a_new_owners_frame_is_a_violation_at_once() -> None:
    oracle, _mem, e = _given_to_dom2()
    oracle.on_reused_use(0, "leaf", e, 0x100, GFN, True)
    assert oracle.violation_count == 1


def test_a_stale_write_after_a_background_scrub_is_a_violation_when_the_frame_is_reused() -> None:
    oracle, mem, c = _machine()
    e = _translation(mem, c, 0x100)
    _step(c)
    mem.write_pte(TABLE, 0, 0)
    mem.retire(0x100, M.FREE, "freed")
    _step(c, 10)
    mem.clear_page(0x100, "background scrub (scrub_free_pages)")  # the idle scrubber: clean now
    _step(c, 10)
    oracle.on_stale_use(0, e, 0x100, GFN, True, True)  # a stale write into the clean free frame
    assert oracle.violation_count == 0 and oracle.warning_count == 1  # free, not reused: a warning
    _step(c, 10)
    mem.hand_out(0x100, M.DOMAIN, 2, "dom2 RAM")  # clean: handed out with no scrub
    mem.assign(0x100, 2)
    assert oracle.violation_count == 1
    v = oracle.violations[0]
    assert "idle scrubber" in v.missing and "without another scrub" in v.missing


def test_the_same_write_before_the_background_scrub_is_wiped() -> None:
    oracle, mem, c = _machine()
    e = _translation(mem, c, 0x100)
    mem.write_pte(TABLE, 0, 0)
    mem.retire(0x100, M.FREE, "freed")
    oracle.on_stale_use(0, e, 0x100, GFN, True, True)  # dirty frame: the scrub will wipe it
    mem.clear_page(0x100, "background scrub (scrub_free_pages)")
    mem.hand_out(0x100, M.DOMAIN, 2, "dom2 RAM")
    mem.assign(0x100, 2)
    assert oracle.violation_count == 0


def test_a_walk_through_a_reused_table_is_a_violation_only_once_it_holds_new_ptes() -> None:
    oracle, mem, _c = _machine()
    mem.hand_out(0x300, M.TABLE, M.NO_OWNER, "p2m table")
    mem.assign(0x300, M.NO_OWNER)
    ghost = mem.clock
    mem.retire(0x300, M.POOL, "p2m_free_page")
    mem.hand_out(0x300, M.TABLE, M.NO_OWNER, "p2m table")
    mem.clear_page(0x300, "clear_and_clean_page")
    mem.assign(0x300, M.NO_OWNER)
    via = TlbEntry(tlb_key(1, 1, GFN), False, 1, 1, 0, 0x300, 0, ghost, TABLE, 0, 1, 0, 0, ())
    oracle.on_reused_use(0, "walk-through-reused-table", via, 0x300, GFN, False, 0)  # reads a zero PTE
    assert oracle.violation_count == 0 and "it faults" in oracle.warnings[-1]
    oracle.on_reused_use(0, "walk-through-reused-table", via, 0x300, GFN + 1, False, make_leaf_pte(0x400, 2))
    assert oracle.violation_count == 1 and oracle.violations[0].cls == "walk-through-reused-table"
