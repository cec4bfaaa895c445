"""The guest's access draw: the numpy path, the pure-Python path and one call per access agree."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.engine import guest
from simulator.engine.guest import AccessPattern

ranges = st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(1, 1 << 20)), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(
    ranges=ranges,
    hot=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(1, 4096)), max_size=3),
    hot_prob=st.sampled_from([0.0, 0.25, 1.0]),
    write_ratio=st.sampled_from([0.0, 0.3, 1.0]),
    seed=st.integers(0, 2**32),
    sizes=st.lists(st.integers(1, 200), min_size=1, max_size=4),
)
def test_next_accesses_is_next_access_n_times(ranges, hot, hot_prob, write_ratio, seed, sizes):
    p = AccessPattern(ranges, hot, hot_prob, write_ratio)
    per_call, vector, python = random.Random(seed), random.Random(seed), random.Random(seed)
    for n in sizes:
        want = [p.next_access(per_call) for _ in range(n)]
        assert p.next_accesses(vector, n) == want
        np, guest.np = guest.np, None
        try:
            assert p.next_accesses(python, n) == want
        finally:
            guest.np = np
    # the streams are left in the same state: what is drawn next is the same
    assert per_call.random() == vector.random() == python.random()


def test_numpy_path_is_taken():
    """Without this the test above could compare the Python path with itself."""
    assert guest.np is not None
    p = AccessPattern([(0x100, 24)])
    calls = []
    real = p._vector
    p._vector = lambda rng, n: calls.append(n) or real(rng, n)  # type: ignore[method-assign]
    p.next_accesses(random.Random(1), 8)
    assert calls == [8]
