"""Core message types exchanged between device logic and cloud logic.

Plain data, no protobuf: ``persona_sim.wire.codec`` is the one place that converts
them to and from the wire format.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PROTOCOL_VERSION = 5
EDIT_CODECS = ("FLOAT32", "FLOAT16", "INT8")   # edit tensor encodings a node of this version accepts


@dataclass(frozen=True)
class AdaptRequest:
    device_id: str
    seq: int
    issued_us: int
    method: str
    window: tuple[int, ...]


@dataclass
class EditResult:
    device_id: str
    seq: int
    prototype_id: int
    params: dict[str, np.ndarray] | None   # the device's new adaptive-layer parameters (float32); None: pending,
    edit_norm: float                       # its values (params, prototype_id, edit_norm) follow in a later reply
    compute_ns: int = 0             # measured wall time of the real computation
    wire_bytes: int = 0             # charged download size, set by the codec
    enqueued_us: int = -1           # virtual times inside the cloud, set by its clock
    compute_start_us: int = -1
    compute_end_us: int = -1
    departed_us: int = -1
    encoded: object = None          # the cloud's encoded EditPush (persona_sim.wire.codec.EditEncoder), if any


@dataclass(frozen=True)
class RequestError:
    device_id: str
    seq: int
    code: str                       # a persona_sim.wire.proto ErrorCode name, e.g. "UNKNOWN_DEVICE"
    message: str


@dataclass(frozen=True)
class Arrival:
    """A request whose last byte left the device's link at virtual time ``arrived_us``."""

    request: AdaptRequest
    arrived_us: int


@dataclass(frozen=True)
class RoundReport:
    """A shard's report for one lockstep round (see persona_sim.sim.lockstep)."""

    method: str
    until_us: int                   # every event before this is simulated (the same for every shard)
    next_arrival_us: int | None     # no further arrival before this; None: none will come
    arrivals: tuple[Arrival, ...] = ()


@dataclass
class RoundReply:
    """The cloud's answer: the replies that leave it before ``until_us``, the next round's time
    (None: no more rounds, run to the end), and wall-clock diagnostics."""

    results: list                   # EditResult | RequestError
    until_us: int | None
    server_ns: int = 0              # the cloud's work on the round
    wait_ns: int = 0                # this report's wait for the other shards'
    codec_ns: int = 0               # the node's encoding and decoding of the round (set by the transport)
    values: list = field(default_factory=list)   # EditResult: the values of edits sent pending in earlier replies
    value_blocks: list = field(default_factory=list)   # bytes: the same values as the cloud sends them, serialized
                                                       # EditValues (``codec.values_blocks``); a node decodes them


@dataclass(frozen=True)
class Hello:
    node_id: str
    model_signature: str
    shard_index: int = 0
    shard_count: int = 1
    protocol_version: int = PROTOCOL_VERSION
    codecs: tuple[str, ...] = EDIT_CODECS
    scenario_hash: str = ""          # Scenario.run_hash() of the node's scenario
    partial_edits: bool = True       # keeps the layers an edit leaves out (delta edits)


@dataclass(frozen=True)
class CloudInfo:
    cloud_id: str
    model_signature: str
    model_bytes: int
    scenario_name: str
    methods: tuple[str, ...]
    max_frame_bytes: int
    device_count: int
    protocol_version: int = PROTOCOL_VERSION
    scenario_json: str = "{}"        # the cloud's Scenario.run_view(), as JSON
    dataset_fingerprint: str = ""    # the model's training data; FetchDataset serves it when set


def device_id(index: int) -> str:
    return f"dev-{index:06d}"


def device_index(device_id_: str) -> int | None:
    """The index in 'dev-000123', or None when the id is not of that form."""
    prefix, _, digits = device_id_.partition("-")
    if prefix != "dev" or not digits.isdigit():
        return None
    return int(digits)

