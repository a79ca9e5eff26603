"""The one place that converts between protobuf messages and core types.

Decoding validates: a frame with the wrong tensor dtype, a shape that does not
match its bytes, or a missing field raises ``ProtocolError`` naming the message
and field. Sizes charged to the simulated network are the real serialized
sizes of what a device would send or receive on its own, i.e. a frame carrying
just its message plus gRPC's 5-byte message prefix.
"""
from __future__ import annotations

import math

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import ProtocolError
from .messages import AdaptRequest, Arrival, CloudInfo, EditResult, Hello, RequestError, RoundReply, RoundReport
from .proto import persona_pb2 as pb

GRPC_PREFIX_BYTES = 5
FRAME_SLACK = 64 * 1024   # gRPC's cap sits this far above max_frame_bytes: room for framing
_NP_DTYPE = {pb.FLOAT32: np.dtype("<f4"), pb.FLOAT16: np.dtype("<f2"), pb.FLOAT64: np.dtype("<f8"),
             pb.INT64: np.dtype("<i8"), pb.INT8: np.dtype("i1")}
INT8_LEVELS = 127
_TENSORS = pb.EditPush.DESCRIPTOR.fields_by_name["tensors"]


# ---- tensors -------------------------------------------------------------------------

def tensor_to_pb(name: str, array: np.ndarray, dtype: int = pb.FLOAT32) -> pb.Tensor:
    """A tensor in ``dtype``. INT8 quantises with one scale, max |x| / 127: every value is off by at most half a
    scale step. FLOAT16 rounds to 11 significant bits (relative error at most 2^-11)."""
    t = pb.Tensor(name=name, dtype=dtype)
    if dtype == pb.INT8:
        values = np.asarray(array, dtype=np.float32)
        q, scale = _quantised(values.reshape(1, -1 if values.size else 0))
        t.shape.extend(values.shape)
        t.data, t.scale = q.tobytes(), float(scale[0])
        return t
    arr = np.ascontiguousarray(array, dtype=_NP_DTYPE[dtype])
    t.shape.extend(arr.shape)
    t.data = arr.tobytes()
    return t


