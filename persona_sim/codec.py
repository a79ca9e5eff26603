"""The one place that converts between protobuf messages and core types.

Decoding validates: a frame with the wrong tensor dtype, a shape that does not
match its bytes, or a missing field raises ``ProtocolError`` naming the message
and field. Sizes charged to the simulated network are the real serialized
sizes of what a device would send or receive on its own, i.e. a frame carrying
just its message plus gRPC's 5-byte message prefix.
"""
from __future__ import annotations

import numpy as np

from .errors import ProtocolError
from .messages import AdaptRequest, CloudInfo, EditResult, Hello, RequestError
from .proto import persona_pb2 as pb

GRPC_PREFIX_BYTES = 5
FRAME_SLACK = 64 * 1024   # gRPC's cap sits this far above max_frame_bytes: room for framing
_NP_DTYPE = {pb.FLOAT32: np.dtype("<f4"), pb.FLOAT16: np.dtype("<f2"), pb.FLOAT64: np.dtype("<f8"),
             pb.INT64: np.dtype("<i8")}


# ---- tensors -------------------------------------------------------------------------

def tensor_to_pb(name: str, array: np.ndarray, dtype: int = pb.FLOAT32) -> pb.Tensor:
    arr = np.ascontiguousarray(array, dtype=_NP_DTYPE[dtype])
    return pb.Tensor(name=name, dtype=dtype, shape=list(arr.shape), data=arr.tobytes())


def tensor_from_pb(t: pb.Tensor, where: str) -> np.ndarray:
    if t.dtype not in _NP_DTYPE:
        raise ProtocolError("BAD_FRAME", f"{where}: tensor '{t.name}' has unsupported dtype {t.dtype}")
    dt = _NP_DTYPE[t.dtype]
    shape = tuple(int(s) for s in t.shape)
    if any(s < 0 for s in shape):
        raise ProtocolError("BAD_FRAME", f"{where}: tensor '{t.name}' has a negative dimension in shape {shape}")
    expected = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if expected != len(t.data):
        raise ProtocolError("BAD_FRAME", f"{where}: tensor '{t.name}' shape {shape} needs {expected} bytes, "
                                         f"got {len(t.data)}")
    return np.frombuffer(t.data, dtype=dt).reshape(shape).astype(np.float32)


# ---- requests ------------------------------------------------------------------------

def request_to_pb(req: AdaptRequest) -> pb.AdaptRequest:
    return pb.AdaptRequest(device_id=req.device_id, seq=req.seq, issued_us=req.issued_us,
                           method=req.method, window=list(req.window))


def request_from_pb(msg: pb.AdaptRequest) -> AdaptRequest:
    if not msg.device_id:
        raise ProtocolError("BAD_REQUEST", "AdaptRequest.device_id is empty", "", msg.seq)
    return AdaptRequest(msg.device_id, int(msg.seq), int(msg.issued_us), msg.method, tuple(int(i) for i in msg.window))


def request_wire_bytes(req: AdaptRequest) -> int:
    """Upload size of this request sent alone: DeviceFrame{RequestBatch{[req]}} + gRPC prefix."""
    frame = pb.DeviceFrame(requests=pb.RequestBatch(requests=[request_to_pb(req)]))
    return frame.ByteSize() + GRPC_PREFIX_BYTES


def request_batch_frame(frame_id: int, requests: list[AdaptRequest]) -> pb.DeviceFrame:
    return pb.DeviceFrame(requests=pb.RequestBatch(frame_id=frame_id, requests=[request_to_pb(r) for r in requests]))


# ---- edits ---------------------------------------------------------------------------

def edit_to_pb(edit: EditResult, dtype: int = pb.FLOAT32) -> pb.EditPush:
    return pb.EditPush(
        device_id=edit.device_id, seq=edit.seq, prototype_id=edit.prototype_id,
        tensors=[tensor_to_pb(name, edit.params[name], dtype) for name in sorted(edit.params)],
        edit_norm=edit.edit_norm, compute_ns=edit.compute_ns,
    )


