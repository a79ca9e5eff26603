"""The PersonaCloud servicer: frames in, frames out; all decisions in persona_sim.sim.cloud_engine.

A peer can send anything: a frame out of order, a request that names an
unknown device, garbage bytes. Each becomes an Error frame; bytes that do not
parse end their call with INVALID_ARGUMENT and one rate-limited log line (the
methods take raw bytes, so gRPC never logs a traceback for them); an oversized
message gets gRPC's RESOURCE_EXHAUSTED. The server keeps serving. A
RequestBatch may come in parts; the round is reported to the lockstep once its
final part is in. A stream that ends mid-run aborts its run's rounds for the
other shards (they get an ABORTED error, not a hang).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import grpc

from persona_sim.data.packed import pack
from persona_sim.data.sequences import Dataset
from persona_sim.errors import DatasetError, ProtocolError
from persona_sim.sim.lockstep import Lockstep
from persona_sim.wire import codec, pb, pb_grpc
from persona_sim.wire.messages import PROTOCOL_VERSION

log = logging.getLogger("cloud_node")
MODEL_CHUNK_BYTES = 1 << 20
FATAL_CODES = ("MODEL_MISMATCH", "SCENARIO_MISMATCH", "ABORTED")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PersonaCloud"].full_name


class RateLimitedLog:
    """At most ``burst`` warnings per ``interval_s``; the rest are counted and reported by the next that gets out."""

    def __init__(self, logger: logging.Logger, burst: int = 5, interval_s: float = 10.0, clock=time.monotonic):
        self.logger, self.burst, self.interval_s, self.clock = logger, burst, interval_s, clock
        self.window_start, self.sent, self.suppressed = -float("inf"), 0, 0

    def warning(self, msg: str, *args) -> None:
        now = self.clock()
        if now - self.window_start >= self.interval_s:
            self.window_start, self.sent = now, 0
        if self.sent >= self.burst:
            self.suppressed += 1
            return
        self.sent += 1
        if self.suppressed:
            msg, args = msg + " (%d similar lines suppressed)", (*args, self.suppressed)
            self.suppressed = 0
        self.logger.warning(msg, *args)


def refuse(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    """End the call with ``code`` and ``message``; the handler returns right after.

    Not ``context.abort``: the exception it raises keeps the handler's frames (and so the request's bytes)
    in a reference cycle through gRPC's per-call state, which Python's collector cannot see into, so every
    aborted call leaked its request (measured: the server grew ~4 MB per refused 4 MB frame)."""
    context.set_code(code)
    context.set_details(message)


def rpc_handler(servicer: "PersonaCloudServicer") -> grpc.GenericRpcHandler:
    """The service with raw request bytes in, so a frame that does not parse is the servicer's to answer."""
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "Adapt": grpc.stream_stream_rpc_method_handler(
            servicer.Adapt, response_serializer=_serialized),
        "GetInfo": grpc.unary_unary_rpc_method_handler(
            servicer.GetInfo, response_serializer=pb.CloudInfo.SerializeToString),
        "FetchModel": grpc.unary_stream_rpc_method_handler(
            servicer.FetchModel, response_serializer=pb.ModelChunk.SerializeToString),
        "FetchDataset": grpc.unary_stream_rpc_method_handler(
            servicer.FetchDataset, response_serializer=pb.ModelChunk.SerializeToString),
    })


def _serialized(frame: pb.CloudFrame | bytes) -> bytes:
    """A CloudFrame as sent: edit frames come serialized already (``codec.reply_frames``), the rest as messages."""
    return frame if isinstance(frame, bytes) else frame.SerializeToString()


def _chunks(data: bytes):
    for offset in range(0, len(data), MODEL_CHUNK_BYTES):
        yield pb.ModelChunk(offset=offset, data=data[offset: offset + MODEL_CHUNK_BYTES], total_bytes=len(data))


def _error_frame(exc: ProtocolError) -> pb.CloudFrame:
    return pb.CloudFrame(error=pb.Error(code=pb.ErrorCode.Value(exc.code), message=str(exc),
                                        device_id=exc.device_id, seq=exc.seq))


