"""d->page_list threaded through per-frame links behaves as the insertion-ordered dict it replaced."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.xen.page_list import PageLinks, PageList

ops = st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 2), st.integers(0, 31)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(ops=ops)
def test_like_an_ordered_dict(ops):
    links = PageLinks(32)
    lists = [PageList(links) for _ in range(3)]
    model: list[dict[int, None]] = [{}, {}, {}]
    for op, which, pg in ops:
        holder = next((i for i, m in enumerate(model) if pg in m), None)
        if op == "add":
            if holder is not None and holder != which:
                del model[holder][pg]  # taken off the list that still held it
            lists[which].add_tail(pg)
            model[which][pg] = None
        else:
            lists[which].remove(pg)
            model[which].pop(pg, None)
        for pl, m in zip(lists, model, strict=True):
            assert list(pl) == list(m)
            assert len(pl) == len(m) and bool(pl) == bool(m)
            assert all(pg in pl for pg in m) and not any(pg in pl for pg in range(32) if pg not in m)


def test_removing_while_iterating_visits_every_page():
    """relinquish_memory frees pages as it walks the list: the walk must not lose its place."""
    pl = PageList(PageLinks(8))
    for pg in (5, 1, 7, 2):
        pl.add_tail(pg)
    seen = []
    for pg in pl:
        seen.append(pg)
        pl.remove(pg)
    assert seen == [5, 1, 7, 2] and not pl and list(pl) == []
