"""The realtime protocol: a per-user temporal split that never trains on a test event or its future, and the
authors'-style per-user metrics over several positives."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from persona_sim.cli import main
from persona_sim.data.sequences import Dataset, Sequences
from persona_sim.data.split import realtime_cuts, training_data
from persona_sim.errors import DatasetError
from persona_sim.model.metrics import user_metrics
from persona_sim.scenario.schema import parse_scenario
from persona_sim.train.bundle import training_key


def _dataset(lengths, timestamps=None) -> Dataset:
    """Every interaction its own item (user u's t-th item = 100 u + t + 1), so an item names its position."""
    seqs = [np.arange(len_) + 100 * u + 1 for u, len_ in enumerate(lengths)]
    ts = Sequences.from_arrays(timestamps, dtype=np.float64) if timestamps is not None else None
    return Dataset("rt", 100 * len(lengths), Sequences.from_arrays(seqs), None, ts)


def _scenario(**realtime):
    return parse_scenario({"name": "rt", "split": {"device_users": 1}, "devices": {"count": 1},
                           "eval": {"protocol": "realtime", "realtime": realtime}})


def _position(item: int) -> tuple[int, int]:
    return (item - 1) // 100, (item - 1) % 100


@pytest.mark.parametrize("realtime, timestamps", [
    ({"fraction": 0.6}, None),
    ({"fraction": 0.3}, None),
    ({"fraction": 0.5, "by": "time"}, [[1, 2, 3, 9, 10], [4, 5, 6, 7, 8, 11, 12, 13, 14, 15, 16, 17], [1, 20, 21],
                                       [18, 19, 22, 23]]),
])
def test_no_test_event_or_its_future_ever_trains_or_validates(realtime, timestamps):
    lengths = [5, 12, 3, 4] if timestamps else [5, 12, 3, 2, 9]
    ds, sc = _dataset(lengths, timestamps), _scenario(**realtime)
    cuts = realtime_cuts(ds, sc)
    data = training_data(ds, sc, "realtime")
    first_test = {}
    for u, item in zip(data.test.users, data.test.targets):
        first_test[u] = min(first_test.get(u, 99), _position(item)[1])
    for u, cut in enumerate(cuts):
        events = [int(t) for uu, t in zip(data.test.users, data.test.targets) if uu == u]
        assert [_position(t)[1] for t in events] == list(range(max(int(cut), 1), lengths[u]))
    for seq in data.sequences:                          # training: strictly before the user's first test event
        u = _position(seq[0])[0]
        assert all(_position(i)[1] < min(first_test.get(u, 99), cuts[u] - 1) for i in seq)
    for u, hist, target in zip(data.valid.users, data.valid.histories, data.valid.targets):
        assert _position(target)[1] == cuts[u] - 1 < first_test.get(u, 99)
        assert list(hist) == list(ds.sequences[u][: cuts[u] - 1])
    for u, hist, target in zip(data.test.users, data.test.histories, data.test.targets):
        assert list(hist) == list(ds.sequences[u][: _position(target)[1]])   # the past only, never the target


def test_position_split_keeps_history_and_test_non_empty():
    cuts = realtime_cuts(_dataset([3, 4, 10, 2]), _scenario(fraction=0.6))
    assert cuts.tolist() == [2, 2, 6, 2]                # >= 2 history items, >= 1 test event (when 3+ items)


def test_time_split_needs_timestamps():
    with pytest.raises(DatasetError, match="by: 'time' needs timestamps"):
        training_data(_dataset([5, 6]), _scenario(by="time"), "realtime")


def test_realtime_settings_are_part_of_the_training_key():
    keys = {training_key(s, p) for s, p in [(_scenario(fraction=0.6), "realtime"), (_scenario(fraction=0.5), "realtime"),
                                            (_scenario(fraction=0.6), "leave-one-out")]}
    assert len(keys) == 3
    assert training_key(_scenario(fraction=0.5), "leave-one-out") == training_key(_scenario(), "leave-one-out")


def test_user_metrics_equal_hand_computed_values():
    # User 7: two events, two negatives each. Pooled ranking by score: 0.9 (pos), 0.8 (neg), 0.7 (pos),
    # 0.6 (neg), 0.5 (neg), 0.1 (neg). User 3: one event whose positive ties a negative (ties go to positives).
    users = np.array([7, 3, 7])
    scores = np.array([[0.9, 0.8, 0.1],
                       [0.4, 0.4, 0.9],
                       [0.7, 0.6, 0.5]])
    m = user_metrics(users, scores)
    d = 1 / np.log2(np.arange(2, 8))                    # discounts of ranks 1..6
    # users come out in increasing id: [3, 7]
    assert m["user_hr@5"].tolist() == [1.0, 1.0]
    assert m["user_ndcg@5"][1] == pytest.approx((d[0] + d[2]) / (d[0] + d[1]))
    assert m["user_ndcg@5"][0] == pytest.approx(d[1] / d[0])   # 0.9 above, then the positive before its tie
    assert m["user_auc"][1] == pytest.approx((4 + 3) / 8)      # 0.9 beats 4 negatives, 0.7 beats 3
    assert m["user_auc"][0] == pytest.approx(0.5 / 2)          # one tie (a half), one loss
    # With one positive per user the per-user metrics are the per-event ones.
    one = user_metrics(np.array([0, 1]), np.array([[0.5, 0.9, 0.1], [0.9, 0.1, 0.2]]))
    assert one["user_ndcg@5"].tolist() == pytest.approx([1 / np.log2(3), 1.0])


def test_eval_runs_the_realtime_protocol_end_to_end(tiny_dict, tmp_path):
    tiny_dict["eval"] = {"negatives": 20, "protocol": "realtime", "realtime": {"fraction": 0.6}}
    path = tmp_path / "rt.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))
    out = tmp_path / "ev"
    assert main(["eval", str(path), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "realtime" and summary["realtime"] == {"fraction": 0.6, "by": "position"}
    for m in summary["methods"].values():
        assert m["cases"] > m["users"] > 0 and 0 <= m["user_ndcg@5"] <= 1 and 0 <= m["user_auc"] <= 1
    stored = np.load(out / "cases-seed-3.npz")
    assert stored["candidates"].shape == (summary["methods"]["static"]["cases"], 21)
    assert len(np.unique(stored["users"])) == summary["methods"]["static"]["users"]
    report = (out / "report.md").read_text()
    assert "protocol **realtime**" in report and "Per user, over several positives" in report
