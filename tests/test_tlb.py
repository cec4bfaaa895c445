"""The hart-private G-stage TLB: keys, fills, lookups, seeded eviction and HFENCE.GVMA."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.riscv.tlb import Tlb, TlbEntry, tlb_key


def entry(vmid: int, level: int, gfn: int, *, leaf: bool = True, ppn: int | None = None, seq: int = 0) -> TlbEntry:
    """An entry as the walker builds it: gfn_base aligned to the level, key from (vmid, level, gfn)."""
    base = gfn >> (9 * level) << (9 * level)
    if ppn is None:
        ppn = 0x1000 + base
    return TlbEntry(
        tlb_key(vmid, level, gfn),
        leaf,
        vmid,
        level,
        base,
        ppn,
        0x6 if leaf else 0,
        0,
        0x10,
        gfn & 511,
        0,
        0x20,
        seq,
        (),
    )


def make_tlb(leaf: int = 64, nonleaf: int = 16, seed: int = 0) -> Tlb:
    return Tlb(leaf, nonleaf, random.Random(seed))


def leaf_lookup(tlb: Tlb, vmid: int, gfn: int) -> TlbEntry | None:
    """What the hart's hot path does: one dict probe per leaf level (4K, 2M, 1G)."""
    for level in (0, 1, 2):
        e = tlb.leaf_entries.get(tlb_key(vmid, level, gfn))
        if e is not None:
            return e
    return None


def check_cache(cache) -> None:  # type: ignore[no-untyped-def]
    """The _Cache bookkeeping agrees with itself."""
    assert len(cache.keys) == len(cache.entries) == len(cache.pos)
    assert len(cache.keys) <= cache.capacity
    assert set(cache.keys) == set(cache.entries)
    for i, k in enumerate(cache.keys):
        assert cache.pos[k] == i
        assert cache.entries[k].key == k


# -- keys ----------------------------------------------------------------------------


def test_tlb_key_literal() -> None:
    # ((vmid << 3 | level) << 48) | gfn >> 9*level
    assert tlb_key(0, 0, 0x12345) == 0x12345
    assert tlb_key(1, 0, 0x12345) == (8 << 48) | 0x12345
    assert tlb_key(1, 1, 0x12345) == (9 << 48) | 0x91
    assert tlb_key(2, 2, 0x12345) == (18 << 48) | 0
    assert tlb_key(0x3FFF, 4, (1 << 47) - 1) == (((0x3FFF << 3) | 4) << 48) | ((1 << 11) - 1)


def test_tlb_key_same_for_every_gfn_of_a_superpage() -> None:
    assert tlb_key(3, 1, 0x400) == tlb_key(3, 1, 0x5FF)
    assert tlb_key(3, 1, 0x400) != tlb_key(3, 1, 0x600)
    assert tlb_key(3, 2, 0x40000) == tlb_key(3, 2, 0x7FFFF)
    assert tlb_key(3, 2, 0x40000) != tlb_key(3, 2, 0x80000)


