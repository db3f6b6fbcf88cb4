"""How max_concurrency is shared between routes (gateway/proxy/admission.py)."""

from __future__ import annotations

import pytest

from gateway.proxy.admission import Admission


def fill(adm: Admission, route: str, budget: int, routes: int) -> int:
    """Admit on `route` until refused; -> how many were admitted."""
    n = 0
    while adm.admit(route, budget, routes) is not None:
        n += 1
        assert n <= budget
    return n


@pytest.mark.parametrize(
    ("budget", "routes", "flooded_takes", "others_keep"),
    [
        (1024, 1, 1024, 0),  # one route: the whole budget
        (1024, 2, 512, 512),  # reserve 256 each, shared 512, one route at most 256 of it
        (30, 2, 15, 15),
        (30, 3, 12, 5),  # reserve 5 each, shared 15, half of it 7
        (4, 2, 2, 2),
        (2, 3, 1, 0),  # too small to reserve: a route still takes one shared slot
    ],
)
def test_a_flooded_route_leaves_the_others_their_reserve(
    budget: int, routes: int, flooded_takes: int, others_keep: int
) -> None:
    adm = Admission()
    assert fill(adm, "flooded", budget, routes) == flooded_takes
    if routes > 1:
        assert fill(adm, "other", budget, routes) >= min(others_keep, budget - flooded_takes)
        assert adm.inflight <= budget


def test_release_frees_exactly_what_was_taken_across_a_reload() -> None:
    adm = Admission()
    slots = [adm.admit("a", 8, 2) for _ in range(4)]  # 2 reserved, 2 shared
    assert all(s is not None for s in slots)
    assert adm.admit("a", 8, 2) is None
    # A reload to one route: the same slots are released into the right counters.
    for s in slots:
        assert s is not None
        adm.release(s)
    assert adm.inflight == 0 and adm.held("a") == 0
    assert fill(adm, "a", 8, 1) == 8
