"""d->page_list: the pages a domain owns, in the order assign_pages gave them, at a few bytes a frame.

Xen threads its page lists through ``struct page_info``'s ``list`` field, so
a page is on at most one list and a list costs nothing per page beyond the
frame table.  The model does the same: ``PageLinks`` is the frame table's
``list`` field (next and prev as per-frame arrays, and which list holds the
page), shared by every domain's ``PageList``.  A dict per domain cost about
70 bytes per owned page (of about 560 a mapped page cost in all).

Invariant: a page is on at most one list; ``on[pg]`` names it (0: none);
next/prev run from a list's head to its tail and back, -1 ending them.

Model: a page added to a list while another still holds it (a page freed
after its owner's struct domain went away, as a foreign page can be, and then
given to another domain) is taken off the old list first.  Xen would
overwrite ``page_info.list`` and leave the old list pointing at it; that list
is never walked again, and a dict per domain kept such a stale key as well.

The P2M's own lists (``p2m->pages`` and the pool's ``d->arch.paging.freelist``)
are ``PageListHead``: xen/mm.h's operations exactly, through the same
next/prev arrays, with no model fix.  Their pages move between the two lists
on every table allocation and free, and the tree's code deletes a page from
``p2m->pages`` that a double free has already put on the freelist: what that
does to both lists is the C's, so the model's must be too.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator

from simulator.xen.base import XenPanic


class PageLinks:
    """page_info.list of every frame."""

    def __init__(self, nr_frames: int) -> None:
        self.next = array("i", [-1]) * nr_frames
        self.prev = array("i", [-1]) * nr_frames
        self.on = array("i", [0]) * nr_frames
        self.lists: list[PageList | None] = [None]  # by id (a list's id is never 0)


class PageList:
    """struct page_list_head: ``add_tail``, ``remove``, and iteration head to tail."""

    __slots__ = ("_id", "_links", "count", "head", "tail")

    def __init__(self, links: PageLinks) -> None:
        self._id = len(links.lists)
        links.lists.append(self)
        self._links = links
        self.head = self.tail = -1
        self.count = 0

    def add_tail(self, pg: int) -> None:
        """page_list_add_tail; a page already on this list stays where it is (a dict key would)."""
        links = self._links
        if links.on[pg] == self._id:
            return
        if links.on[pg]:
            other = links.lists[links.on[pg]]
            assert other is not None
            other.remove(pg)  # model: see the module's docstring
        links.on[pg] = self._id
        links.prev[pg], links.next[pg] = self.tail, -1
        if self.tail < 0:
            self.head = pg
        else:
            links.next[self.tail] = pg
        self.tail = pg
        self.count += 1

    def remove(self, pg: int) -> None:
        """page_list_del, of a page that may not be on this list (then nothing happens)."""
        links = self._links
        if links.on[pg] != self._id:
            return
        prev, nxt = links.prev[pg], links.next[pg]
        if prev < 0:
            self.head = nxt
        else:
            links.next[prev] = nxt
        if nxt < 0:
            self.tail = prev
        else:
            links.prev[nxt] = prev
        links.on[pg] = 0
        links.next[pg] = links.prev[pg] = -1
        self.count -= 1

    def __contains__(self, pg: object) -> bool:
        return isinstance(pg, int) and 0 <= pg < len(self._links.on) and self._links.on[pg] == self._id

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        nxt = self._links.next
        pg = self.head
        while pg >= 0:
            following = nxt[pg]  # read first: the caller may remove pg as it goes
            yield pg
            pg = following


CYCLE = (
    "{what} is corrupt: walking it comes back to mfn {mfn:#x} (a cycle: a page was deleted from, or added to, "
    "a list it was not on)"
)


def walk_pages(first: int, step: Callable[[int], int], limit: int, what: str) -> list[int]:
    """A page list from ``first`` along ``step`` (-1 ends it); a panic if it holds more than ``limit``
    pages, i.e. comes back on itself (the model's lists and, read through the harness, the C's)."""
    out: list[int] = []
    pg = first
    while pg >= 0:
        out.append(pg)
        if len(out) > limit:
            raise XenPanic(CYCLE.format(what=what, mfn=pg))
        pg = step(pg)
    return out


class PageListHead:
    """struct page_list_head as xen/mm.h operates on it: no operation checks that the page is on this list
    (``page_list_del`` of a page on another list rewrites that list's links, and this head's, as the C does).

    ``count`` is model bookkeeping (the pages added less those deleted through this head), not the C's.
    """

    __slots__ = ("_links", "count", "next", "tail", "what")

    def __init__(self, links: PageLinks, what: str) -> None:
        self._links = links
        self.what = what  # its C name, for a panic at a walk that comes back on itself
        self.next = self.tail = -1
        self.count = 0

    def page_list_empty(self) -> bool:
        return self.next < 0

    def page_list_add(self, pg: int) -> None:
        nxt, prev = self._links.next, self._links.prev
        prev[pg], nxt[pg] = -1, self.next
        if self.next >= 0:
            prev[self.next] = pg
        else:
            self.tail = pg
        self.next = pg
        self.count += 1

    def page_list_add_tail(self, pg: int) -> None:
        nxt, prev = self._links.next, self._links.prev
        nxt[pg], prev[pg] = -1, self.tail
        if self.tail >= 0:
            nxt[self.tail] = pg
        else:
            self.next = pg
        self.tail = pg
        self.count += 1

    def page_list_del(self, pg: int) -> None:
        nxt, prev = self._links.next, self._links.prev
        p, n = prev[pg], nxt[pg]
        if p >= 0:
            nxt[p] = n
        else:
            self.next = n
        if n >= 0:
            prev[n] = p
        else:
            self.tail = p
        nxt[pg] = prev[pg] = -1
        self.count -= 1

    def page_list_remove_head(self) -> int | None:
        pg = self.next
        if pg < 0:
            return None
        self.page_list_del(pg)
        return pg

    def walk(self, backwards: bool = False) -> list[int]:
        """The list from its head along next (``backwards``: from its tail along prev, oldest first for
        ``page_list_add``'s lists); a panic if it comes back on itself, as for the C's lists."""
        step = self._links.prev if backwards else self._links.next
        return walk_pages(self.tail if backwards else self.next, step.__getitem__, len(step), self.what)

    def __iter__(self) -> Iterator[int]:
        return iter(self.walk())

    def __len__(self) -> int:
        return len(self.walk())

    def __bool__(self) -> bool:
        return self.next >= 0

    def __contains__(self, pg: object) -> bool:
        return pg in self.walk()


class P2MPageList(PageListHead):
    """p2m->pages: ``page_list_add`` puts a page at the head; the model's glue and invariants walk it oldest
    first (from the tail), as they read the C's (``simulator/ctree``)."""

    __slots__ = ()

    def __iter__(self) -> Iterator[int]:
        return iter(self.walk(backwards=True))

    def pop(self, pg: int, default: object = None) -> object:
        """page_list_del if the page is on the list (the glue takes the root pages off before freeing them)."""
        if pg in self.walk():
            self.page_list_del(pg)
            return None
        return default
