"""The device node's gRPC side: model fetch, and the Adapt streams as a Transport.

Devices are multiplexed over a few streams (device index mod streams). Each
``exchange`` sends one RequestBatch frame per stream and waits for the frames
that answer it (the last marked final), all streams concurrently.
"""
from __future__ import annotations

import asyncio

import grpc

from persona_sim import codec
from persona_sim.bundle import cache_dir, signature_of, write_atomic
from persona_sim.errors import NodeError, ProtocolError
from persona_sim.messages import AdaptRequest, CloudInfo, EditResult, Hello, RequestError, device_index
from persona_sim.proto import persona_pb2 as pb
from persona_sim.proto import persona_pb2_grpc as pb_grpc


def _rpc_error(what: str, target: str, exc: grpc.RpcError) -> NodeError:
    return NodeError(f"{what} at {target} failed: {exc.code().name}: {exc.details()}")


async def get_info(stub: pb_grpc.PersonaCloudStub, target: str) -> CloudInfo:
    try:
        return codec.info_from_pb(await stub.GetInfo(pb.InfoRequest(), timeout=30))
    except grpc.RpcError as exc:
        raise _rpc_error("GetInfo", target, exc) from None


async def fetch_model(stub: pb_grpc.PersonaCloudStub, info: CloudInfo, target: str) -> bytes:
    """The cloud's bundle bytes, from the local cache or fetched and cached by signature."""
    path = cache_dir() / "fetched" / f"{info.model_signature}.pt"
    if path.exists():
        data = path.read_bytes()
        if signature_of(data) == info.model_signature:
            return data
    parts = []
    try:
        async for chunk in stub.FetchModel(pb.FetchModelRequest(model_signature=info.model_signature), timeout=300):
            parts.append(chunk.data)
    except grpc.RpcError as exc:
        raise _rpc_error("FetchModel", target, exc) from None
    data = b"".join(parts)
    if signature_of(data) != info.model_signature:
        raise NodeError(f"model fetched from {target} has signature {signature_of(data)}, "
                        f"expected {info.model_signature}")
    write_atomic(path, data)
    return data


class GrpcTransport:
    def __init__(self, channel: grpc.aio.Channel, target: str, hello: Hello, streams: int, max_frame_bytes: int):
        self.stub = pb_grpc.PersonaCloudStub(channel)
        self.target, self.hello, self.max_frame_bytes = target, hello, max_frame_bytes
        self.n_streams = streams
        self.calls: list = []
        self.frame_id = 0

    async def open(self) -> None:
        for _ in range(self.n_streams):
            call = self.stub.Adapt()
            self.calls.append(call)
            await call.write(codec.hello_to_pb(self.hello))
            reply = await self._read(call)
            if reply.WhichOneof("body") != "hello_ack":
                raise NodeError(f"cloud at {self.target} refused the stream: {self._describe(reply)}")

    async def close(self) -> None:
        for call in self.calls:
            try:
                await call.done_writing()
                while await call.read() is not grpc.aio.EOF:
                    pass
            except grpc.RpcError:
                pass
        self.calls = []

    async def _read(self, call) -> pb.CloudFrame:
        try:
            frame = await call.read()
        except grpc.RpcError as exc:
            raise _rpc_error("Adapt stream", self.target, exc) from None
        if frame is grpc.aio.EOF:
            raise NodeError(f"cloud at {self.target} closed the Adapt stream")
        return frame

    @staticmethod
    def _describe(frame: pb.CloudFrame) -> str:
        if frame.WhichOneof("body") == "error":
            return f"{pb.ErrorCode.Name(frame.error.code)}: {frame.error.message}"
        return f"unexpected {frame.WhichOneof('body') or 'empty'} frame"

    def _frames(self, requests: list[AdaptRequest]) -> list[pb.DeviceFrame]:
        """RequestBatch frames of at most max_frame_bytes each."""
        frames, current, size = [], [], 0
        for req in requests:
            n = codec.request_wire_bytes(req)
            if current and size + n > self.max_frame_bytes - 64:
                frames.append(current)
                current, size = [], 0
            current.append(req)
            size += n
        frames.append(current)
        out = []
        for group in frames:
            self.frame_id += 1
            out.append(codec.request_batch_frame(self.frame_id, group))
        return out

    async def _exchange_stream(self, call, requests: list[AdaptRequest]) -> list[EditResult | RequestError]:
        replies: list[EditResult | RequestError] = []
        for frame in self._frames(requests):
            try:
                await call.write(frame)
            except grpc.RpcError as exc:
                raise _rpc_error("Adapt stream", self.target, exc) from None
            while True:
                reply = await self._read(call)
                if reply.WhichOneof("body") == "heartbeat":
                    continue
                if reply.WhichOneof("body") != "edits":
                    raise NodeError(f"cloud at {self.target}: {self._describe(reply)}")
                batch = reply.edits
                if batch.frame_id != frame.requests.frame_id:
                    raise NodeError(f"cloud at {self.target} answered frame {batch.frame_id}, "
                                    f"expected {frame.requests.frame_id}")
                try:
                    replies.extend(codec.edit_from_pb(e) for e in batch.edits)
                except ProtocolError as exc:
                    raise NodeError(f"cloud at {self.target} sent a bad edit: {exc}") from None
                replies.extend(codec.error_from_pb(e) for e in batch.errors)
                if batch.final:
                    break
        return replies

    async def exchange(self, requests: list[AdaptRequest]) -> list[EditResult | RequestError]:
        groups: dict[int, list[AdaptRequest]] = {}
        for req in requests:
            idx = device_index(req.device_id) or 0
            groups.setdefault(idx % self.n_streams, []).append(req)
        results = await asyncio.gather(*(self._exchange_stream(self.calls[s], g) for s, g in sorted(groups.items())))
        return [r for group in results for r in group]