def edit_wire_bytes(msg: pb.EditPush) -> int:
    """Download size of this edit sent alone, excluding the wall-clock diagnostic field.

    compute_ns is a measured time whose varint length varies run to run; leaving
    it out keeps the charged bytes (and so the virtual times) reproducible.
    """
    canonical = pb.EditPush()
    canonical.CopyFrom(msg)
    canonical.ClearField("compute_ns")
    frame = pb.CloudFrame(edits=pb.EditBatch(final=True, edits=[canonical]))
    return frame.ByteSize() + GRPC_PREFIX_BYTES


def edit_from_pb(msg: pb.EditPush) -> EditResult:
    where = f"EditPush(device_id={msg.device_id!r}, seq={msg.seq})"
    params = {t.name: tensor_from_pb(t, where) for t in msg.tensors}
    return EditResult(msg.device_id, int(msg.seq), int(msg.prototype_id), params, float(msg.edit_norm),
                      int(msg.compute_ns), edit_wire_bytes(msg))


def error_to_pb(err: RequestError) -> pb.Error:
    return pb.Error(code=pb.ErrorCode.Value(err.code), message=err.message, device_id=err.device_id, seq=err.seq)


def error_from_pb(msg: pb.Error) -> RequestError:
    return RequestError(msg.device_id, int(msg.seq), pb.ErrorCode.Name(msg.code), msg.message)


def edit_batches(frame_id: int, edits: list[pb.EditPush], errors: list[RequestError],
                 max_bytes: int) -> list[pb.CloudFrame]:
    """Split one reply into CloudFrames of at most ``max_bytes`` each; the last is marked final."""
    frames, current, size = [], pb.EditBatch(frame_id=frame_id), 0
    budget = max_bytes - 64   # room for the frame header, frame_id and final flag
    for msg in edits:
        n = msg.ByteSize() + 8
        if n > budget:
            raise ProtocolError("INTERNAL", f"one edit ({n} bytes) exceeds the frame cap of {max_bytes} bytes; "
                                            "raise cloud.max_frame_mb")
        if size + n > budget and current.edits:
            frames.append(current)
            current, size = pb.EditBatch(frame_id=frame_id), 0
        current.edits.append(msg)
        size += n
    current.errors.extend(error_to_pb(e) for e in errors)
    frames.append(current)
    frames[-1].final = True
    return [pb.CloudFrame(edits=f) for f in frames]


# ---- control -------------------------------------------------------------------------

def hello_to_pb(h: Hello) -> pb.DeviceFrame:
    return pb.DeviceFrame(hello=pb.Hello(
        protocol_version=h.protocol_version, node_id=h.node_id, model_signature=h.model_signature,
        codecs=[pb.DType.Value(c) for c in h.codecs], shard_index=h.shard_index, shard_count=h.shard_count))


def hello_from_pb(msg: pb.Hello) -> Hello:
    if msg.shard_count == 0 or msg.shard_index >= msg.shard_count:
        raise ProtocolError("BAD_FRAME", f"Hello: shard {msg.shard_index}/{msg.shard_count} is not a valid shard")
    return Hello(msg.node_id, msg.model_signature, int(msg.shard_index), int(msg.shard_count),
                 int(msg.protocol_version), tuple(pb.DType.Name(c) for c in msg.codecs) or ("FLOAT32",))


def info_to_pb(info: CloudInfo) -> pb.CloudInfo:
    return pb.CloudInfo(protocol_version=info.protocol_version, cloud_id=info.cloud_id,
                        model_signature=info.model_signature, model_bytes=info.model_bytes,
                        scenario_name=info.scenario_name, methods=list(info.methods),
                        max_frame_bytes=info.max_frame_bytes, device_count=info.device_count)


def info_from_pb(msg: pb.CloudInfo) -> CloudInfo:
    return CloudInfo(msg.cloud_id, msg.model_signature, int(msg.model_bytes), msg.scenario_name,
                     tuple(msg.methods), int(msg.max_frame_bytes), int(msg.device_count), int(msg.protocol_version))


def channel_options(max_frame_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel/server options that cap message size on both ends."""
    limit = max_frame_bytes + FRAME_SLACK
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