@given(
    a=st.tuples(st.integers(0, 0x3FFF), st.integers(0, 4), st.integers(0, (1 << 47) - 1)),
    b=st.tuples(st.integers(0, 0x3FFF), st.integers(0, 4), st.integers(0, (1 << 47) - 1)),
)
def test_tlb_keys_distinct_for_distinct_tags(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    (va, la, ga), (vb, lb, gb) = a, b
    same_tag = (va, la, ga >> (9 * la)) == (vb, lb, gb >> (9 * lb))
    assert (tlb_key(*a) == tlb_key(*b)) == same_tag


def test_entry_constructor_derives_delta() -> None:
    e = entry(1, 1, 0x1234, ppn=0x8000)
    assert e.gfn_base == 0x1200
    assert e.delta == 0x8000 - 0x1200
    assert e.leaf and e.level == 1 and e.vmid == 1
    assert e.src_table is None and not e.reported


# -- fill / lookup -------------------------------------------------------------------


def test_fill_and_lookup_leaf_4k() -> None:
    tlb = make_tlb()
    e = entry(1, 0, 0x1234)
    tlb.fill(e)
    assert len(tlb) == 1
    assert leaf_lookup(tlb, 1, 0x1234) is e
    assert leaf_lookup(tlb, 1, 0x1235) is None
    assert leaf_lookup(tlb, 2, 0x1234) is None  # another VMID
    assert tlb.lookup_nonleaf(1, 0x1234, 2) is None  # a leaf is not a walk-cache entry


def test_fill_and_lookup_leaf_2m_and_1g() -> None:
    tlb = make_tlb()
    m2 = entry(1, 1, 0x400 + 17, ppn=0x8_0000)
    g1 = entry(2, 2, 0x4_0000 + 999, ppn=0xC_0000)
    tlb.fill(m2)
    tlb.fill(g1)
    for gfn in (0x400, 0x401, 0x5FF):
        assert leaf_lookup(tlb, 1, gfn) is m2
        assert gfn + m2.delta == 0x8_0000 + gfn - 0x400
    assert leaf_lookup(tlb, 1, 0x3FF) is None
    assert leaf_lookup(tlb, 1, 0x600) is None
    assert leaf_lookup(tlb, 2, 0x4_0000) is g1
    assert leaf_lookup(tlb, 2, 0x7_FFFF) is g1
    assert leaf_lookup(tlb, 2, 0x8_0000) is None
    assert leaf_lookup(tlb, 1, 0x4_0000) is None


def test_refill_same_key_replaces_without_growing() -> None:
    tlb = make_tlb(leaf=2)
    a = entry(1, 0, 5, ppn=100)
    b = entry(1, 0, 5, ppn=200)
    c = entry(1, 0, 6)
    tlb.fill(a)
    tlb.fill(c)
    tlb.fill(b)  # same key as a: replaced in place, nothing evicted
    assert len(tlb) == 2
    assert leaf_lookup(tlb, 1, 5) is b
    assert leaf_lookup(tlb, 1, 6) is c
    check_cache(tlb.leaf)


def test_leaf_and_nonleaf_are_separate_caches() -> None:
    tlb = make_tlb()
    leaf = entry(1, 1, 0x400)
    table = entry(1, 1, 0x400, leaf=False)
    assert leaf.key == table.key
    tlb.fill(leaf)
    tlb.fill(table)
    assert len(tlb) == 2
    assert leaf_lookup(tlb, 1, 0x400) is leaf
    assert tlb.lookup_nonleaf(1, 0x400, 2) is table


def test_lookup_nonleaf_returns_deepest() -> None:
    tlb = make_tlb()
    gfn = 0x12_3456
    root = entry(1, 2, gfn, leaf=False, ppn=0x50)  # root PTE -> level-1 table
    mid = entry(1, 1, gfn, leaf=False, ppn=0x60)  # level-1 PTE -> level-0 table
    tlb.fill(root)
    assert tlb.lookup_nonleaf(1, gfn, 2) is root
    tlb.fill(mid)
    assert tlb.lookup_nonleaf(1, gfn, 2) is mid
    # another gfn in the same 1G region but a different 2M region only finds the root entry
    assert tlb.lookup_nonleaf(1, gfn ^ 0x200, 2) is root
    # a gfn outside the 1G region finds nothing
    assert tlb.lookup_nonleaf(1, gfn ^ 0x4_0000, 2) is None
    # another VMID finds nothing
    assert tlb.lookup_nonleaf(2, gfn, 2) is None


def test_lookup_nonleaf_respects_root_level() -> None:
    tlb = make_tlb()
    gfn = 0x1234_5678
    top = entry(1, 3, gfn, leaf=False)
    tlb.fill(top)
    assert tlb.lookup_nonleaf(1, gfn, 3) is top  # Sv48x4: level 3 is the root
    assert tlb.lookup_nonleaf(1, gfn, 2) is None  # Sv39x4 never looks at level 3


def test_nonleaf_capacity_zero_caches_nothing() -> None:
    tlb = make_tlb(leaf=4, nonleaf=0)
    tlb.fill(entry(1, 1, 0x400, leaf=False))
    assert len(tlb) == 0
    assert tlb.lookup_nonleaf(1, 0x400, 2) is None
    tlb.fill(entry(1, 0, 0x400))
    assert len(tlb) == 1


def test_bad_capacity() -> None:
    with pytest.raises(ValueError):
        Tlb(0, 4, random.Random(0))
    with pytest.raises(ValueError):
        Tlb(4, -1, random.Random(0))


# -- seeded eviction -----------------------------------------------------------------


def fill_many(seed: int, n: int = 40, cap: int = 8) -> tuple[Tlb, list[TlbEntry]]:
    tlb = make_tlb(leaf=cap, nonleaf=cap, seed=seed)
    filled = [entry(1, 0, gfn) for gfn in range(n)]
    for e in filled:
        tlb.fill(e)
        check_cache(tlb.leaf)
    return tlb, filled


def survivors(tlb: Tlb) -> list[int]:
    return sorted(e.key for e in tlb.leaf.entries.values())


def test_eviction_keeps_capacity_and_counts() -> None:
    tlb, filled = fill_many(seed=7)
    assert len(tlb.leaf.keys) == 8
    assert len(tlb) == 8
    kept = set(survivors(tlb))
    evicted = {e.key for e in filled} - kept
    assert len(evicted) == 40 - 8
    # the last fill always survives: it was inserted after its victim was chosen
    assert filled[-1].key in kept
    # survivors are still the same objects that were filled
    for k in kept:
        assert tlb.leaf.entries[k] is filled[k & 0xFFFF]


def test_eviction_is_seeded() -> None:
    a, _ = fill_many(seed=7)
    b, _ = fill_many(seed=7)
    assert survivors(a) == survivors(b)
    assert a.leaf.keys == b.leaf.keys
    distinct = {tuple(survivors(fill_many(seed=s)[0])) for s in range(8)}
    assert len(distinct) > 1  # the victim depends on the seed


def test_eviction_uses_the_given_rng() -> None:
    rng = random.Random(42)
    tlb = Tlb(2, 2, rng)
    for gfn in range(2):
        tlb.fill(entry(1, 0, gfn))
    state = rng.getstate()
    tlb.fill(entry(1, 0, 2))  # full: one random draw picks the victim
    assert rng.getstate() != state
    replay = random.Random()
    replay.setstate(state)
    victim_pos = replay.randrange(2)
    assert victim_pos in (0, 1)
    assert tlb_key(1, 0, victim_pos) not in tlb.leaf.entries
    assert tlb_key(1, 0, 1 - victim_pos) in tlb.leaf.entries


def test_leaf_eviction_does_not_touch_nonleaf() -> None:
    tlb = make_tlb(leaf=2, nonleaf=2, seed=1)
    t = entry(1, 1, 0x400, leaf=False)
    tlb.fill(t)
    for gfn in range(10):
        tlb.fill(entry(1, 0, gfn))
    assert tlb.lookup_nonleaf(1, 0x400, 2) is t
    assert len(tlb.nonleaf.keys) == 1
    assert len(tlb.leaf.keys) == 2


# -- HFENCE.GVMA ---------------------------------------------------------------------


def populated() -> tuple[Tlb, dict[str, TlbEntry]]:
    tlb = make_tlb()
    es = {
        "v1_4k": entry(1, 0, 0x1234),
        "v1_4k_other": entry(1, 0, 0x9999),
        "v1_2m": entry(1, 1, 0x1200),  # covers 0x1200..0x13FF, so also 0x1234
        "v1_1g": entry(1, 2, 0x80000),  # covers 0x80000..0xBFFFF
        "v1_nl1": entry(1, 1, 0x1234, leaf=False),
        "v1_nl2": entry(1, 2, 0x1234, leaf=False),
        "v2_4k": entry(2, 0, 0x1234),
        "v2_2m": entry(2, 1, 0x1234),
        "v2_nl1": entry(2, 1, 0x1234, leaf=False),
    }
    for e in es.values():
        tlb.fill(e)
    assert len(tlb) == len(es)
    return tlb, es


def present(tlb: Tlb, es: dict[str, TlbEntry]) -> set[str]:
    out = set()
    for name, e in es.items():
        cache = tlb.leaf if e.leaf else tlb.nonleaf
        if cache.entries.get(e.key) is e:
            out.add(name)
    return out


def test_hfence_all() -> None:
    tlb, es = populated()
    assert tlb.hfence_gvma(None, None) == len(es)
    assert len(tlb) == 0
    assert present(tlb, es) == set()
    assert tlb.lookup_nonleaf(1, 0x1234, 2) is None
    check_cache(tlb.leaf)
    check_cache(tlb.nonleaf)


def test_hfence_vmid_removes_leaf_and_nonleaf_of_that_vmid_only() -> None:
    tlb, es = populated()
    assert tlb.hfence_gvma(1, None) == 6
    assert present(tlb, es) == {"v2_4k", "v2_2m", "v2_nl1"}
    assert leaf_lookup(tlb, 1, 0x1234) is None
    assert tlb.lookup_nonleaf(1, 0x1234, 2) is None
    assert leaf_lookup(tlb, 2, 0x1234) is es["v2_4k"]
    assert tlb.lookup_nonleaf(2, 0x1234, 2) is es["v2_nl1"]
    check_cache(tlb.leaf)
    check_cache(tlb.nonleaf)


def test_hfence_gfn_removes_only_covering_leaves_of_all_vmids() -> None:
    tlb, es = populated()
    assert tlb.hfence_gvma(None, 0x1234) == 4
    # the 4K and 2M leaves covering 0x1234 went, for both VMIDs; non-leaf entries stay
    assert present(tlb, es) == {"v1_4k_other", "v1_1g", "v1_nl1", "v1_nl2", "v2_nl1"}
    assert tlb.lookup_nonleaf(1, 0x1234, 2) is es["v1_nl1"]
    assert tlb.lookup_nonleaf(2, 0x1234, 2) is es["v2_nl1"]
    check_cache(tlb.leaf)
    check_cache(tlb.nonleaf)


def test_hfence_vmid_and_gfn() -> None:
    tlb, es = populated()
    assert tlb.hfence_gvma(2, 0x1234) == 2
    assert present(tlb, es) == set(es) - {"v2_4k", "v2_2m"}


def test_hfence_gfn_hits_2m_leaf_through_any_covered_gfn() -> None:
    tlb, es = populated()
    # 0x13FF is inside v1_2m (0x1200..0x13FF) but not any 4K entry
    assert tlb.hfence_gvma(1, 0x13FF) == 1
    assert present(tlb, es) == set(es) - {"v1_2m"}
    assert leaf_lookup(tlb, 1, 0x1234) is es["v1_4k"]


def test_hfence_gfn_hits_1g_leaf() -> None:
    tlb, es = populated()
    assert tlb.hfence_gvma(1, 0xBFFFF) == 1
    assert present(tlb, es) == set(es) - {"v1_1g"}


def test_hfence_gfn_outside_every_entry_removes_nothing() -> None:
    tlb, es = populated()
    assert tlb.hfence_gvma(None, 0x1400) == 0  # just past the 2M leaf
    assert tlb.hfence_gvma(None, 0x11FF) == 0  # just before it
    assert tlb.hfence_gvma(None, 0xC0000) == 0  # just past the 1G leaf
    assert present(tlb, es) == set(es)


def test_hfence_vmid_with_nothing_to_remove() -> None:
    tlb, es = populated()
    assert tlb.hfence_gvma(3, None) == 0
    assert tlb.hfence_gvma(3, 0x1234) == 0
    assert present(tlb, es) == set(es)


# -- a random mix of operations against a plain model -------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("fill"), st.integers(1, 3), st.integers(0, 2), st.integers(0, 0x1_FFFF), st.booleans()),
        st.tuples(
            st.just("fence"), st.one_of(st.none(), st.integers(1, 3)), st.one_of(st.none(), st.integers(0, 0x1_FFFF))
        ),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops, seed=st.integers(0, 1000))