def _quantised(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 rows (n, m) -> int8 rows and each row's scale, max |x| / 127 (1 for a row of zeros)."""
    peak = np.abs(rows).max(axis=1, initial=0.0)
    scale = np.where(peak > 0, peak.astype(np.float64) / INT8_LEVELS, 1.0).astype(np.float32)
    return np.clip(np.rint(rows / scale[:, None]), -INT8_LEVELS, INT8_LEVELS).astype(np.int8), scale


def tensor_from_pb(t: pb.Tensor, where: str, rows: bool = False) -> np.ndarray:
    """A tensor as float32, an array of its own; with ``rows``, an INT8 one is scaled row by row (``row_scales``),
    and a FLOAT32 one may be a read-only view of the message's bytes."""
    if t.dtype not in _NP_DTYPE:
        raise ProtocolError("BAD_FRAME", f"{where}: tensor '{t.name}' has unsupported dtype {t.dtype}")
    dt = _NP_DTYPE[t.dtype]
    shape = tuple(int(s) for s in t.shape)
    if any(s < 0 for s in shape) or (rows and not shape):
        raise ProtocolError("BAD_FRAME", f"{where}: tensor '{t.name}' has shape {shape}")
    expected = math.prod(shape) * dt.itemsize            # Python ints: a hostile shape cannot overflow
    if expected != len(t.data):
        raise ProtocolError("BAD_FRAME", f"{where}: tensor '{t.name}' shape {shape} needs {expected} bytes, "
                                         f"got {len(t.data)}")
    array = np.frombuffer(t.data, dtype=dt).reshape(shape)
    if not rows or t.dtype != pb.FLOAT32:     # rows: read-only float32 is fine, the caller copies each row out
        array = array.astype(np.float32)
    if t.dtype == pb.INT8:
        scales = np.asarray(t.row_scales if rows else [t.scale], dtype=np.float32)
        if len(scales) != (shape[0] if rows else 1) or not (np.isfinite(scales) & (scales > 0)).all():
            raise ProtocolError("BAD_FRAME", f"{where}: INT8 tensor '{t.name}' has scale(s) {scales[:4].tolist()} "
                                             f"for shape {shape}; each must be finite and positive, one per row in "
                                             "EditValues")
        array *= scales.reshape((-1,) + (1,) * (array.ndim - 1)) if rows else scales[0]
    if not np.isfinite(array).all():
        raise ProtocolError("BAD_FRAME", f"{where}: tensor '{t.name}' holds NaN or infinite values")
    return array


def _varint_bytes(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field_head(number: int, n: int) -> bytes:
    """The tag and length that open a length-delimited field (bytes, a message) of n bytes."""
    return _varint(number << 3 | 2) + _varint(n)


_U64 = 2**64 - 1   # a negative int64 is a 10-byte varint


# ---- requests ------------------------------------------------------------------------

def request_to_pb(req: AdaptRequest, into: pb.AdaptRequest | None = None) -> pb.AdaptRequest:
    msg = pb.AdaptRequest() if into is None else into
    msg.device_id, msg.seq, msg.issued_us, msg.method = req.device_id, req.seq, req.issued_us, req.method
    msg.window.extend(req.window)
    return msg


def request_from_pb(msg: pb.AdaptRequest) -> AdaptRequest:
    if not msg.device_id:
        raise ProtocolError("BAD_REQUEST", "AdaptRequest.device_id is empty", "", msg.seq)
    return AdaptRequest(msg.device_id, int(msg.seq), int(msg.issued_us), msg.method, tuple(msg.window))


def request_wire_bytes(req: AdaptRequest) -> int:
    """Upload size of this request sent alone: DeviceFrame{RequestBatch{[req]}} + gRPC prefix, counted field
    by field as protobuf serializes them (``tests/test_codec.py`` checks it against ``ByteSize``): every
    device computes it for every request, and building the message costs ten times as much."""
    window = sum(((i.bit_length() + 6) // 7 or 1) if i >= 0 else 10 for i in req.window)   # varints
    return _message_field(_message_field(_request_bytes(req, window))) + GRPC_PREFIX_BYTES


def _request_bytes(req: AdaptRequest, window: int, arrived_us: int = 0) -> int:
    """An AdaptRequest's serialized size, given its window's varints' (``window`` bytes)."""
    return (_len_field(len(req.device_id.encode())) + _len_field(len(req.method.encode()))
            + (window and _len_field(window)) + (req.seq and 1 + _varint_bytes(req.seq & _U64))
            + (req.issued_us and 1 + _varint_bytes(req.issued_us & _U64))
            + (arrived_us and 1 + _varint_bytes(arrived_us & _U64)))


def _window_bound(window: tuple[int, ...]) -> int:
    """At least the bytes of a window's varints: each as wide as the largest id's (10 with a negative one)."""
    return len(window) * (10 if min(window) < 0 else _varint_bytes(max(window))) if window else 0


def _message_field(n: int) -> int:
    """A set message field of n bytes: tag, length, bytes."""
    return 1 + _varint_bytes(n) + n


def _len_field(n: int) -> int:
    """A string or packed field of n bytes; proto3 leaves an empty one out."""
    return n and _message_field(n)


def report_frames(frame_id: int, report: RoundReport, max_bytes: int) -> list[pb.DeviceFrame]:
    """One round's report as RequestBatch frames of at most ``max_bytes`` each; the last is final. Requests
    are written where they lie: a message built apart (or sized with ByteSize) is an arena of its own that
    python-upb frees, and it calls malloc_trim every 10,000 frees, handing every free page of the heap
    back to the kernel, to be faulted in again by the next large buffer."""
    frames: list[pb.DeviceFrame] = []

    def batch() -> pb.RequestBatch:
        frames.append(pb.DeviceFrame())
        b = frames[-1].requests
        b.frame_id, b.method, b.until_us = frame_id, report.method, report.until_us
        b.next_arrival_us = -1 if report.next_arrival_us is None else report.next_arrival_us
        return b
    current, size = batch(), 0
    budget = max_bytes - 128
    for a in report.arrivals:             # sized by a bound: ByteSize serializes into an arena it then frees
        n = _request_bytes(a.request, _window_bound(a.request.window), a.arrived_us) + 8
        if size + n > budget and current.requests:
            current, size = batch(), 0
        request_to_pb(a.request, into=current.requests.add()).arrived_us = a.arrived_us
        size += n
    current.final = True
    return frames


def report_from_pb(parts: list[pb.RequestBatch]) -> tuple[RoundReport, list[RequestError]]:
    """A round's report from its frames; a request that does not decode is an error for it alone."""
    last = parts[-1]
    if any(p.method != last.method or p.until_us != last.until_us for p in parts):
        raise ProtocolError("BAD_FRAME", "the parts of one RequestBatch report disagree on method or until_us")
    if last.until_us < 0 or last.next_arrival_us < -1:
        raise ProtocolError("BAD_FRAME", f"RequestBatch: until_us {last.until_us} / next_arrival_us "
                                         f"{last.next_arrival_us} out of range")
    arrivals, errors = [], []
    for part in parts:
        for msg in part.requests:
            try:
                arrivals.append(Arrival(request_from_pb(msg), int(msg.arrived_us)))
            except ProtocolError as exc:
                errors.append(RequestError(msg.device_id, msg.seq, exc.code, str(exc)))
    bound = None if last.next_arrival_us == -1 else int(last.next_arrival_us)
    return RoundReport(last.method, int(last.until_us), bound, tuple(arrivals)), errors


# ---- edits ---------------------------------------------------------------------------

def edit_to_pb(edit: EditResult, dtype: int = pb.FLOAT32) -> pb.EditPush:
    """The edit as sent (its ``encoded`` form when the cloud's EditEncoder made one), with its cloud times;
    a pending edit (no params yet) carries its times and charged size only."""
    if edit.params is None:
        return _pending_to_pb(edit, pb.EditPush())
    msg = edit.encoded if edit.encoded is not None else _edit_payload(
        edit, [tensor_to_pb(name, edit.params[name], dtype) for name in sorted(edit.params)])
    msg.compute_ns = edit.compute_ns
    _stages_to_pb(edit, msg.stages)
    return msg


def _pending_to_pb(edit: EditResult, msg: pb.EditPush) -> pb.EditPush:
    msg.device_id, msg.seq, msg.pending, msg.wire_bytes = edit.device_id, edit.seq, True, edit.wire_bytes
    _stages_to_pb(edit, msg.stages)
    return msg


def _pending_bytes(edit: EditResult) -> int:
    """At least the serialized size of a pending edit's EditPush inside its EditBatch: its device id (with tag
    and length), seq and wire_bytes (at most 11 bytes each), pending (2), stages (at most 46), framing (3)."""
    return len(edit.device_id.encode()) + 2 + 11 + 11 + 2 + 46 + 3


def _stages_to_pb(edit: EditResult, st: pb.CloudStages) -> None:
    st.enqueued_us, st.compute_start_us = edit.enqueued_us, edit.compute_start_us
    st.compute_end_us, st.departed_us = edit.compute_end_us, edit.departed_us


def values_blocks(edits: list[EditResult], dtype: str, max_bytes: int) -> list[bytes]:
    """The values of edits sent pending, stacked (one tensor per layer, a row per edit) as serialized
    EditValues messages, each small enough for a reply frame of at most ``max_bytes`` beside its other fields."""
    if not edits:
        return []
    code = pb.DType.Value(dtype)
    row = len(_values_block(edits[:1], code)) + 8     # every edit's values weigh the same
    if not fits_frame(row, max_bytes):        # their size was checked when they were sent pending: a bug
        raise ProtocolError("INTERNAL", f"one edit's values ({row} bytes) exceed the frame cap of {max_bytes}")
    step = max(1, (max_bytes - 128 - 64) // row)
    return [_values_block(edits[lo: lo + step], code) for lo in range(0, len(edits), step)]


def _values_block(edits: list[EditResult], dtype: int) -> bytes:
    """One EditValues message, the bytes protobuf would write (``tests/test_codec.py`` checks): protobuf writes
    its small fields and each tensor's header, and the rows' bytes are joined in by hand, so the values are
    copied once, not stacked, converted to bytes, copied into a message and serialized (four copies)."""
    parts = [pb.EditValues(device_ids=[e.device_id for e in edits], seqs=[e.seq for e in edits],
                           prototype_ids=[e.prototype_id for e in edits], edit_norms=[e.edit_norm for e in edits],
                           compute_ns=[e.compute_ns for e in edits]).SerializeToString()]
    for name in sorted(edits[0].params):
        rows = [e.params[name] for e in edits]
        tail = b""                                       # INT8: its row scales, field 6, after the data
        if dtype == pb.FLOAT32:
            data = [np.ascontiguousarray(r, dtype=_NP_DTYPE[dtype]) for r in rows]   # no copy for float32 rows
        elif dtype == pb.INT8:
            stacked = np.stack(rows).astype(np.float32)
            q, scale = _quantised(stacked.reshape(len(rows), -1))
            data, tail = [q], pb.Tensor(row_scales=scale.tolist()).SerializeToString()
        else:
            data = [np.stack(rows).astype(_NP_DTYPE[dtype])]
        n = sum(a.nbytes for a in data)
        head = pb.Tensor(name=name, dtype=dtype, shape=(len(rows), *rows[0].shape)).SerializeToString()
        head += _field_head(4, n) if n else b""
        parts += [_field_head(6, len(head) + n + len(tail)), head, *data, tail]
    return b"".join(parts)


def values_from_pb(msg: pb.EditValues) -> list[EditResult]:
    ids = list(msg.device_ids)
    n = len(ids)
    where = f"EditValues({n} edits, first {ids[0] if n else None!r})"
    seqs, protos, norms, compute = list(msg.seqs), list(msg.prototype_ids), list(msg.edit_norms), list(msg.compute_ns)
    lengths = [len(seqs), len(protos), len(norms), len(compute)]
    if lengths != [n] * 4:
        raise ProtocolError("BAD_FRAME", f"{where}: seqs, prototype_ids, edit_norms and compute_ns have "
                                         f"{lengths} entries, not {n} each")
    tensors = {t.name: tensor_from_pb(t, where, rows=True) for t in msg.tensors}
    if any(a.shape[0] != n for a in tensors.values()):
        raise ProtocolError("BAD_FRAME", f"{where}: tensors of shapes {[a.shape for a in tensors.values()]} "
                                         f"do not have a row per edit")
    # each edit its own arrays: a device keeps its layers for long, and a view would keep the whole stack alive
    return [EditResult(ids[i], int(seqs[i]), int(protos[i]), {k: a[i].copy() for k, a in tensors.items()},
                       float(norms[i]), int(compute[i])) for i in range(n)]


def values_from_blocks(blocks: list[pb.EditValues]) -> list[EditResult]:
    return [v for block in blocks for v in values_from_pb(block)]


def _edit_payload(edit: EditResult, tensors: list[pb.Tensor]) -> pb.EditPush:
    return pb.EditPush(device_id=edit.device_id, seq=edit.seq, prototype_id=edit.prototype_id, tensors=tensors,
                       edit_norm=edit.edit_norm)



def edit_wire_bytes(msg: pb.EditPush) -> int:
    """Download size of this edit sent alone, CloudFrame{EditBatch{final, [edit]}} + gRPC prefix, excluding
    the wall-clock diagnostic field and the cloud's stage times.

    compute_ns is a measured time whose varint length varies run to run; leaving
    it out keeps the charged bytes (and so the virtual times) reproducible. The
    cloud's stage times are bookkeeping of the simulation, not payload.
    """
    size = msg.ByteSize()
    if msg.compute_ns:
        size -= 1 + _varint_bytes(msg.compute_ns & _U64)
    if msg.HasField("stages"):
        stages = msg.stages.ByteSize()
        size -= 1 + _varint_bytes(stages) + stages
    return _sent_alone(size)


def _sent_alone(edit_bytes: int) -> int:
    """CloudFrame{EditBatch{final, [an edit of edit_bytes]}} + gRPC prefix."""
    batch = 2 + _message_field(edit_bytes)              # final: true; edits: [msg]
    return _message_field(batch) + GRPC_PREFIX_BYTES


def edit_from_pb(msg: pb.EditPush) -> EditResult:
    where = f"EditPush(device_id={msg.device_id!r}, seq={msg.seq})"
    st = msg.stages
    times = int(st.enqueued_us), int(st.compute_start_us), int(st.compute_end_us), int(st.departed_us)
    if msg.pending:       # not msg.tensors: reading an unset repeated field builds a stub, an arena upb frees
        if msg.wire_bytes <= 0 or any(f is _TENSORS for f, _ in msg.ListFields()):
            raise ProtocolError("BAD_FRAME", f"{where}: a pending edit carries no tensors and a positive "
                                             f"wire_bytes (got {len(msg.tensors)} tensors, {msg.wire_bytes} bytes)")
        return EditResult(msg.device_id, int(msg.seq), 0, None, 0.0, int(msg.compute_ns), int(msg.wire_bytes), *times)
    missing = [f for f in ("prototype_id", "edit_norm") if not msg.HasField(f)]
    if missing:
        raise ProtocolError("BAD_FRAME", f"{where}: a complete edit needs {missing}")
    params = {t.name: tensor_from_pb(t, where) for t in msg.tensors}
    return EditResult(msg.device_id, int(msg.seq), int(msg.prototype_id), params, float(msg.edit_norm),
                      int(msg.compute_ns), edit_wire_bytes(msg), *times)


class EditEncoder:
    """Edits as one run of a method sends them: tensors in ``dtype`` and, with ``delta`` > 0, only those whose
    relative change ||new - held|| / ||held|| from what the device holds exceeds ``delta`` (the device keeps the
    others). It tracks what every device holds, as decoded, starting from ``initial``: a device applies each
    reply before it asks again, so the edits of a device are encoded in the order it applies them."""

    def __init__(self, dtype: str, delta: float, initial: dict[str, np.ndarray]):
        self.dtype, self.delta, self.initial = pb.DType.Value(dtype), delta, initial
        self.held: dict[str, dict[str, np.ndarray]] = {}
        self._template_bytes: int | None = None

    def encode(self, edit: EditResult) -> pb.EditPush:
        """Sets ``edit.encoded`` and ``edit.wire_bytes``; returns the message."""
        tensors = [tensor_to_pb(name, edit.params[name], self.dtype) for name in sorted(edit.params)]
        if self.delta > 0:
            held = dict(self.held.get(edit.device_id, self.initial))
            kept = []
            for t in tensors:
                new, old = edit.params[t.name], held[t.name]
                if np.linalg.norm(new - old) > self.delta * np.linalg.norm(old):
                    kept.append(t)
                    held[t.name] = new.copy() if self.dtype == pb.FLOAT32 else tensor_from_pb(t, "EditEncoder")
            self.held[edit.device_id], tensors = held, kept
        edit.encoded = _edit_payload(edit, tensors)
        edit.wire_bytes = edit_wire_bytes(edit.encoded)
        return edit.encoded

    def wire_bytes(self, device_id: str, seq: int) -> int:
        """The charged size of any edit of this device and seq, before its values exist: every field of a
        complete edit has a width fixed by the layers' shapes and the dtype (not with delta edits)."""
        if self.delta > 0:
            raise ValueError("a delta edit's size depends on its values")
        if self._template_bytes is None:            # an edit of these layers, less its device id and seq
            zero = EditResult("", 0, 0, {k: np.zeros_like(v) for k, v in self.initial.items()}, 0.0)
            self._template_bytes = _edit_payload(zero, [tensor_to_pb(k, zero.params[k], self.dtype)
                                                        for k in sorted(zero.params)]).ByteSize()
        seq_bytes = 1 + _varint_bytes(seq) if seq else 0
        return _sent_alone(self._template_bytes + _len_field(len(device_id.encode())) + seq_bytes)


def error_to_pb(err: RequestError) -> pb.Error:
    return pb.Error(code=pb.ErrorCode.Value(err.code), message=err.message, device_id=err.device_id, seq=err.seq)


def error_from_pb(msg: pb.Error) -> RequestError:
    return RequestError(msg.device_id, int(msg.seq), enum_name(pb.ErrorCode, msg.code), msg.message)


def fits_frame(nbytes: int, max_bytes: int) -> bool:
    """Whether a pushed edit of ``nbytes`` (serialized, or charged: a little more) fits one reply frame of at most
    ``max_bytes`` beside the frame's own fields."""
    return nbytes + 8 <= max_bytes - 128


def frame_cap_error(device_id: str, seq: int, n: int, max_bytes: int) -> RequestError:
    return RequestError(device_id, seq, "INTERNAL",
                        f"its edit ({n} bytes) exceeds the frame cap of {max_bytes} bytes; raise cloud.max_frame_mb")


def reply_frames(frame_id: int, reply: RoundReply, max_bytes: int) -> list[bytes]:
    """One round's reply as serialized CloudFrames of at most ``max_bytes`` each; the last is final and carries
    the round's times. Frames are filled in place and split by sizes bounded from above (serializing a message
    to learn its size, or appending it to another, copies every byte of its values); the values blocks, already
    serialized, go in last (EditBatch.values is its last field), so they are copied once more, not four times."""
    batches: list[tuple[pb.EditBatch, list[bytes]]] = []
    budget = max_bytes - 128   # room for the frame header and the round's fields
    size = 0

    def batch(n: int) -> tuple[pb.EditBatch, list[bytes]]:
        """The EditBatch (and its values) the next n bytes go in: the current one, or a new frame's."""
        nonlocal size
        if not batches or (size + n > budget and size):
            batches.append((pb.EditBatch(frame_id=frame_id), []))
            size = 0
        size += n
        return batches[-1]

    errors = [r for r in reply.results if isinstance(r, RequestError)]
    for edit in (r for r in reply.results if isinstance(r, EditResult)):
        if edit.params is None:
            _pending_to_pb(edit, batch(_pending_bytes(edit))[0].edits.add())
            continue
        msg = edit_to_pb(edit)
        n = msg.ByteSize()
        if not fits_frame(n, max_bytes):
            errors.append(frame_cap_error(edit.device_id, edit.seq, n + 8, max_bytes))
            continue
        batch(n + 8)[0].edits.append(msg)
    for block in reply.value_blocks:
        batch(len(block) + 8)[1].append(block)
    last = batch(0)[0]
    last.errors.extend(error_to_pb(e) for e in errors)
    last.final = True
    last.until_us = -1 if reply.until_us is None else reply.until_us
    last.server_ns, last.wait_ns = reply.server_ns, reply.wait_ns
    return [_frame_bytes(b, values) for b, values in batches]


def _frame_bytes(edits: pb.EditBatch, values: list[bytes]) -> bytes:
    """CloudFrame{edits} serialized, with serialized EditValues appended as the batch's field 8."""
    parts = [edits.SerializeToString()]
    for block in values:
        parts += [_field_head(8, len(block)), block]
    return b"".join([_field_head(2, sum(map(len, parts))), *parts])


def reply_from_frames(frames: list[bytes]) -> RoundReply:
    """A reply from its serialized CloudFrames (the in-process transport's side of ``reply_frames``)."""
    return reply_from_pb([parse(pb.CloudFrame, f, "CloudFrame").edits for f in frames])


def reply_from_pb(parts: list[pb.EditBatch], values: bool = True) -> RoundReply:
    """A round's reply from its frames; with ``values`` False, without the values they carry (the caller decodes
    those later, ``values_from_blocks``)."""
    results: list = []
    for part in parts:
        results.extend(edit_from_pb(e) for e in part.edits)
        results.extend(error_from_pb(e) for e in part.errors)
    last = parts[-1]
    values = values_from_blocks([block for part in parts for block in part.values]) if values else []
    return RoundReply(results, None if last.until_us == -1 else int(last.until_us), int(last.server_ns),
                      int(last.wait_ns), values=values)


# ---- control -------------------------------------------------------------------------

def hello_to_pb(h: Hello) -> pb.DeviceFrame:
    return pb.DeviceFrame(hello=pb.Hello(
        protocol_version=h.protocol_version, node_id=h.node_id, model_signature=h.model_signature,
        codecs=[pb.DType.Value(c) for c in h.codecs], shard_index=h.shard_index, shard_count=h.shard_count,
        scenario_hash=h.scenario_hash, partial_edits=h.partial_edits))


def enum_name(enum, value: int) -> str:
    """A protobuf enum value's name; a number this side does not know is spelled out (proto3 enums are open)."""
    try:
        return enum.Name(value)
    except ValueError:
        return f"UNKNOWN_{value}"


def _codec_name(value: int) -> str:
    if value not in pb.DType.values():
        raise ProtocolError("BAD_FRAME", f"Hello.codecs: {value} is not a DType ({', '.join(pb.DType.keys())})")
    return pb.DType.Name(value)


def hello_from_pb(msg: pb.Hello) -> Hello:
    if msg.shard_count == 0 or msg.shard_index >= msg.shard_count:
        raise ProtocolError("BAD_FRAME", f"Hello: shard {msg.shard_index}/{msg.shard_count} is not a valid shard")
    return Hello(msg.node_id, msg.model_signature, int(msg.shard_index), int(msg.shard_count),
                 int(msg.protocol_version), tuple(_codec_name(c) for c in msg.codecs) or ("FLOAT32",),
                 msg.scenario_hash, bool(msg.partial_edits))


def info_to_pb(info: CloudInfo) -> pb.CloudInfo:
    return pb.CloudInfo(protocol_version=info.protocol_version, cloud_id=info.cloud_id,
                        model_signature=info.model_signature, model_bytes=info.model_bytes,
                        scenario_name=info.scenario_name, methods=list(info.methods),
                        max_frame_bytes=info.max_frame_bytes, device_count=info.device_count,
                        scenario_json=info.scenario_json, dataset_fingerprint=info.dataset_fingerprint)


def info_from_pb(msg: pb.CloudInfo) -> CloudInfo:
    return CloudInfo(msg.cloud_id, msg.model_signature, int(msg.model_bytes), msg.scenario_name,
                     tuple(msg.methods), int(msg.max_frame_bytes), int(msg.device_count), int(msg.protocol_version),
                     msg.scenario_json or "{}", msg.dataset_fingerprint)


def parse(message_type, data: bytes, what: str):
    """Bytes off the wire -> a ``message_type`` message; bytes that do not parse are a BAD_FRAME naming ``what``."""
    try:
        return message_type.FromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise ProtocolError("BAD_FRAME", f"{what}: {len(data)} bytes that do not parse as "
                                         f"{message_type.DESCRIPTOR.full_name} ({exc})") from None


def channel_options(max_frame_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel/server options that cap message size on both ends."""
    limit = max_frame_bytes + FRAME_SLACK
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
