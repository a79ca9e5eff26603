"""Who trains the cloud's models and who is simulated as a device.

Device users are held out of training entirely: a device replays a user the
cloud never saw, so every replayed interaction is an honest prediction event.
Training users are split again: a ``valid_fraction`` of them keep their last
item for model selection (never the device users' data).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Scenario
from .dataset import Dataset
from .errors import DatasetError


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
