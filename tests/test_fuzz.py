"""Hostile input against a live cloud node and the codec: structured frames from hypothesis, random bytes.

The server must answer every class of abuse with an error (a frame or a status), never die, answer its
health check within a second after each, and still serve a legitimate round exactly as a fresh server does.
"""
from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_node.server import SERVICE_NAME, start_server
from device_node.client import GrpcTransport
from persona_sim.errors import ProtocolError
from persona_sim.sim.cloud_engine import CloudEngine
from persona_sim.wire import codec
from persona_sim.wire.codec import channel_options
from persona_sim.wire.messages import PROTOCOL_VERSION, AdaptRequest, Arrival, Hello, RoundReport
from persona_sim.wire.proto import persona_pb2 as pb

ADAPT = f"/{SERVICE_NAME}/Adapt"
U64 = st.integers(0, 2**64 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
U32 = st.integers(0, 2**32 - 1)
TEXT = st.text(max_size=40)


class LiveCloud:
    """The real cloud node serving on a free loopback port from a thread of its own."""

    def __init__(self, tiny_world):
        scenario, _, _, path, bundle = tiny_world
        data = path.read_bytes()
        self.engine = CloudEngine(scenario, bundle, len(data))
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve():
            asyncio.set_event_loop(self.loop)
            self.server, self.port, _ = self.loop.run_until_complete(start_server(self.engine, data, "127.0.0.1:0"))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(30), "the cloud node did not start"
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=channel_options(64 << 20))

    def stop(self):
        self.channel.close()
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def healthy(self) -> bool:
        reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                                               timeout=1.0)
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def stream(self, frames: list[bytes], timeout: float = 1.0) -> tuple[list[pb.CloudFrame], grpc.StatusCode | None]:
        """Send raw frames on one Adapt stream; collect replies until it ends, fails or times out."""
        call = self.channel.stream_stream(ADAPT, request_serializer=lambda b: b,
                                          response_deserializer=pb.CloudFrame.FromString)
        replies = []
        try:
            for reply in call(iter(frames), timeout=timeout):
                replies.append(reply)
        except grpc.RpcError as exc:
            return replies, exc.code()
        return replies, None

    def legitimate_round(self):
        async def body():
            async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=channel_options(64 << 20)) as ch:
                t = GrpcTransport(ch, "fuzz-check", Hello("n", self.engine.bundle.signature,
                                                          scenario_hash=self.engine.scenario_hash), 1 << 20)
                await t.open()
                first = await t.round(RoundReport("persona-s", 0, 1000))
                arrivals = tuple(Arrival(AdaptRequest(f"dev-{i:06d}", 1, 5, "persona-s", (1, 2, 3)), 2000)
                                 for i in range(4))
                last = await t.round(RoundReport("persona-s", first.until_us, None, arrivals))
                await t.close()
                ends = {r.device_id: r.compute_end_us for r in last.results}   # edits come pending, values after
                return sorted((v.device_id, v.prototype_id, ends[v.device_id],
                               {k: a.tobytes() for k, a in v.params.items()}) for v in last.values)
        return asyncio.run(body())


@pytest.fixture(scope="module")
def cloud(tiny_world):
    live = LiveCloud(tiny_world)
    yield live
    live.stop()


def _hello(engine, valid: bool, fields: dict) -> pb.DeviceFrame:
    good = dict(protocol_version=PROTOCOL_VERSION, node_id="fuzz", model_signature=engine.bundle.signature, codecs=[pb.FLOAT32],
                shard_index=0, shard_count=1, scenario_hash=engine.scenario_hash)
    return pb.DeviceFrame(hello=pb.Hello(**(good if valid else {**good, **fields})))


hostile_hello = st.fixed_dictionaries({}, optional={
    "protocol_version": U32, "node_id": TEXT, "model_signature": TEXT, "codecs": st.lists(st.integers(0, 9), max_size=4),
    "shard_index": U32, "shard_count": U32, "scenario_hash": TEXT})