def test_random_ops_match_model(ops: list[tuple], seed: int) -> None:  # type: ignore[type-arg]
    tlb = make_tlb(leaf=6, nonleaf=3, seed=seed)
    model: dict[tuple[bool, int], TlbEntry] = {}
    for op in ops:
        if op[0] == "fill":
            _, vmid, level, gfn, leaf = op
            e = entry(vmid, level, gfn, leaf=leaf)
            cache = tlb.leaf if leaf else tlb.nonleaf
            must_evict = e.key not in cache.entries and len(cache.keys) == cache.capacity
            tlb.fill(e)
            model[(leaf, e.key)] = e
            assert cache.entries[e.key] is e
            # a fill evicts exactly one entry of its own kind when the cache was full, else none
            dropped = [k for k in model if k[0] == leaf and k[1] not in cache.entries]
            assert len(dropped) == (1 if must_evict else 0)
            for k in dropped:
                del model[k]
        else:
            _, vmid, gfn = op

            def hit(e: TlbEntry, vmid: int | None = vmid, gfn: int | None = gfn) -> bool:
                if vmid is not None and e.vmid != vmid:
                    return False
                if gfn is None:
                    return True
                return e.leaf and e.gfn_base <= gfn < e.gfn_base + (1 << (9 * e.level))

            doomed = [k for k, e in model.items() if hit(e)]
            assert tlb.hfence_gvma(vmid, gfn) == len(doomed)
            for k in doomed:
                del model[k]
        check_cache(tlb.leaf)
        check_cache(tlb.nonleaf)
        assert {k for k in model if k[0]} == {(True, k) for k in tlb.leaf.entries}
        assert {k for k in model if not k[0]} == {(False, k) for k in tlb.nonleaf.entries}
        assert len(tlb) == len(model)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 200), st.integers(1, 300))
def test_eviction_draws_what_randrange_draws(seed: int, cap: int, fills: int) -> None:
    """The eviction's inline draw is rng.randrange(n), draw for draw: the victims are those a
    randrange-based TLB picks, and the stream is in the same place afterwards (old schedules replay)."""
    tlb = make_tlb(leaf=cap, seed=seed)
    model = random.Random(seed)
    keys: list[int] = []
    for i in range(fills):
        e = entry(1, 0, i * 3)
        tlb.fill(e)
        if len(keys) >= cap:
            keys[model.randrange(len(keys))] = keys[-1]  # the victim's slot takes the last key
            keys.pop()
        keys.append(e.key)
    assert sorted(tlb.leaf.keys) == sorted(keys)
    assert tlb.rng.random() == model.random()
