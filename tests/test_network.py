"""The network model: exact fair sharing, traces, loss, profiles, and the cell-aware sharding."""
from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from persona_sim.errors import DatasetError, ScenarioError
from persona_sim.jobs.shard import shard_devices
from persona_sim.scenario.schema import NetworkSpec, parse_scenario
from persona_sim.sim.netsim import Network, SharedLink, Trace, device_link


def _finish_times(env, events):
    done = {}
    for name, ev in events.items():
        ev.callbacks.append(lambda _e, n=name: done.__setitem__(n, env.now))
    env.run()
    return done


@pytest.mark.parametrize("k", [1, 2, 3, 7, 10])
def test_k_equal_transfers_finish_at_k_times_size_over_capacity(k):
    env = simpy.Environment()
    link = SharedLink(env, bps=8e6)                      # 8 bits per µs
    size = 12_345                                        # bytes
    done = _finish_times(env, {i: link.transmit(size * 8, cap_bps=1e12) for i in range(k)})
    assert set(done.values()) == {math.ceil(k * size * 8 / 8)}     # k·size·8 / capacity, in µs


def test_fair_share_through_the_network_adds_the_delay_exactly():
    spec = NetworkSpec(uplink_mbps=1000, downlink_mbps=1000, delay_ms=20, jitter_ms=0,
                       cell={"devices": 4, "uplink_mbps": 10, "downlink_mbps": 10})
    env = simpy.Environment()
    net = Network(env, spec)
    procs = {i: net.transfer(device_link(spec, 0, i), i, 5_000, True, np.random.default_rng(i))
             for i in range(4)}
    done = _finish_times(env, procs)
    # 4 × 40,000 bits at 10 Mbit/s = 16 ms, after 20 ms of propagation
    assert set(done.values()) == {20_000 + 16_000}


def test_a_capped_flow_leaves_the_rest_to_the_others_and_late_joiners_share():
    env = simpy.Environment()
    link = SharedLink(env, bps=10e6)                     # 10 bits/µs
    a = link.transmit(10_000, cap_bps=2e6)               # capped at 2 bits/µs: needs 5000 µs
    b = link.transmit(40_000, cap_bps=1e12)              # gets 8 bits/µs while a runs
    done = _finish_times(env, {"a": a, "b": b})
    # a: 5000 µs. b: 40,000 bits at 8/µs for 5000 µs = 40,000 -> also done at 5000.
    assert done == {"a": 5_000, "b": 5_000}
    env = simpy.Environment()
    link = SharedLink(env, bps=10e6)
    first = link.transmit(30_000, cap_bps=1e12)

    def late():
        yield env.timeout(1_000)                         # first has 20,000 bits left
        yield link.transmit(5_000, cap_bps=1e12)         # both at 5 bits/µs: late needs 1000 µs
    done = _finish_times(env, {"first": first, "late": env.process(late())})
    assert done == {"late": 2_000, "first": 2_000 + 1_500}   # 20,000 - 5,000 = 15,000 left, then 10/µs alone


def _water(per_us: float, caps: list[float]) -> list[float]:
    """Max-min fair shares, flows taken by cap, then in start order: the water-filling, written plainly."""
    rates, left = [0.0] * len(caps), per_us
    for j, i in enumerate(sorted(range(len(caps)), key=lambda i: (caps[i], i))):
        rates[i] = min(caps[i], left / (len(caps) - j))
        left -= rates[i]
    return rates


