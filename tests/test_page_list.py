"""d->page_list threaded through per-frame links behaves as the insertion-ordered dict it replaced; the P2M's
lists are xen/mm.h's (``PageListHead``): the same operations on the same links, with nothing checked, so the
tree's own misuse of them does what it does in the C."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.xen.base import XenPanic
from simulator.xen.page_list import P2MPageList, PageLinks, PageList, PageListHead

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


def test_add_tail_and_remove_head_are_fifo_and_add_is_lifo_walked_oldest_first() -> None:
    links = PageLinks(16)
    free = PageListHead(links, "d->arch.paging.freelist")
    for pg in (3, 5, 7):
        free.page_list_add_tail(pg)
    assert list(free) == [3, 5, 7] and free.page_list_remove_head() == 3 and list(free) == [5, 7]
    pages = P2MPageList(links, "p2m->pages")
    for pg in (1, 2, 4):
        pages.page_list_add(pg)
    assert pages.walk() == [4, 2, 1] and list(pages) == [1, 2, 4]  # (the glue reads it oldest first)
    assert pages.pop(2) is None and list(pages) == [1, 4] and pages.pop(9, "no") == "no"
    assert free.page_list_remove_head() == 5 and free.page_list_remove_head() == 7
    assert free.page_list_remove_head() is None and free.page_list_empty() and not free


def test_a_page_deleted_through_the_wrong_head_leaves_the_list_it_is_on_as_the_c_does() -> None:
    """p2m_free_page twice: page_list_del(pg, &p2m->pages) of a page on the freelist.  In the middle of the
    freelist it unlinks it there (its neighbours are rewritten); at the freelist's head it rewrites
    p2m->pages' head instead, and the freelist still starts at it."""
    links = PageLinks(16)
    free, pages = PageListHead(links, "d->arch.paging.freelist"), P2MPageList(links, "p2m->pages")
    pages.page_list_add(9)
    for pg in (3, 5, 7):
        free.page_list_add_tail(pg)
    pages.page_list_del(5)  # in the middle of the freelist
    assert list(free) == [3, 7] and pages.walk() == [9]
    free.page_list_add_tail(5)  # paging_free_page: it is on the freelist once
    assert list(free) == [3, 7, 5]
    pages.page_list_del(3)  # at the freelist's head: p2m->pages' head takes its next
    assert pages.next == 7 and free.next == 3


def test_a_list_that_comes_back_on_itself_is_a_panic_naming_it() -> None:
    links = PageLinks(8)
    free = PageListHead(links, "d->arch.paging.freelist")
    free.page_list_add_tail(2)
    free.page_list_add_tail(2)  # added again while it is the tail: it now points at itself
    with pytest.raises(XenPanic, match=r"d->arch.paging.freelist is corrupt: walking it comes back to mfn 0x2"):
        free.walk()
