"""Arrival models, drift injection and recovery metrics: deterministic, logged, exact."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from persona_sim.data.sequences import Dataset, Sequences
from persona_sim.errors import DatasetError
from persona_sim.report.recovery import PRE, drift_summary
from persona_sim.report.results import SCHEMA
from persona_sim.scenario.schema import ArrivalSpec, DriftSpec, parse_scenario
from persona_sim.sim.arrivals import Arrivals
from persona_sim.sim.drift import DriftContext, inject, targets


@pytest.mark.parametrize("spec,own", [
    (ArrivalSpec(kind="exponential", mean_s=5), None),
    (ArrivalSpec(kind="sessions", mean_s=5, session_items=3, session_gap_s=500), None),
    (ArrivalSpec(kind="timestamps", compress=10), np.array([0.0, 100.0, 250.0, 260.0])),
])
def test_arrival_times_are_prefix_consistent_and_increasing(spec, own):
    a = Arrivals(spec, seed=1, index=4, own_times_s=own)
    long, short = a.event_times(40), a.event_times(7)
    assert np.array_equal(long[:7], short) and np.all(np.diff(long) >= 1)
    assert np.array_equal(long, Arrivals(spec, 1, 4, own).event_times(40))      # same seed and device
    assert not np.array_equal(long, Arrivals(spec, 2, 4, own).event_times(40))  # another seed


def test_timestamp_arrivals_compress_real_gaps_and_need_timestamps():
    a = Arrivals(ArrivalSpec(kind="timestamps", compress=10), 0, 0, np.array([0.0, 100.0, 250.0]))
    assert np.diff(a.event_times(3)).tolist() == [10_000_000, 15_000_000]
    with pytest.raises(DatasetError, match="devices.arrivals.kind is 'timestamps'"):
        Arrivals(ArrivalSpec(kind="timestamps"), 0, 0, None)


def test_session_gaps_are_long_between_sessions():
    gaps = Arrivals(ArrivalSpec(kind="sessions", mean_s=1, session_items=4, session_gap_s=1000), 0, 0,
                    None).gaps_us(4000)[1:] / 1e6
    long = gaps > 50
    assert 0.15 < long.mean() < 0.35            # about one gap in session_items opens a session
    assert np.median(gaps[long]) > 300 and np.median(gaps[~long]) < 2


def test_injectors_take_disjoint_slices_of_one_shuffle():
    specs = [DriftSpec(kind="takeover", at_s=0, fraction=0.5), DriftSpec(kind="category", at_s=0, fraction=0.3)]
    a, b = targets(specs, 20, seed=7)
    assert len(a) == 10 and len(b) == 6 and not a & b
    assert targets(specs, 20, seed=7) == [a, b] and targets(specs, 20, seed=8) != [a, b]
    assert targets([DriftSpec(kind="takeover", at_s=0, devices=[3, 5])], 20, seed=7) == [{3, 5}]


def test_drift_devices_out_of_range_is_a_scenario_error():
    from persona_sim.errors import ScenarioError

    with pytest.raises(ScenarioError, match=r"drift\[0\]\.devices: index 9 is not a device"):
        parse_scenario({"name": "x", "devices": {"count": 5}, "split": {"device_users": 5},
                        "drift": [{"kind": "takeover", "at_s": 1, "devices": [1, 9]}]}, "x.yaml")


def _world(cats=True):
    # 6 users; items 1-5 are category 1, items 6-10 category 2.
    seqs = [np.array([1, 2, 3, 4, 5, 1, 2, 3, 4, 5]), np.array([6, 7, 8, 9, 10, 6, 7]), np.array([2, 4, 1, 3]),
            np.array([7, 9, 6, 8, 10]), np.array([1, 3, 5, 2]), np.array([8, 6, 10, 7])]
    category = np.array([0] + [1] * 5 + [2] * 5) if cats else None
    ds = Dataset("w", 10, Sequences.from_arrays(seqs), category)
    scenario = parse_scenario({"name": "w", "seed": 5, "split": {"context": 2, "device_users": 6},
                               "devices": {"count": 6}}, "w")
    labels = np.array([0, 1, 0, 1, 0, 1])                     # by dominant category
    return ds, scenario, DriftContext(ds, np.arange(6), labels, seed=5)


def _times(n):
    return np.arange(n, dtype=np.int64) * 10_000_000           # one interaction every 10 s from t = 0


def test_takeover_replays_a_user_of_another_cluster_from_the_shift():
    ds, scenario, ctx = _world()
    spec = DriftSpec(kind="takeover", at_s=25)
    items, shifts = inject(ds.sequences[0], 0, 0, [(0, spec)], scenario, ctx, _times)
    (s,) = shifts
    assert (s.kind, s.event, s.t_us) == ("takeover", 3, 30_000_000)        # first event at or after 25 s
    donor = json.loads(s.detail)["donor_user"]
    assert donor in (1, 3, 5)                                              # cluster 1, not the device's 0
    assert items.tolist() == ds.sequences[0][:2 + 3].tolist() + ds.sequences[donor].tolist()
    again, _ = inject(ds.sequences[0], 0, 0, [(0, spec)], scenario, ctx, _times)
    assert np.array_equal(items, again)


def test_category_shift_moves_to_another_category_and_needs_categories():
    ds, scenario, ctx = _world()
    items, (s,) = inject(ds.sequences[0], 0, 0, [(0, DriftSpec(kind="category", at_s=0, events=12))],
                         scenario, ctx, _times)
    detail = json.loads(s.detail)
    assert (detail["from_category"], detail["to_category"]) == (1, 2)
    tail = items[2:]
    assert len(tail) == 12 and set(ds.item_category[tail]) == {2}
    ds2, _, _ = _world(cats=False)
    with pytest.raises(DatasetError, match=r"drift\[0\]\.kind is 'category'"):
        inject(ds2.sequences[0], 0, 0, [(0, DriftSpec(kind="category", at_s=0))], scenario,
               DriftContext(ds2, np.arange(6), None, 5), _times)


def test_popularity_shift_promotes_tail_items():
    ds, scenario, ctx = _world()
    items, _ = inject(ds.sequences[0], 0, 0, [(0, DriftSpec(kind="popularity", at_s=0, strength=1.0, trending=3))],
                      scenario, ctx, _times)
    assert set(items[2:].tolist()) <= set(ctx.trending[:3].tolist())


def test_periodic_switches_are_each_logged():
    ds, scenario, ctx = _world()
    items, shifts = inject(ds.sequences[0], 0, 0, [(0, DriftSpec(kind="periodic", at_s=0, period_s=20))],
                           scenario, ctx, _times)
    # events every 10 s, period 20 s: donor, donor, own, own, donor, …
    assert [s.event for s in shifts][:3] == [0, 2, 4]
    assert [json.loads(s.detail)["to"] for s in shifts][:3] == ["donor", "own", "donor"]
    assert len(items) == len(ds.sequences[0]) + len(ds.sequences[json.loads(shifts[0].detail)["donor_user"]])


def test_recovery_figures_are_exact():
    con = sqlite3.connect(":memory:")
    con.executescript(SCHEMA)
    # two devices, shift at event 5: NDCG 0.5 before; after: 0.1, 0.1, 0.1, 0.5, 0.5, 0.5, …, one event per 2 s
    post = [0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5]
    for dev in ("a", "b"):
        for e, v in enumerate([0.5] * 5 + post):
            con.execute("INSERT INTO predictions (method, device_id, event, t_us, ndcg10) VALUES (?,?,?,?,?)",
                        ("m", dev, e, e * 2_000_000, v))
        con.execute("INSERT INTO shifts VALUES (?, 0, 'takeover', 5, 10000000, '{}')", (dev,))
    rec = drift_summary(con, ["m"])["recovery"]["takeover"]["m"]
    assert rec["before"] == 0.5 and rec["after"] == pytest.approx(0.1)
    # 3-event means from the shift: 0.1, (0.1+0.1+0.5)/3, (0.1+0.5+0.5)/3 = 0.367 < 0.45, then 0.5 at r = 3
    assert rec["recovery_events"] == 3 and rec["recovery_s"] == 6.0
    assert rec["dip"] == pytest.approx(0.4)
    assert rec["curve"]["mean"][PRE] == pytest.approx(0.1) and rec["curve"]["count"][PRE] == 2
