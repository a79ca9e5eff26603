"""Core message types exchanged between device logic and cloud logic.

Plain data, no protobuf: ``persona_sim.codec`` is the one place that converts
them to and from the wire format.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROTOCOL_VERSION = 1


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
    params: dict[str, np.ndarray]   # the device's new adaptive-layer parameters (float32)
    edit_norm: float
    compute_ns: int = 0             # measured wall time (diagnostic; never enters simulated results)
    wire_bytes: int = 0             # charged download size, set by the codec


@dataclass(frozen=True)
class RequestError:
    device_id: str
    seq: int
    code: str                       # a persona_sim.proto ErrorCode name, e.g. "UNKNOWN_DEVICE"
    message: str


@dataclass(frozen=True)
class Hello:
    node_id: str
    model_signature: str
    shard_index: int = 0
    shard_count: int = 1
    protocol_version: int = PROTOCOL_VERSION
    codecs: tuple[str, ...] = ("FLOAT32",)


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


def device_id(index: int) -> str:
    return f"dev-{index:06d}"


def device_index(device_id_: str) -> int | None:
    """The index in 'dev-000123', or None when the id is not of that form."""
    prefix, _, digits = device_id_.partition("-")
    if prefix != "dev" or not digits.isdigit():
        return None
    return int(digits)