device_ids = st.one_of(st.integers(0, 30).map(lambda i: f"dev-{i:06d}"), TEXT)
requests = st.builds(lambda d, s, i, m, w, a: pb.AdaptRequest(device_id=d, seq=s, issued_us=i, method=m, window=w,
                                                             arrived_us=a),
                     device_ids, U64, I64, st.sampled_from(["persona-s", "persona-m", "static", "nope", ""]),
                     st.lists(I64, max_size=60), I64)
batches = st.builds(lambda f, m, u, n, rs, fin: pb.DeviceFrame(requests=pb.RequestBatch(
    frame_id=f, method=m, until_us=u, next_arrival_us=n, requests=rs, final=fin)),
    U64, st.sampled_from(["persona-s", "persona-m", "static", "x"]), I64, I64, st.lists(requests, max_size=8),
    st.booleans())
other_frames = st.sampled_from([pb.DeviceFrame(), pb.DeviceFrame(heartbeat=pb.Heartbeat(sent_unix_ns=1))])


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(hello_valid=st.booleans(), hello_fields=hostile_hello, second_hello=st.booleans(),
       body=st.lists(st.one_of(batches, other_frames), max_size=5))
def test_structured_hostile_streams_never_kill_the_server(cloud, hello_valid, hello_fields, second_hello, body):
    frames = [_hello(cloud.engine, hello_valid, hello_fields)]
    if second_hello:
        frames.append(_hello(cloud.engine, True, {}))           # a Hello twice on one stream
    frames += body
    replies, status = cloud.stream([f.SerializeToString() for f in frames], timeout=0.5)
    assert status in (None, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INVALID_ARGUMENT,
                      grpc.StatusCode.RESOURCE_EXHAUSTED), status
    for reply in replies:                                        # what comes back is a well-formed frame
        assert reply.WhichOneof("body") in ("hello_ack", "error", "edits", "heartbeat")
    assert cloud.healthy()


def test_random_bytes_and_floods_then_a_legitimate_round_matches_a_fresh_server(cloud, tiny_world):
    rng = np.random.default_rng(11)
    for _ in range(150):                                         # bounded random-bytes loop
        junk = rng.bytes(int(rng.integers(0, 200)))
        _, status = cloud.stream([junk], timeout=1.0)
        assert status in (None, grpc.StatusCode.INVALID_ARGUMENT)
    assert cloud.healthy()
    flood = pb.DeviceFrame(requests=pb.RequestBatch(frame_id=1, method="persona-s", until_us=0, final=True, requests=[
        pb.AdaptRequest(device_id=f"dev-{i % 40:06d}", seq=i, method="persona-s", window=[1, 2]) for i in range(5000)]))
    replies, _ = cloud.stream([_hello(cloud.engine, True, {}).SerializeToString(), flood.SerializeToString()],
                              timeout=5.0)
    assert replies[0].WhichOneof("body") == "hello_ack" and cloud.healthy()
    fresh = LiveCloud(tiny_world)
    try:
        assert cloud.legitimate_round() == fresh.legitimate_round()
    finally:
        fresh.stop()


def _tensor(name, dtype, shape, data) -> pb.Tensor:
    return pb.Tensor(name=name, dtype=dtype, shape=shape, data=data)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(dtype=st.integers(0, 9), shape=st.lists(st.integers(-3, 2**40), max_size=4), data=st.binary(max_size=64),
       special=st.sampled_from([None, np.nan, np.inf, -np.inf]))
def test_hostile_edit_tensors_decode_or_raise_a_protocol_error(dtype, shape, data, special):
    if special is not None and dtype == pb.FLOAT32 and len(data) >= 4:
        data = np.float32(special).tobytes() + data[4:]
    push = pb.EditPush(device_id="dev-000001", seq=1, prototype_id=0, edit_norm=0.0,
                       tensors=[_tensor("head.0.weight", dtype, shape, data)])
    try:
        edit = codec.edit_from_pb(push)
    except ProtocolError as exc:
        assert exc.code == "BAD_FRAME"
        return
    array = edit.params["head.0.weight"]
    assert array.dtype == np.float32 and np.isfinite(array).all() and list(array.shape) == shape