@pytest.mark.parametrize("per_bps, cap_bps", [(1e9, 1e9), (1e9, 1e6), (3e7, 1e12)])
def test_shares_of_flows_of_one_cap_kept_per_count_are_the_water_filling_to_the_last_bit(per_bps, cap_bps):
    for n in (1, 2, 3, 7, 256, 1300):
        link = SharedLink(simpy.Environment(), bps=per_bps)
        for _ in range(n):
            link.transmit(1_000, cap_bps)
        assert list(link._fair_rates()) == _water(per_bps / 1e6, [cap_bps / 1e6] * n)
    mixed = SharedLink(simpy.Environment(), bps=per_bps)
    caps = [cap_bps * f for f in (1.0, 0.001, 3.0, 0.001, 1.0, 0.5)]
    for cap in caps:
        mixed.transmit(1_000, cap)
    assert list(mixed._fair_rates()) == _water(per_bps / 1e6, [c / 1e6 for c in caps])


def test_trace_integrates_capacity_over_time(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("# time_s Mbps\n0 1\n1 3\n2 0\n")     # 1 Mbit/s, then 3, then an outage; repeats every 3 s
    trace = Trace.load(path)
    assert trace.period_s == 3.0
    assert trace.transmit_s(1e6, 0.0) == pytest.approx(1.0)
    assert trace.transmit_s(2e6, 0.5) == pytest.approx(0.5 + 0.5)                  # 0.5 Mbit, then 1.5 Mbit at 3
    assert trace.transmit_s(4e6, 1.0) == pytest.approx(1.0 + 1.0 + 1.0)            # 3 Mbit, outage, 1 Mbit
    spec = NetworkSpec(trace=str(path), jitter_ms=0)
    offsets = {device_link(spec, 0, i, trace).trace_offset_s for i in range(5)}
    assert len(offsets) == 5 and all(0 <= o < 3 for o in offsets)                 # each device its own offset


@pytest.mark.parametrize("text,where", [("0 1\n1 x\n", ":2: expected 'time_s Mbps'"),
                                        ("0 1\n0 2\n", ":2: times must increase"), ("0 0\n", "above 0")])
def test_bad_trace_names_file_and_line(tmp_path, text, where):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DatasetError, match=where):
        Trace.load(path)


def test_loss_costs_rto_and_a_second_transmission():
    spec = NetworkSpec(uplink_mbps=8, delay_ms=10, jitter_ms=0, loss=0.5, rto_ms=100)
    link = device_link(spec, 0, 0)
    totals = []
    for s in range(300):
        env = simpy.Environment()
        Network(env, spec).transfer(link, 0, 1000, True, np.random.default_rng(s))
        env.run()
        totals.append(env.now)
    base = 10_000 + 1_000
    assert min(totals) == base and set((t - base) % (100_000 + 1_000) for t in totals) == {0}
    assert 0.4 < np.mean([t > base for t in totals]) < 0.6


def test_profiles_draw_per_device_and_order_by_technology():
    medians = {}
    for profile in ("wifi", "5g", "4g", "3g"):
        spec = NetworkSpec(profile=profile)
        links = [device_link(spec, 1, i) for i in range(400)]
        assert device_link(spec, 1, 7) == links[7]                                 # a device's own draw
        assert len({l.up_bps for l in links}) == 400
        medians[profile] = (np.median([l.up_bps for l in links]), np.median([l.delay_us for l in links]))
    assert medians["5g"][0] > medians["wifi"][0] > medians["4g"][0] > medians["3g"][0]
    assert medians["wifi"][1] < medians["4g"][1] < medians["3g"][1]
    with pytest.raises(ScenarioError, match="uplink_mbps apply to profile 'fixed' only"):
        parse_scenario({"name": "x", "network": {"profile": "4g", "uplink_mbps": 5}}, "x.yaml")


def test_shards_hold_whole_cells():
    scenario = parse_scenario({"name": "x", "devices": {"count": 20}, "split": {"device_users": 20},
                               "network": {"cell": {"devices": 4}}}, "x")
    shards = [shard_devices(scenario, i, 3) for i in range(3)]
    assert sorted(sum(shards, [])) == list(range(20))
    for devs in shards:
        assert all(set(range(c * 4, min(20, c * 4 + 4))) <= set(devs) for c in {d // 4 for d in devs})