class PersonaCloudServicer(pb_grpc.PersonaCloudServicer):
    def __init__(self, lockstep: Lockstep, model_bytes: bytes, dataset: Callable[[], Dataset] | None = None):
        self.lockstep, self.engine = lockstep, lockstep.engine
        self.model = model_bytes
        self.dataset, self.packed, self.packing = dataset, None, asyncio.Lock()   # loaded, packed on first ask
        self.bad_frames = RateLimitedLog(log)
        self.refused_streams = RateLimitedLog(log)
        self.stream_errors = RateLimitedLog(log)
        self.streams = 0                 # Adapt streams open now

    def _parse(self, message_type, raw: bytes, what: str, context):
        """The message, or None after refusing the call with INVALID_ARGUMENT (the handler then returns)."""
        try:
            return codec.parse(message_type, raw, what)
        except ProtocolError as exc:
            message = str(exc)
        self.bad_frames.warning("malformed frame from %s: %s", context.peer(), message)
        refuse(context, grpc.StatusCode.INVALID_ARGUMENT, message)
        return None

    async def GetInfo(self, raw, context):
        if self._parse(pb.InfoRequest, raw, "InfoRequest", context) is None:
            return None
        return codec.info_to_pb(self.engine.info())

    async def FetchModel(self, raw, context):
        request = self._parse(pb.FetchModelRequest, raw, "FetchModelRequest", context)
        if request is None:
            return
        if request.model_signature and request.model_signature != self.engine.bundle.signature:
            refuse(context, grpc.StatusCode.NOT_FOUND,
                   f"FetchModelRequest.model_signature {request.model_signature!r} is not served; "
                   f"this cloud serves {self.engine.bundle.signature!r}")
            return
        for chunk in _chunks(self.model):
            yield chunk

    async def FetchDataset(self, raw, context):
        request = self._parse(pb.FetchDatasetRequest, raw, "FetchDatasetRequest", context)
        if request is None:
            return
        want = self.engine.info().dataset_fingerprint
        async with self.packing:
            if self.packed is None and self.dataset is not None:
                try:
                    dataset = await asyncio.to_thread(self.dataset)
                    if dataset.fingerprint() == want:      # never hand out other data as the model's
                        self.packed = await asyncio.to_thread(pack, dataset)
                except DatasetError as exc:
                    log.warning("FetchDataset: no copy of the dataset here: %s", exc)
                self.dataset = None                       # tried once
        if self.packed is None or request.fingerprint != want:
            refuse(context, grpc.StatusCode.NOT_FOUND,
                   f"FetchDatasetRequest.fingerprint {request.fingerprint!r}: this cloud's model was trained on "
                   f"dataset {want!r}" + ("" if self.packed is not None else ", of which it has no copy"))
            return
        for chunk in _chunks(self.packed):
            yield chunk

    async def Adapt(self, request_iterator, context):
        limit = self.engine.scenario.cloud.max_streams
        if self.streams >= limit:
            self.refused_streams.warning("refused a stream from %s: %d Adapt streams open (cloud.max_streams)",
                                    context.peer(), self.streams)
            refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                   f"this cloud serves at most {limit} Adapt streams at once (cloud.max_streams)")
            return
        self.streams += 1
        hello, parts = None, []
        try:
            async for raw in request_iterator:
                frame = self._parse(pb.DeviceFrame, raw, "DeviceFrame", context)
                if frame is None:
                    return
                kind = frame.WhichOneof("body")
                try:
                    if hello is None:
                        if kind != "hello":
                            raise ProtocolError("BAD_FRAME", f"the first DeviceFrame must be a Hello, got {kind or 'an empty frame'}")
                        candidate = codec.hello_from_pb(frame.hello)
                        self.engine.check_hello(candidate)
                        hello = candidate
                        self.lockstep.join(hello)
                        log.info("node %s connected (shard %d/%d)", hello.node_id, hello.shard_index, hello.shard_count)
                        yield pb.CloudFrame(hello_ack=pb.HelloAck(
                            protocol_version=PROTOCOL_VERSION, cloud_id=self.engine.cloud_id,
                            model_signature=self.engine.bundle.signature,
                            codec=pb.DType.Value(self.engine.edit_codec), max_frame_bytes=self.engine.max_frame_bytes,
                            delta_threshold=self.engine.scenario.cloud.edit_delta))
                    elif kind == "requests":
                        parts.append(frame.requests)
                        self._check_report_size(parts)
                        if frame.requests.final:
                            batch, parts = parts, []
                            for out in await self._round(batch, hello):
                                yield out
                    elif kind == "heartbeat":
                        yield pb.CloudFrame(heartbeat=frame.heartbeat)
                    elif kind == "hello":
                        raise ProtocolError("BAD_FRAME", "Hello sent twice on one stream")
                    else:
                        raise ProtocolError("BAD_FRAME", "empty DeviceFrame: no body field is set")
                except ProtocolError as exc:
                    if exc.code == "BAD_FRAME":
                        parts = []               # a report refused mid-way is dropped whole
                    self.stream_errors.warning("stream error from %s: %s", context.peer(), exc)
                    yield _error_frame(exc)
                    if hello is None or exc.code in FATAL_CODES:
                        return
        finally:
            self.streams -= 1
            if hello is not None:
                log.info("node %s left (shard %d/%d)", hello.node_id, hello.shard_index, hello.shard_count)
                self.lockstep.leave(hello)

    def _check_report_size(self, parts: list[pb.RequestBatch]) -> None:
        """A shard has at most one request in flight per device, so one round's report carries at most
        devices.count requests (in at most that many parts, plus the last): more is refused, not buffered."""
        limit = self.engine.scenario.devices.count
        requests = sum(len(p.requests) for p in parts)
        if requests > limit or len(parts) > limit + 1:
            raise ProtocolError("BAD_FRAME", f"one round's report grew to {requests} requests in {len(parts)} parts; "
                                             f"a shard has at most {limit} devices (devices.count), so at most "
                                             f"{limit} requests in at most {limit + 1} parts")

    async def _round(self, parts: list[pb.RequestBatch], hello) -> list[bytes]:
        report, errors = codec.report_from_pb(parts)
        reply = await self.lockstep.submit(hello, report)
        reply.results = errors + reply.results
        return codec.reply_frames(parts[-1].frame_id, reply, self.engine.max_frame_bytes)
