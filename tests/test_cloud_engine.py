"""Cloud logic: bad requests fail alone; edits do not depend on batch company."""
from __future__ import annotations

import numpy as np
import pytest

from persona_sim.errors import BundleError, ProtocolError
from persona_sim.sim.cloud_engine import CloudEngine
from persona_sim.wire.messages import AdaptRequest, Hello


@pytest.fixture
def engine(tiny_world):
    scenario, _, _, path, bundle = tiny_world
    return CloudEngine(scenario, bundle, path.stat().st_size)


def _hello(bundle, shard=0, count=1, scenario_hash=None):
    from persona_sim.scenario.schema import parse_scenario
    from tests.conftest import TINY

    return Hello("test", bundle.signature, shard, count,
                 scenario_hash=scenario_hash or parse_scenario(dict(TINY)).run_hash())


def req(i, seq=1, window=(1, 2, 3), method="persona-s"):
    return AdaptRequest(f"dev-{i:06d}", seq, 1000, method, window)


def test_bad_requests_fail_one_by_one_and_the_rest_are_answered(engine):
    hello = _hello(engine.bundle)
    requests = [req(0), req(999), req(1, window=(1, 10_000)), req(2, window=()), req(3, method="dccl"), req(4)]
    edits, errors = engine.adapt(requests, hello)
    assert sorted(e.device_id for e in edits) == ["dev-000000", "dev-000004"]
    codes = {e.device_id: (e.code, e.message) for e in errors}
    assert codes["dev-000999"][0] == "UNKNOWN_DEVICE" and "dev-000999" in codes["dev-000999"][1]
    assert codes["dev-000001"][0] == "BAD_REQUEST" and "10000" in codes["dev-000001"][1]
    assert codes["dev-000002"][0] == "BAD_REQUEST" and "window has 0 items" in codes["dev-000002"][1]
    assert codes["dev-000003"][0] == "BAD_REQUEST" and "'dccl'" in codes["dev-000003"][1]


def test_replayed_sequence_number_is_refused(engine):
    hello = _hello(engine.bundle)
    assert len(engine.adapt([req(0, seq=5)], hello)[0]) == 1
    edits, errors = engine.adapt([req(0, seq=5)], hello)
    assert not edits and errors[0].code == "BAD_REQUEST" and "not above the last seen 5" in errors[0].message


def test_device_outside_the_nodes_shard_is_unknown(engine):
    # TINY puts devices in cells of 4, and a shard holds whole cells: device 4 (cell 1) is shard 1 of 2
    edits, errors = engine.adapt([req(4)], _hello(engine.bundle, shard=0, count=2))
    assert not edits and errors[0].code == "UNKNOWN_DEVICE" and "shard 0/2" in errors[0].message


def test_hello_with_another_model_is_refused(engine):
    with pytest.raises(ProtocolError, match="does not match") as err:
        engine.check_hello(Hello("n", "other-signature", scenario_hash=engine.scenario_hash))
    assert err.value.code == "MODEL_MISMATCH"


@pytest.mark.parametrize("method", ["persona-s", "persona-m"])
def test_a_batch_of_k_gives_exactly_the_edits_each_request_gets_alone(engine, method):
    """The reference is each request computed alone; a real call of any size (padded to whole row blocks,
    windows of mixed lengths) must give the same bits, so merging batches never changes a result."""
    rng = np.random.default_rng(0)
    n_items = engine.bundle.num_items
    reqs = [req(i, window=tuple(int(x) for x in rng.integers(1, n_items + 1, rng.integers(1, 9))), method=method)
            for i in range(41)]
    alone = [engine.compute(method, [r])[0] for r in reqs]
    for k in (2, 7, 8, 9, 41):
        together = engine.compute(method, reqs[:k])
        for a, b in zip(alone, together):
            assert (a.device_id, a.prototype_id, a.edit_norm) == (b.device_id, b.prototype_id, b.edit_norm)
            assert all(a.params[n].tobytes() == b.params[n].tobytes() for n in a.params), (k, a.device_id)


def test_edit_is_identical_alone_or_in_a_batch(engine):
    hello = _hello(engine.bundle)
    alone, _ = engine.adapt([req(5, window=(7, 8, 9))], hello)
    batch = [req(i, seq=2, window=(i + 1, 3)) for i in range(5)] + [req(5, seq=2, window=(7, 8, 9))]
    together, _ = engine.adapt(batch, hello)
    mine = [e for e in together if e.device_id == "dev-000005"][0]
    for k in alone[0].params:
        assert alone[0].params[k].tobytes() == mine.params[k].tobytes()
    assert alone[0].edit_norm == mine.edit_norm


def test_edit_changes_with_the_window_and_stays_within_the_clip(engine):
    hello = _hello(engine.bundle)
    (a,), _ = engine.adapt([req(0, window=(1, 2, 3))], hello)
    (b,), _ = engine.adapt([req(1, window=(30, 31, 32))], hello)
    assert any((a.params[k] != b.params[k]).any() for k in a.params)
    clip = engine.scenario.persona.clip
    for k, proto in engine.bundle.models.head.items():
        assert abs(a.params[k] - proto[0].numpy()).max() <= clip + 1e-6


def test_bundle_for_another_scenario_is_refused(tiny_world):
    scenario, _, _, path, bundle = tiny_world
    other = scenario.model_copy(update={"seed": scenario.seed + 1})
    with pytest.raises(BundleError, match="trained for another scenario"):
        CloudEngine(other, bundle, 1)
