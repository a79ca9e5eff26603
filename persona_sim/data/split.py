"""Who trains the cloud's models and who is simulated as a device.

Device users are held out of training entirely: a device replays a user the
cloud never saw, so every replayed interaction is an honest prediction event.
Training users are split again: a ``valid_fraction`` of them keep their last
item for model selection (never the device users' data).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DatasetError
from ..scenario.schema import Scenario
from .dataset import Dataset


@dataclass(frozen=True)
class Split:
    train_users: np.ndarray    # user indices whose whole sequences train the models
    valid_users: np.ndarray    # train on all but the last item; the last item selects models
    device_users: np.ndarray   # held out; device i replays device_users[i]


def split_users(dataset: Dataset, scenario: Scenario) -> Split:
    spec = scenario.split
    long_enough = np.asarray([len(s) > spec.context for s in dataset.sequences])
    eligible = np.flatnonzero(long_enough)
    if len(eligible) < spec.device_users:
        raise DatasetError(
            f"dataset '{dataset.name}' has {len(eligible)} users with more than split.context="
            f"{spec.context} items, fewer than split.device_users={spec.device_users}"
        )
    rng = np.random.default_rng([scenario.seed, 0x5A17])
    devices = np.sort(rng.choice(eligible, size=spec.device_users, replace=False))
    rest = np.setdiff1d(np.arange(dataset.num_users), devices)
    rest = rng.permutation(rest)
    n_valid = max(1, int(round(len(rest) * spec.valid_fraction)))
    valid = np.sort(rest[:n_valid])
    train = np.sort(rest[n_valid:])
    if len(train) == 0:
        raise DatasetError(f"dataset '{dataset.name}' leaves no training users after the split")
    return Split(train, valid, devices)


PROTOCOLS = ("holdout", "leave-one-out", "realtime")


@dataclass(frozen=True)
class Cases:
    """Prediction cases: per case, the history before the target, the target, and the user's whole sequence."""

    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class TrainingData:
    """What the cloud trains on, what selects its models, and (leave-one-out only) what tests them."""

    protocol: str
    sequences: list[np.ndarray]      # historical data D_H
    valid: Cases                     # model selection only
    test: Cases | None               # the offline test: each user's last item, or every real-time event


def _cases(dataset: Dataset, users: np.ndarray, cut: int) -> Cases:
    """The item at len - cut as target, the items before it as history."""
    seqs = [dataset.sequences[u] for u in users]
    return Cases(users, [s[: len(s) - cut] for s in seqs], np.asarray([s[len(s) - cut] for s in seqs], dtype=np.int64))


def protocol_id(scenario: Scenario, protocol: str) -> str:
    """The protocol as cache keys see it: ``realtime`` carries the split settings that change its training data."""
    if protocol == "realtime":
        r = scenario.eval.realtime
        return f"realtime(fraction={r.fraction},by={r.by})"
    return protocol


def realtime_cuts(dataset: Dataset, scenario: Scenario) -> np.ndarray:
    """Per user, how many of its first interactions are history under ``eval.realtime``."""
    spec = scenario.eval.realtime
    lengths = dataset.sequences.lengths
    if spec.by == "position":   # at least 2 history items (one trains, one validates) and 1 test event
        return np.where(lengths >= 3, np.clip(np.floor(spec.fraction * lengths).astype(np.int64), 2, lengths - 1),
                        lengths)
    if dataset.timestamps is None:
        raise DatasetError(f"eval.realtime.by: 'time' needs timestamps, and dataset '{dataset.name}' has none "
                           "(its format does not carry them); use by: position")
    ts = dataset.timestamps                        # each user's interactions are in time order
    before = np.concatenate([[0], np.cumsum(ts.flat < np.quantile(ts.flat, spec.fraction))])
    return before[ts.offsets[1:]] - before[ts.offsets[:-1]]


def _realtime(dataset: Dataset, scenario: Scenario) -> TrainingData:
    """Per user: history = the first ``cut`` interactions (all but its last train, the last validates); every
    later interaction is a test event whose history is everything before it. Nothing at or after a user's cut
    enters training or validation."""
    cuts = realtime_cuts(dataset, scenario)
    seqs, valid_users, test_users, histories, targets = [], [], [], [], []
    for u, cut in enumerate(cuts):
        s = dataset.sequences[u]
        if cut >= 2:
            seqs.append(s[: cut - 1])
            valid_users.append(u)
        for t in range(max(int(cut), 1), len(s)):
            test_users.append(u)
            histories.append(s[:t])
            targets.append(s[t])
    if not test_users:
        raise DatasetError(f"dataset '{dataset.name}' leaves no real-time test event under eval.realtime "
                           f"(fraction {scenario.eval.realtime.fraction}, by {scenario.eval.realtime.by})")
    valid_users = np.asarray(valid_users, dtype=np.int64)
    valid = Cases(valid_users, [dataset.sequences[u][: cuts[u] - 1] for u in valid_users],
                  np.asarray([dataset.sequences[u][cuts[u] - 1] for u in valid_users], dtype=np.int64))
    test = Cases(np.asarray(test_users, dtype=np.int64), histories, np.asarray(targets, dtype=np.int64))
    return TrainingData("realtime", [s for s in seqs if len(s) >= 2], valid, test)


def training_data(dataset: Dataset, scenario: Scenario, protocol: str) -> TrainingData:
    """``holdout``: device users never trained on; validation users keep their last item.
    ``leave-one-out`` (DESIGN §3): per user, last item = test, second-to-last = validation, rest = history;
    users with fewer than 3 items only train.
    ``realtime`` (``eval.realtime``): a per-user temporal split, every later interaction a test event."""
    if protocol == "realtime":
        return _realtime(dataset, scenario)
    if protocol == "holdout":
        split = split_users(dataset, scenario)
        seqs = [dataset.sequences[u] for u in split.train_users] + [dataset.sequences[u][:-1] for u in split.valid_users]
        return TrainingData(protocol, seqs, _cases(dataset, split.valid_users, 1), None)
    if protocol != "leave-one-out":
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
    lengths = np.asarray([len(s) for s in dataset.sequences])
    users = np.flatnonzero(lengths >= 3)
    if len(users) == 0:
        raise DatasetError(f"dataset '{dataset.name}' has no user with 3 or more items to evaluate")
    seqs = [s[:-2] if len(s) >= 3 else s for s in dataset.sequences]
    return TrainingData(protocol, [s for s in seqs if len(s) >= 2], _cases(dataset, users, 2), _cases(dataset, users, 1))
