"""The reverse map (engine/rmap.py): which PTE slots name a frame, kept in a per-frame array and a dict
of sets, against a plain dict of sets."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from simulator.engine.rmap import ReverseMap
from simulator.riscv.pte import PTE_PPN_SHIFT, PTE_R, PTE_V

STORE = st.tuples(
    st.integers(0, 3),  # table
    st.integers(0, 3),  # idx
    st.one_of(st.just(None), st.integers(0, 70)),  # the frame the new PTE names (None: invalid); 64+ beyond memory
    st.booleans(),  # a leaf, or a table link
)


@given(st.lists(STORE, max_size=80))
def test_slots_are_what_a_dict_of_sets_keeps(stores: list[tuple[int, int, int | None, bool]]) -> None:
    rmap = ReverseMap(SimpleNamespace(nr_frames=64), 2)  # type: ignore[arg-type]
    ptes: dict[tuple[int, int], int] = {}
    model: dict[int, set[tuple[int, int]]] = {}
    for table, idx, ppn, leaf in stores:
        old = ptes.get((table, idx), 0)
        new = 0 if ppn is None else ppn << PTE_PPN_SHIFT | PTE_V | (PTE_R if leaf else 0)
        rmap.store(table, idx, old, new)
        ptes[(table, idx)] = new
        if old & PTE_V:
            model[old >> PTE_PPN_SHIFT].discard((table, idx))
        if ppn is not None:
            model.setdefault(ppn, set()).add((table, idx))
    for ppn in range(72):
        assert rmap.slots(ppn) == sorted(model.get(ppn, ()))
