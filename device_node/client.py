"""The device node's gRPC side: model fetch, and the Adapt stream as a Transport.

Every device of the node shares one stream: a lockstep round is one report
(RequestBatch frames, the last marked final) and one reply (EditBatch frames,
likewise), so per-message overhead is paid per round, not per device.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass

import grpc

from persona_sim.data.packed import unpack
from persona_sim.data.sequences import Dataset
from persona_sim.errors import DatasetError, NodeError, ProtocolError, RunRestart
from persona_sim.scenario.schema import Scenario, differing_keys
from persona_sim.train.bundle import cache_dir, signature_of, write_atomic
from persona_sim.wire import codec, pb, pb_grpc
from persona_sim.wire.messages import CloudInfo, Hello, RoundReply, RoundReport

log = logging.getLogger("device_node")
# A stream that ends with one of these is worth reopening: the cloud went away, restarted, or ended the run
# because another shard left it. Anything else (a refused token, another scenario) would fail again.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED,
                       grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})


class StreamLost(Exception):
    """The Adapt stream broke in a way a new stream may mend (the message says how)."""


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: attempt k waits uniformly in [d/2, d], d = min(cap, first·2^k)."""

    first_s: float = 0.1
    cap_s: float = 5.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        d = min(self.cap_s, self.first_s * 2 ** attempt)
        return rng.uniform(d / 2, d)


def _rpc_error(what: str, target: str, exc: grpc.RpcError) -> NodeError:
    return NodeError(f"{what} at {target} failed: {exc.code().name}: {exc.details()}")


async def get_info(stub: pb_grpc.PersonaCloudStub, target: str) -> CloudInfo:
    try:
        return codec.info_from_pb(await stub.GetInfo(pb.InfoRequest(), timeout=30))
    except grpc.RpcError as exc:
        raise _rpc_error("GetInfo", target, exc) from None


def check_same_scenario(info: CloudInfo, scenario: Scenario, target: str) -> None:
    """The node's scenario must be the cloud's (what changes a run); name the first keys that differ."""
    diffs = differing_keys(json.loads(info.scenario_json), scenario.run_view())
    if diffs:
        shown = "; ".join(f"{key}: cloud {theirs!r}, this node {ours!r}" for key, theirs, ours in diffs[:5])
        raise NodeError(f"the cloud at {target} runs another scenario ({len(diffs)} key(s) differ): {shown}"
                        + ("; …" if len(diffs) > 5 else ""))


async def _download(call, what: str, target: str) -> bytes:
    parts = []
    try:
        async for chunk in call:
            parts.append(chunk.data)
    except grpc.RpcError as exc:
        raise _rpc_error(what, target, exc) from None
    return b"".join(parts)


async def fetch_model(stub: pb_grpc.PersonaCloudStub, info: CloudInfo, target: str) -> bytes:
    """The cloud's bundle bytes, from the local cache or fetched and cached by signature."""
    path = cache_dir() / "fetched" / f"{info.model_signature}.pt"
    if path.exists():
        data = path.read_bytes()
        if signature_of(data) == info.model_signature:
            return data
    data = await _download(stub.FetchModel(pb.FetchModelRequest(model_signature=info.model_signature), timeout=300),
                           "FetchModel", target)
    if signature_of(data) != info.model_signature:
        raise NodeError(f"model fetched from {target} has signature {signature_of(data)}, "
                        f"expected {info.model_signature}")
    write_atomic(path, data)
    return data


async def fetch_dataset(stub: pb_grpc.PersonaCloudStub, info: CloudInfo, target: str,
                        missing: DatasetError) -> Dataset:
    """The model's training data, for a machine without it (``missing`` says where it was looked for): from
    the local cache or fetched from the cloud and cached by fingerprint; its fingerprint is checked."""
    if not info.dataset_fingerprint:
        raise missing
    path = cache_dir() / "datasets" / f"{info.dataset_fingerprint}.npz"
    if not path.exists():
        log.warning("%s; fetching dataset %s from the cloud at %s", missing, info.dataset_fingerprint, target)
        try:
            data = await _download(stub.FetchDataset(pb.FetchDatasetRequest(fingerprint=info.dataset_fingerprint),
                                                     timeout=600), "FetchDataset", target)
        except NodeError as exc:
            raise DatasetError(f"{missing}; nor could the cloud send it: {exc}") from None
        write_atomic(path, data)
    dataset = unpack(path.read_bytes(), str(path))
    if dataset.fingerprint() != info.dataset_fingerprint:
        path.unlink(missing_ok=True)
        raise DatasetError(f"{path}: dataset has fingerprint {dataset.fingerprint()}, expected "
                           f"{info.dataset_fingerprint}")
    return dataset


