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
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator


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
