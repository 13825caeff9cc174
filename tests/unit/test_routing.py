"""The canary split: stable, close to the asked share, nested in the fraction, slice-bound."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from retrain_jobs.routing import canary_point, routed_to_candidate, serves_candidate


def test_share_is_close_to_the_fraction():
    ids = [f"e-{i}" for i in range(20_000)]
    share = sum(serves_candidate(i, 0.1) for i in ids) / len(ids)
    assert 0.09 < share < 0.11  # binomial sd at n=20000, p=0.1: 0.0021; this is about 5 sd


def test_zero_and_one():
    assert not any(serves_candidate(f"e-{i}", 0.0) for i in range(1000))
    assert all(serves_candidate(f"e-{i}", 1.0) for i in range(1000))


@given(st.text(min_size=1, max_size=40), st.floats(0, 1), st.floats(0, 1))
def test_a_larger_fraction_keeps_every_event_of_a_smaller_one(event_id, a, b):
    low, high = sorted((a, b))
    assert not serves_candidate(event_id, low) or serves_candidate(event_id, high)
    assert 0.0 <= canary_point(event_id) < 1.0


def test_the_same_in_another_process():
    """Not Python's salted str hash: a fresh interpreter puts each event on the same side."""
    ids = [f"slice-{i}:{i * 7}" for i in range(50)]
    code = ("from retrain_jobs.routing import canary_point as p; import sys; "
            "print(' '.join(repr(p(x)) for x in sys.argv[1:]))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, *ids], capture_output=True, text=True, check=True).stdout
    assert [float(v) for v in out.split()] == [canary_point(i) for i in ids]


def test_only_the_candidates_slices():
    eid = next(f"e-{i}" for i in range(100) if serves_candidate(f"e-{i}", 0.5))
    assert routed_to_candidate(eid, "s3", 0.5, {"s3"})
    assert not routed_to_candidate(eid, "s1", 0.5, {"s3"})
    assert routed_to_candidate(eid, "s1", 0.5, ())  # no slices named: every slice