class GrpcTransport:
    """One Adapt stream; each lockstep round is one report (in parts under the frame cap) and its reply.

    The edit values a reply carries are decoded once the next round's report is sent, while the cloud works
    on that round (a flush of 512 Beauty-size edits is 17 MB to decode), and handed over with the next reply;
    the run's last reply brings its own. A device scores what it predicted with an edit once its values come,
    so which round brings them changes nothing it computes (``persona_sim.sim.lockstep``)."""

    def __init__(self, channel: grpc.aio.Channel, target: str, hello: Hello, max_frame_bytes: int,
                 reconnect_s: float = 0.0, backoff: Backoff = Backoff()):
        self.stub = pb_grpc.PersonaCloudStub(channel)
        self.target, self.hello, self.max_frame_bytes = target, hello, max_frame_bytes
        self.reconnect_s, self.backoff = reconnect_s, backoff
        self.call = None
        self.frame_id = 0
        self.held: list[pb.EditValues] = []   # values of the last reply, decoded behind the next report
        self.reconnects = 0

    async def open(self) -> None:
        try:
            await self._open()
        except StreamLost as exc:
            raise NodeError(str(exc)) from None

    async def _open(self) -> None:
        self.call = self.stub.Adapt()
        self.held = []                         # an old stream's values belong to a run that starts again
        await self._write(codec.hello_to_pb(self.hello))
        reply = await self._read()
        if reply.WhichOneof("body") != "hello_ack":
            raise NodeError(f"cloud at {self.target} refused the stream: {self._describe(reply)}")
        codec_name = codec.enum_name(pb.DType, reply.hello_ack.codec)
        if codec_name not in self.hello.codecs:
            raise NodeError(f"cloud at {self.target} answered HelloAck.codec {codec_name}, which this node did not "
                            f"offer ({', '.join(self.hello.codecs)})")

    async def _reconnect(self, method: str, cause: str) -> None:
        """Open a new stream within ``reconnect_s``, backing off between tries; then the method in progress
        starts again (``RunRestart``), since the cloud's side of its run is gone. Give up saying why."""
        if self.reconnect_s <= 0:
            raise NodeError(cause)
        log.warning("%s; reconnecting for up to %g s", cause, self.reconnect_s)
        self.call.cancel()
        rng, deadline, attempt, last = random.Random(), time.monotonic() + self.reconnect_s, 0, cause
        while time.monotonic() < deadline:
            await asyncio.sleep(min(self.backoff.delay(attempt, rng), max(0.0, deadline - time.monotonic())))
            attempt += 1
            try:
                await self._open()
            except StreamLost as exc:
                last = str(exc)
                self.call.cancel()
                continue
            self.reconnects += 1
            log.warning("reconnected to the cloud at %s after %d attempt(s); %r starts again", self.target,
                        attempt, method)
            raise RunRestart(f"{cause}; reconnected, so {method!r} starts again")
        raise NodeError(f"{cause}; no new stream within {self.reconnect_s:g} s ({attempt} attempt(s)), "
                        f"last: {last}")

    async def close(self) -> None:
        if self.call is None:
            return
        try:
            await self.call.done_writing()
            while await self.call.read() is not grpc.aio.EOF:
                pass
        except grpc.RpcError:
            pass
        self.call = None

    def _failed(self, code: grpc.StatusCode, details: str) -> Exception:
        message = f"Adapt stream at {self.target} failed: {code.name}: {details}"
        return StreamLost(message) if code in RETRYABLE else NodeError(message)

    async def _write(self, frame: pb.DeviceFrame) -> None:
        try:
            await self.call.write(frame)
        except asyncio.InvalidStateError:          # the call already ended: its status says why
            raise self._failed(await self.call.code(), await self.call.details()) from None
        except grpc.RpcError as exc:
            raise self._failed(exc.code(), exc.details()) from None

    async def _read(self) -> pb.CloudFrame:
        try:
            frame = await self.call.read()
        except grpc.RpcError as exc:
            raise self._failed(exc.code(), exc.details()) from None
        if frame is grpc.aio.EOF:
            raise StreamLost(f"cloud at {self.target} closed the Adapt stream")
        return frame

    @staticmethod
    def _describe(frame: pb.CloudFrame) -> str:
        if frame.WhichOneof("body") == "error":
            return f"{codec.enum_name(pb.ErrorCode, frame.error.code)}: {frame.error.message}"
        return f"unexpected {frame.WhichOneof('body') or 'empty'} frame"

    async def round(self, report: RoundReport) -> RoundReply:
        try:
            return await self._round(report)
        except StreamLost as exc:
            await self._reconnect(report.method, f"lost the Adapt stream to {self.target} in the run of "
                                                 f"{report.method!r} at virtual time {report.until_us} µs: {exc}")
            raise

    async def _round(self, report: RoundReport) -> RoundReply:
        self.frame_id += 1
        t0 = time.perf_counter_ns()
        frames = codec.report_frames(self.frame_id, report, self.max_frame_bytes)
        encode_ns = time.perf_counter_ns() - t0
        for frame in frames:
            await self._write(frame)
        t0 = time.perf_counter_ns()
        earlier, self.held = self._values(self.held), []     # the cloud computes the round meanwhile
        decode_ns = time.perf_counter_ns() - t0
        parts = []
        while not parts or not parts[-1].final:
            reply = await self._read()
            if reply.WhichOneof("body") == "heartbeat":
                continue
            if reply.WhichOneof("body") == "error" and reply.error.code == pb.ErrorCode.Value("ABORTED"):
                raise StreamLost(f"cloud at {self.target}: {self._describe(reply)}")
            if reply.WhichOneof("body") != "edits":
                raise NodeError(f"cloud at {self.target}: {self._describe(reply)}")
            if reply.edits.frame_id != self.frame_id:
                raise NodeError(f"cloud at {self.target} answered frame {reply.edits.frame_id}, "
                                f"expected {self.frame_id}")
            parts.append(reply.edits)
        t0 = time.perf_counter_ns()
        try:
            out = codec.reply_from_pb(parts, values=False)
        except ProtocolError as exc:
            raise NodeError(f"cloud at {self.target} sent a bad edit: {exc}") from None
        self.held = [block for part in parts for block in part.values]
        out.values = earlier
        if out.until_us is None:               # the run's last reply: no report follows to decode behind
            out.values += self._values(self.held)
            self.held = []
        out.codec_ns = encode_ns + decode_ns + time.perf_counter_ns() - t0
        return out

    def _values(self, blocks: list[pb.EditValues]) -> list:
        try:
            return codec.values_from_blocks(blocks)
        except ProtocolError as exc:
            raise NodeError(f"cloud at {self.target} sent bad edit values: {exc}") from None
