"""Device logic: what one simulated device knows, predicts and applies.

A device replays one held-out user's sequence. Its shared layers Θb are fixed,
so their output before every prediction event is computed once, up front, one
device at a time (a device's numbers never depend on which other devices share
its process). At each event the device runs its adaptive layers Θc (the
prototype's, or the last edit it applied) and ranks the true next item against
sampled negatives (``persona_sim.sim.scoring``, in batches).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..data.sequences import Dataset
from ..methods.base import DevicePart
from ..model.adaptation import nearest_group
from ..model.batching import pad_right
from ..model.local import local_data
from ..model.metrics import sample_negatives
from ..model.ondevice import own_output
from ..scenario.schema import Scenario
from ..train.bundle import Bundle
from ..wire.messages import device_id
from .arrivals import Arrivals
from .drift import DriftContext, Shift, inject
from .scoring import Stretch


@dataclass
class DevicePlan:
    """Everything about one device fixed before the simulation starts."""

    index: int
    device_id: str
    user: int
    items: np.ndarray          # the replayed sequence
    positions: np.ndarray      # (E,) index into items of each prediction event's target
    times_us: np.ndarray       # (E,) virtual time of each interaction
    cands: np.ndarray          # (E, 1 + K) per event: its true next item, then its sampled negatives (uint16
                               # where item ids fit)
    h: np.ndarray              # (E, D) shared-layer output before each event
    shifts: list[Shift]        # injected distribution shifts, in event order

    def window_after(self, event: int, w: int) -> tuple[int, ...]:
        """The device's last w items once it has seen event ``event``'s item."""
        t = int(self.positions[event]) + 1
        return tuple(self.items[max(0, t - w): t].tolist())


def device_rng(seed: int, index: int, purpose: int) -> np.random.Generator:
    """Independent, reproducible stream per (seed, device, purpose)."""
    return np.random.default_rng([seed, index, purpose])


@torch.inference_mode()
def shared_outputs(bundle: Bundle, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Θb's output after each prefix items[:t] for t in positions -> (E, D) float32."""
    L = bundle.model_spec.max_len
    out = np.empty((len(positions), bundle.model_spec.hidden), dtype=np.float32)
    short = positions <= L
    if short.any():
        upto = int(positions[short].max())
        h = bundle.shared(torch.from_numpy(items[:upto][None]))[0]            # (upto, D): causal, so every prefix at once
        out[short] = h[torch.from_numpy(positions[short] - 1)].numpy()
    for j in np.flatnonzero(~short):                                           # longer than max_len: the last L items
        t = int(positions[j])
        out[j] = bundle.shared(torch.from_numpy(items[t - L: t][None]))[0, -1].numpy()
    return out


@torch.no_grad()
def cluster_labels(bundle: Bundle, dataset: Dataset, users: np.ndarray, window: int) -> np.ndarray | None:
    """A cluster per user, so a takeover can prefer a user of another cluster: the Persona (m) group whose
    k-means centre is nearest to the global editor's edit of the user's last window (Eq. 9's partition),
    else the user's dominant item category, else None."""
    if bundle.models.groups is not None:
        windows = pad_right([dataset.sequences[int(u)][-window:] for u in users], window)
        return nearest_group(bundle.models, windows).prototype.numpy()
    if dataset.item_category is not None:
        cats = dataset.item_category
        return np.asarray([np.bincount(cats[dataset.sequences[int(u)]]).argmax() for u in users])
    return None


def plan_device(index: int, user: int, dataset: Dataset, scenario: Scenario, bundle: Bundle,
                drift: DriftContext | None = None, injectors: list = ()) -> DevicePlan:
    """The device's replayed stream (with its injected shifts), event times, negatives and Θb outputs."""
    context = scenario.split.context
    own_ts = dataset.timestamps[user][context:] if dataset.timestamps is not None else None
    arrivals = Arrivals(scenario.devices.arrivals, scenario.seed, index, own_ts)
    items, shifts = dataset.sequences[user], []
    if injectors:
        items, shifts = inject(items, int(user), index, list(injectors), scenario, drift, arrivals.event_times)
    positions = np.arange(context, len(items))
    times = arrivals.event_times(len(positions))
    small = np.uint16 if dataset.num_items < 2**16 else np.int32      # a quarter or half of int64's memory
    negatives = sample_negatives(device_rng(scenario.seed, index, 2), dataset.num_items, items,
                                 len(positions), scenario.eval.negatives).astype(small)
    cands = np.concatenate([items[positions][:, None].astype(small), negatives], axis=1)
    return DevicePlan(index, device_id(index), int(user), items, positions, times, cands,
                      shared_outputs(bundle, items, positions), shifts)


@dataclass
class DeviceState:
    """The device's adaptive layers and adaptation bookkeeping during one method's run."""

    params: dict[str, np.ndarray] | None   # float32; None: an edit applied before its values came
    edit_seq: int = 0                 # seq of the edit in use (0: the prototype's own Θc)
    next_seq: int = 1
    in_flight: bool = False
    busy_until: int = 0               # the device's processor is busy (predicting, applying) until then
    own_h: Callable[[int], np.ndarray] | None = None   # Θb's output before an event, once the device retrained Θb
    predicted: int = 0                # events predicted so far

    def stretch(self, plan: DevicePlan, lo: int, hi: int) -> Stretch:
        """Events [lo, hi) predicted with the layers in use (scored later, ``scoring.Scorer``)."""
        events = slice(lo, hi)
        if self.own_h is None:
            h = plan.h[events]
        else:                                                   # the device retrained Θb: its own outputs
            h = np.stack([self.own_h(e) for e in range(lo, hi)]).astype(np.float32)
        return Stretch(plan.device_id, lo, h, plan.cands[events], plan.times_us[events], self.params, self.edit_seq)


def prototype_params(bundle: Bundle) -> dict[str, np.ndarray]:
    return {k: v[0].numpy().astype(np.float32) for k, v in bundle.models.head.items()}


@dataclass
class DeviceUpdate:
    """What a device's own training produced, and what it cost its processor."""

    params: dict[str, np.ndarray]                     # its new Θc
    own_h: Callable[[int], np.ndarray] | None         # Θb's output before an event, when it retrained Θb
    cost_us: int


def learn_on_device(bundle: Bundle, scenario: Scenario, part: DevicePart, plan: DevicePlan, event: int, seq: int,
                    step_us: int) -> DeviceUpdate:
    """The device trains on everything it has seen up to event ``event`` (real steps, alone, so its result never
    depends on other devices). It pays steps × its fine-tuning step time × the step's share of the reference
    step (``DevicePart.step_share``)."""
    L = scenario.model.max_len
    known = plan.items[: int(plan.positions[event]) + 1]
    data = local_data([known], L, part.window, part.labelled)
    gen = torch.Generator().manual_seed(int(device_rng(scenario.seed, plan.index, 7 + seq).integers(2**62)))
    learned = part.learn(bundle.models, data, gen)
    share = part.step_share(scenario, bundle.num_items)
    params = {k: v[0].numpy().astype(np.float32) for k, v in learned.head.items()}
    own_h = None
    if learned.shared is not None:
        shared = {k: v[0] for k, v in learned.shared.items()}

        def own_h(e: int) -> np.ndarray:
            seq_e = torch.from_numpy(np.asarray(plan.items[: int(plan.positions[e])][-L:], dtype=np.int64))
            return own_output(bundle.models, shared, seq_e).numpy()
    return DeviceUpdate(params, own_h, int(round(part.steps * step_us * share)))
