"""The cloud's clock: exact batch-server and link times, and the same answers however rounds cut time."""
from __future__ import annotations

import math

import numpy as np
import pytest

from persona_sim.scenario.schema import CloudSpec
from persona_sim.sim.cloudsim import BatchCost, CloudClock, Job


def job(i: int, at: int, up: int = 1000, down: int = 5000, prototypes: int = 1) -> Job:
    return Job(f"dev-{i:06d}", 1, "persona-s", at, up, down, prototypes, measured_ns=0)


def clock(**cloud) -> CloudClock:
    spec = CloudSpec(**{"ingress_mbps": None, "egress_mbps": None, **cloud})
    return CloudClock(spec, BatchCost(spec))


def test_one_worker_batches_what_has_queued_and_charges_the_model_exactly():
    c = clock(base_ms=2, per_request_ms=1, per_prototype_ms=0.5, max_batch=2, workers=1)
    c.add([job(0, 0), job(1, 0), job(2, 0), job(3, 100)])
    out = {j.device_id: j for j in c.advance(math.inf)}
    # dev 0 and 1 leave together after 2 + 2 × (1 + 0.5) ms; dev 2 and 3 wait for the worker, then batch
    assert [(out[f"dev-{i:06d}"].start_us, out[f"dev-{i:06d}"].end_us) for i in range(4)] == [
        (0, 5000), (0, 5000), (5000, 10000), (5000, 10000)]
    assert all(j.departed_us == j.end_us and j.enqueued_us == j.arrived_us for j in out.values())


def test_two_workers_take_batches_side_by_side():
    c = clock(base_ms=2, per_request_ms=0, per_prototype_ms=0, max_batch=1, workers=2)
    c.add([job(i, 0) for i in range(3)])
    assert sorted((j.start_us, j.end_us) for j in c.advance(math.inf)) == [(0, 2000), (0, 2000), (2000, 4000)]


@pytest.mark.parametrize("k", [1, 2, 5])
def test_ingress_and_egress_are_shared_fairly(k):
    # k equal requests arriving together each cross a 1 Mbit/s ingress in k × 1000 B × 8 / 1 Mbit/s
    c = clock(base_ms=1, per_request_ms=0, per_prototype_ms=0, max_batch=k, ingress_mbps=1, egress_mbps=2)
    c.add([job(i, 50) for i in range(k)])
    out = c.advance(math.inf)
    assert {j.enqueued_us for j in out} == {50 + k * 8000}
    assert {j.departed_us - j.end_us for j in out} == {k * 5000 * 8 // 2}


def test_measured_mode_charges_the_floor_plus_the_measured_times():
    spec = CloudSpec(compute="measured", base_ms=1, ingress_mbps=None, egress_mbps=None)
    c = CloudClock(spec, BatchCost(spec))
    a, b = job(0, 0), job(1, 0)
    a.measured_ns, b.measured_ns = 300_000, 200_000
    c.add([a, b])
    assert {j.end_us for j in c.advance(math.inf)} == {1000 + 500}


def test_rounds_give_the_same_times_as_knowing_everything_and_hand_each_reply_out_once():
    """The lockstep contract: with every arrival before H added, advance(H) returns exactly the departures
    before H + lookahead that an all-knowing run produces, whatever the rounds."""
    rng = np.random.default_rng(1)
    arrivals = np.sort(rng.integers(0, 200_000, 120))
    spec = dict(base_ms=3, per_request_ms=0.7, per_prototype_ms=0.1, max_batch=4, workers=2,
                ingress_mbps=2, egress_mbps=5)
    whole = clock(**spec)
    whole.add([job(i, int(t), up=int(300 + 50 * (i % 7)), down=int(2000 + 300 * (i % 5))) for i, t in enumerate(arrivals)])
    expected = {j.device_id: (j.enqueued_us, j.start_us, j.end_us, j.departed_us) for j in whole.advance(math.inf)}

    stepped = clock(**spec)
    horizons = list(np.sort(rng.integers(0, 200_000, 40))) + [math.inf]
    got, previous = {}, 0
    for h in horizons:
        stepped.add([job(i, int(t), up=int(300 + 50 * (i % 7)), down=int(2000 + 300 * (i % 5)))
                     for i, t in enumerate(arrivals) if previous <= t < h])
        for j in stepped.advance(h):
            assert j.device_id not in got and j.departed_us < h + stepped.lookahead_us
            got[j.device_id] = (j.enqueued_us, j.start_us, j.end_us, j.departed_us)
        previous = h
    assert got == expected and len(got) == len(arrivals)


def test_an_arrival_before_the_clock_is_refused():
    c = clock()
    c.add([job(0, 10)])
    c.advance(1000)
    with pytest.raises(ValueError, match="before the cloud's clock"):
        c.add([job(1, 999)])


def test_measured_mode_charges_the_median_of_recent_batches_so_a_hiccup_does_not_stick():
    spec = CloudSpec(compute="measured", base_ms=1, ingress_mbps=None, egress_mbps=None)
    cost = BatchCost(spec)
    charged = []
    for ns in (100_000, 100_000, 50_000_000, 100_000, 120_000):   # a 50 ms host hiccup in the third batch
        j = job(0, 0)
        j.measured_ns = ns
        charged.append(cost([j]))
    assert charged == [1100, 1100, 1100, 1100, 1100]
    two = [job(1, 0), job(2, 0)]                                  # another batch size keeps its own history
    two[0].measured_ns = two[1].measured_ns = 400_000
    assert cost(two) == 1800


def test_the_clock_computes_each_batch_it_forms_once_deferred_to_the_end_of_the_advance():
    seen = []

    def compute(jobs):
        seen.append([j.device_id for j in jobs])
        for j in jobs:
            j.result, j.down_bytes = "edit", 5000
    spec = CloudSpec(base_ms=2, per_request_ms=0, per_prototype_ms=0, max_batch=2, ingress_mbps=None,
                     egress_mbps=None)
    c = CloudClock(spec, BatchCost(spec), compute)
    c.add([job(0, 0), job(1, 0), job(2, 0)])
    out = c.advance(math.inf)
    assert seen == [["dev-000000", "dev-000001", "dev-000002"]]   # both batches, one merged real call
    assert all(j.result == "edit" for j in out)
