"""The cloud node over a real loopback gRPC server on port 0."""
from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cloud_node.server import SERVICE_NAME, start_server
from device_node.client import GrpcTransport, fetch_model, get_info
from persona_sim.errors import NodeError
from persona_sim.sim.cloud_engine import CloudEngine
from persona_sim.wire.codec import channel_options, edit_to_pb, edit_wire_bytes
from persona_sim.wire.messages import (
    PROTOCOL_VERSION,
    AdaptRequest,
    Arrival,
    EditResult,
    Hello,
    RequestError,
    RoundReply,
    RoundReport,
)
from persona_sim.wire.proto import persona_pb2 as pb
from persona_sim.wire.proto import persona_pb2_grpc as pb_grpc

ADAPT = f"/{SERVICE_NAME}/Adapt"


def serve(tiny_world, body, max_frame_mb=None):
    """Start the real server on a free port, run ``body(channel, engine)``, stop the server."""
    scenario, _, _, path, bundle = tiny_world
    if max_frame_mb is not None:
        scenario = scenario.model_copy(update={"cloud": scenario.cloud.model_copy(update={"max_frame_mb": max_frame_mb})})
    data = path.read_bytes()
    engine = CloudEngine(scenario, bundle, len(data))

    async def main():
        server, port, _ = await start_server(engine, data, "127.0.0.1:0")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                                 options=channel_options(64 << 20)) as channel:
                return await body(channel, engine)
        finally:
            await server.stop(None)

    return asyncio.run(main())


async def _healthy(channel) -> bool:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return False
    return True


def test_health_check_is_serving_and_reflection_lists_services(tiny_world):
    async def body(channel, engine):
        assert await _healthy(channel)
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = [r async for r in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            list_services="")]))]
        return {s.name for s in replies[0].list_services_response.service}

    names = serve(tiny_world, body)
    assert {SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


def test_info_and_model_fetch(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_SIM_CACHE", str(tmp_path))

    async def body(channel, engine):
        stub = pb_grpc.PersonaCloudStub(channel)
        info = await get_info(stub, "test")
        return info, await fetch_model(stub, info, "test")

    info, data = serve(tiny_world, body)
    *_, path, bundle = tiny_world
    assert info.model_signature == bundle.signature and info.device_count == 12
    assert data == path.read_bytes()
    assert (tmp_path / "fetched" / f"{bundle.signature}.pt").read_bytes() == data


def test_lockstep_rounds_over_the_stream_with_errors_for_bad_requests(tiny_world):
    async def body(channel, engine):
        t = GrpcTransport(channel, "test", Hello("n", engine.bundle.signature, scenario_hash=engine.scenario_hash),
                          max_frame_bytes=1 << 20)
        await t.open()
        first = await t.round(RoundReport("persona-s", 0, 1000))
        arrivals = tuple(Arrival(AdaptRequest(f"dev-{i:06d}", 1, 5, "persona-s", (1, 2)), 2000) for i in (0, 1, 2, 77))
        last = await t.round(RoundReport("persona-s", first.until_us, None, arrivals))
        await t.close()
        return first, last

    first, last = serve(tiny_world, body)
    # nothing can arrive before 1000 µs, so the next round is there plus the cheapest batch (TINY: base 400 ms)
    # plus the least delay of any device's link (TINY: 5 ms), before which no later reply reaches a device
    assert first.results == [] and first.until_us == 1000 + 400_000 + 5_000
    assert last.until_us is None                      # no shard expects another arrival: the run ends
    edits = sorted((r for r in last.results if isinstance(r, EditResult)), key=lambda r: r.device_id)
    errors = [r for r in last.results if isinstance(r, RequestError)]
    assert [e.device_id for e in edits] == ["dev-000000", "dev-000001", "dev-000002"]
    # the edits come pending (times and charged size); the run ended, so their values come in the same reply
    assert all(e.params is None and e.wire_bytes > 4 * 8 * 8 * 2 for e in edits)
    values = sorted(last.values, key=lambda v: v.device_id)
    assert [v.device_id for v in values] == ["dev-000000", "dev-000001", "dev-000002"]
    assert all(v.params["head.0.weight"].shape == (8, 8) for v in values)
    complete = [EditResult(v.device_id, v.seq, v.prototype_id, v.params, v.edit_norm) for v in values]
    assert [e.wire_bytes for e in edits] == [edit_wire_bytes(edit_to_pb(c)) for c in complete]
    assert [(e.device_id, e.code) for e in errors] == [("dev-000077", "UNKNOWN_DEVICE")]
    # one worker, batches of at most 2: the third request waits for the first batch
    starts = sorted({e.compute_start_us for e in edits})
    assert len(starts) == 2 and starts[1] == max(e.compute_end_us for e in edits if e.compute_start_us == starts[0])
    assert all(2000 < e.enqueued_us <= e.compute_start_us < e.compute_end_us < e.departed_us for e in edits)


def _hello_frame(engine, shard=0, count=1):
    return pb.DeviceFrame(hello=pb.Hello(protocol_version=PROTOCOL_VERSION, node_id="n", model_signature=engine.bundle.signature,
                                         codecs=[pb.FLOAT32], shard_index=shard, shard_count=count,
                                         scenario_hash=engine.scenario_hash))


def test_reply_larger_than_the_cap_arrives_in_several_frames(tiny_world):
    async def body(channel, engine):
        call = pb_grpc.PersonaCloudStub(channel).Adapt()
        await call.write(_hello_frame(engine))
        assert (await call.read()).WhichOneof("body") == "hello_ack"
        await call.write(pb.DeviceFrame(requests=pb.RequestBatch(frame_id=2, method="persona-s", until_us=0,
                                                                 next_arrival_us=0, final=True)))
        until = (await call.read()).edits.until_us
        reqs = [pb.AdaptRequest(device_id=f"dev-{i:06d}", seq=1, method="persona-s", window=[1], arrived_us=1)
                for i in range(12)]
        await call.write(pb.DeviceFrame(requests=pb.RequestBatch(frame_id=3, requests=reqs, method="persona-s",
                                                                 until_us=until, next_arrival_us=-1, final=True)))
        frames = []
        while not frames or not frames[-1].edits.final:
            frames.append(await call.read())
        await call.done_writing()
        return frames

    frames = serve(tiny_world, body, max_frame_mb=0.0025)    # 2.6 KB: about four 8x8 edits a frame
    assert len(frames) >= 3
    assert sum(len(f.edits.edits) for f in frames) == 12 and {f.edits.frame_id for f in frames} == {3}
    assert frames[-1].edits.until_us == -1


def test_report_out_of_step_is_refused_and_a_shard_leaving_aborts_its_run(tiny_world):
    async def body(channel, engine):
        stub = pb_grpc.PersonaCloudStub(channel)
        a, b = stub.Adapt(), stub.Adapt()
        for call, shard in ((a, 0), (b, 1)):
            await call.write(_hello_frame(engine, shard, 2))
            await call.read()
        await a.write(pb.DeviceFrame(requests=pb.RequestBatch(frame_id=1, method="persona-s", until_us=7,
                                                              next_arrival_us=0, final=True)))
        out_of_step = await a.read()
        await a.write(pb.DeviceFrame(requests=pb.RequestBatch(frame_id=2, method="persona-s", until_us=0,
                                                              next_arrival_us=0, final=True)))
        await asyncio.sleep(0.2)             # shard 0 now waits for shard 1, which goes away
        await b.done_writing()
        aborted = await a.read()
        return out_of_step, aborted, await _healthy(channel)

    out_of_step, aborted, healthy = serve(tiny_world, body)
    assert out_of_step.error.code == pb.BAD_FRAME and "until_us 0, got 7" in out_of_step.error.message
    assert aborted.error.code == pb.ABORTED and "shard 1/2 left" in aborted.error.message
    assert healthy


def test_stream_must_start_with_hello(tiny_world):
    async def body(channel, engine):
        call = pb_grpc.PersonaCloudStub(channel).Adapt()
        await call.write(pb.DeviceFrame(heartbeat=pb.Heartbeat(sent_unix_ns=1)))
        reply = await call.read()
        return reply, await call.read(), await _healthy(channel)

    reply, after, healthy = serve(tiny_world, body)
    assert reply.error.code == pb.BAD_FRAME and "first DeviceFrame must be a Hello" in reply.error.message
    assert after is grpc.aio.EOF and healthy


def test_model_mismatch_is_refused_by_name(tiny_world):
    async def body(channel, engine):
        t = GrpcTransport(channel, "test", Hello("n", "not-the-model", scenario_hash=engine.scenario_hash),
                          max_frame_bytes=1 << 20)
        with pytest.raises(NodeError, match="MODEL_MISMATCH.*not-the-model"):
            await t.open()
        return await _healthy(channel)

    assert serve(tiny_world, body)


def test_garbage_bytes_and_empty_frames_do_not_kill_the_server(tiny_world):
    async def body(channel, engine):
        raw = channel.stream_stream(ADAPT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        call = raw(iter([b"\xff\xff\xff\xff garbage"]))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        first = err.value.code()
        stub = pb_grpc.PersonaCloudStub(channel)
        call = stub.Adapt()
        await call.write(_hello_frame(engine))
        await call.read()
        await call.write(pb.DeviceFrame())                      # no body at all
        empty = await call.read()
        await call.write(pb.DeviceFrame(heartbeat=pb.Heartbeat(sent_unix_ns=42)))
        beat = await call.read()
        await call.done_writing()
        return first, empty, beat, await _healthy(channel)

    first, empty, beat, healthy = serve(tiny_world, body)
    assert first == grpc.StatusCode.INVALID_ARGUMENT
    assert empty.error.code == pb.BAD_FRAME and "no body" in empty.error.message
    assert beat.heartbeat.sent_unix_ns == 42 and healthy


def test_a_refused_call_leaves_nothing_behind_on_the_server(tiny_world):
    """A call refused with context.abort kept its request alive (a cycle through gRPC's call state that the
    collector cannot see): the server grew by every refused frame's size. Refusals must leave no frame."""
    import gc
    import types

    async def body(channel, engine):
        raw = channel.stream_stream(ADAPT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        info = channel.unary_unary(f"/{SERVICE_NAME}/GetInfo", request_serializer=lambda b: b)
        codes = []
        for _ in range(3):
            for call in (raw(iter([b"\xff" * 100_000])), info(b"\xff" * 100_000)):
                try:
                    await call if hasattr(call, "__await__") and not hasattr(call, "__aiter__") else [
                        _ async for _ in call]
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
        gc.collect()
        held = [f for f in gc.get_objects() if type(f) is types.FrameType
                and any(isinstance(v, bytes) and len(v) >= 100_000 for v in f.f_locals.values())]
        return codes, held

    codes, held = serve(tiny_world, body)
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 6 and held == []


def test_oversized_frame_is_refused_and_the_server_lives(tiny_world):
    async def body(channel, engine):
        call = pb_grpc.PersonaCloudStub(channel).Adapt()
        big = pb.DeviceFrame(requests=pb.RequestBatch(requests=[pb.AdaptRequest(
            device_id="dev-000000", window=np.arange(300_000).tolist())]))
        await call.write(_hello_frame(engine))
        await call.read()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.write(big)
            await call.read()
        return err.value.code(), await _healthy(channel)

    code, healthy = serve(tiny_world, body, max_frame_mb=0.25)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and healthy


def test_frames_that_do_not_parse_are_invalid_argument_with_rate_limited_one_line_logs(tiny_world, caplog):
    async def body(channel, engine):
        adapt = channel.stream_stream(ADAPT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        info = channel.unary_unary(f"/{SERVICE_NAME}/GetInfo", request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
        rng = np.random.default_rng(0)
        codes, details = [], []
        for i in range(60):
            junk = b"\xff\xff\xff\xff" + rng.bytes(int(rng.integers(0, 64)))
            try:
                if i % 2:
                    await info(junk, timeout=5)
                else:
                    async for _ in adapt(iter([junk]), timeout=5):
                        pass
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
                details.append(exc.details())
        return codes, details, await _healthy(channel)

    with caplog.at_level("WARNING"):
        codes, details, healthy = serve(tiny_world, body)
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 60 and healthy
    assert "do not parse as persona_sim.v1.DeviceFrame" in details[0]
    assert "do not parse as persona_sim.v1.InfoRequest" in details[1]
    malformed = [r for r in caplog.records if "malformed frame" in r.getMessage()]
    assert 1 <= len(malformed) <= 5                      # one line each, at most a burst per 10 s
    cloud = [r for r in caplog.records if r.name.startswith("cloud_node")]    # what the server logged
    assert not any(r.exc_info for r in cloud) and not any("Traceback" in r.getMessage() for r in cloud)


def test_rate_limited_log_counts_what_it_suppressed(caplog):
    import logging

    from cloud_node.servicer import RateLimitedLog

    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), burst=2, interval_s=10, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="t"):
        for _ in range(5):
            limited.warning("bad %d", 1)
        now[0] = 11.0
        limited.warning("bad %d", 2)
    assert [r.getMessage() for r in caplog.records] == ["bad 1", "bad 1", "bad 2 (3 similar lines suppressed)"]


def test_a_node_with_another_scenario_is_told_which_keys_differ(tiny_world):
    from device_node.client import check_same_scenario

    scenario = tiny_world[0]
    other = scenario.model_copy(update={"cloud": scenario.cloud.model_copy(update={"workers": 2}),
                                        "persona": scenario.persona.model_copy(update={"clip": 0.5})})
    moved = scenario.model_copy(update={"dataset": scenario.dataset.model_copy(update={"data_dir": "/elsewhere"}),
                                        "eval": scenario.eval.model_copy(update={"negatives": 7})})

    async def body(channel, engine):
        info = await get_info(pb_grpc.PersonaCloudStub(channel), "test")
        with pytest.raises(NodeError, match=r"2 key\(s\) differ\): cloud.workers: cloud 1, this node 2; "
                                            r"persona.clip: cloud 1.0, this node 0.5"):
            check_same_scenario(info, other, "test")
        check_same_scenario(info, moved, "test")         # where the data lies and eval settings do not matter
        call = pb_grpc.PersonaCloudStub(channel).Adapt()  # a node that skips the check is refused by the cloud
        frame = _hello_frame(engine)
        frame.hello.scenario_hash = other.run_hash()
        await call.write(frame)
        return await call.read(), await call.read(), await _healthy(channel)

    refused, after, healthy = serve(tiny_world, body)
    assert refused.error.code == pb.SCENARIO_MISMATCH and other.run_hash() in refused.error.message
    assert after is grpc.aio.EOF and healthy
    assert moved.run_hash() == scenario.run_hash() != other.run_hash()


def test_streams_beyond_cloud_max_streams_are_refused_with_resource_exhausted(tiny_world):
    async def body(channel, engine):
        stub = pb_grpc.PersonaCloudStub(channel)
        open_calls = []
        for _ in range(2):
            call = stub.Adapt()
            await call.write(_hello_frame(engine))
            assert (await call.read()).WhichOneof("body") == "hello_ack"
            open_calls.append(call)
        extra = stub.Adapt()
        await extra.write(_hello_frame(engine))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await extra.read()
        for call in open_calls:                          # once one closes, a new stream is served again
            await call.done_writing()
            await call.read()
        again = stub.Adapt()
        await again.write(_hello_frame(engine))
        reply = await again.read()
        await again.done_writing()
        return err.value.code(), err.value.details(), reply, await _healthy(channel)

    scenario = tiny_world[0]
    limited = (scenario.model_copy(update={"cloud": scenario.cloud.model_copy(update={"max_streams": 2})}),
               *tiny_world[1:])
    code, details, reply, healthy = serve(limited, body)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 2 Adapt streams" in details
    assert reply.WhichOneof("body") == "hello_ack" and healthy


def test_a_shard_mid_round_when_its_run_is_aborted_is_told_aborted_and_may_start_again(tiny_world):
    def report(frame_id, until):
        return pb.DeviceFrame(requests=pb.RequestBatch(frame_id=frame_id, method="persona-s", until_us=until,
                                                       next_arrival_us=10**9, final=True))

    async def body(channel, engine):
        stub = pb_grpc.PersonaCloudStub(channel)
        calls = [stub.Adapt() for _ in range(3)]
        for shard, call in enumerate(calls):
            await call.write(_hello_frame(engine, shard, 3))
            await call.read()
        for call in calls:
            await call.write(report(1, 0))
        untils = {(await call.read()).edits.until_us for call in calls}
        (until,) = untils
        await calls[0].write(report(2, until))     # shard 0 waits; shard 2 is still computing its round
        await asyncio.sleep(0.1)
        await calls[1].done_writing()               # shard 1 goes away: the run is aborted
        waiting = await calls[0].read()
        await calls[2].write(report(2, until))     # shard 2 reports late: told the run is gone
        late = await calls[2].read()
        again = [stub.Adapt() for _ in range(3)]    # every shard reconnects and the run starts again at 0
        for shard, call in enumerate(again):
            await call.write(_hello_frame(engine, shard, 3))
            await call.read()
        for call in again:
            await call.write(report(1, 0))
        untils = [(await call.read()).edits.until_us for call in again]
        for call in calls + again:
            call.cancel()
        return waiting, late, untils

    waiting, late, restarted = serve(tiny_world, body)
    assert waiting.error.code == pb.ABORTED and "shard 1/3 left" in waiting.error.message
    assert late.error.code == pb.ABORTED and "aborted while shard 2/3 computed its round" in late.error.message
    assert len(set(restarted)) == 1 and restarted[0] > 0


def test_a_lost_stream_is_reopened_with_backoff_or_given_up_saying_why(tiny_world):
    import random

    from device_node.client import Backoff
    from persona_sim.errors import RunRestart

    delays = [Backoff(0.1, 1.0).delay(k, random.Random(k)) for k in range(8)]
    assert all(0.05 * 2**k <= d <= 0.1 * 2**k for k, d in enumerate(delays[:3])) and 0.5 <= max(delays) <= 1.0

    async def body(channel, engine):
        hello = Hello("n", engine.bundle.signature, 0, 1, scenario_hash=engine.scenario.run_hash())
        transport = GrpcTransport(channel, "here", hello, engine.max_frame_bytes, reconnect_s=5)
        await transport.open()
        transport.call.cancel()                     # the stream breaks; the cloud is still there
        with pytest.raises(RunRestart, match="'persona-s' starts again"):
            await transport.round(RoundReport("persona-s", 0, None, ()))
        async with grpc.aio.insecure_channel("127.0.0.1:1") as nowhere:   # nothing listens there
            lost = GrpcTransport(nowhere, "127.0.0.1:1", hello, engine.max_frame_bytes, reconnect_s=0.5)
            lost.call = lost.stub.Adapt()
            with pytest.raises(NodeError, match=r"no new stream within 0.5 s \(\d+ attempt\(s\)\), last: .*UNAVAIL"):
                await lost.round(RoundReport("persona-s", 0, None, ()))
        return transport.reconnects

    assert serve(tiny_world, body) == 1


def test_a_report_larger_than_the_shard_could_send_is_refused_not_buffered(tiny_world):
    async def body(channel, engine):
        call = pb_grpc.PersonaCloudStub(channel).Adapt()
        await call.write(_hello_frame(engine))
        await call.read()
        part = [pb.AdaptRequest(device_id=f"dev-{i:06d}", seq=1, method="persona-s", window=[1], arrived_us=0)
                for i in range(5)]
        for _ in range(3):                       # 15 requests in parts never marked final; TINY has 12 devices
            await call.write(pb.DeviceFrame(requests=pb.RequestBatch(frame_id=1, method="persona-s", requests=part)))
        refused = await call.read()
        await call.write(pb.DeviceFrame(requests=pb.RequestBatch(frame_id=2, method="persona-s", until_us=0,
                                                                 next_arrival_us=-1, final=True)))
        after = await call.read()                # the stream goes on with a fresh report
        await call.done_writing()
        return refused, after

    refused, after = serve(tiny_world, body)
    assert refused.error.code == pb.BAD_FRAME and "at most 12 requests" in refused.error.message
    assert after.WhichOneof("body") == "edits" and after.edits.frame_id == 2


def test_a_shard_that_starts_a_run_again_on_a_new_stream_aborts_the_old_run(tiny_world):
    """A shard reconnected before the cloud saw its old stream go (a half-open connection): its report at 0
    ends the run in progress for the others (ABORTED). The aborted shard's stream then ends, which aborts the
    new run too (it cannot go on without that shard); once both are back, the run starts afresh."""
    def report(frame_id, until):
        return pb.DeviceFrame(requests=pb.RequestBatch(frame_id=frame_id, method="persona-s", until_us=until,
                                                       next_arrival_us=10**9, final=True))

    async def opened(stub, shard):
        call = stub.Adapt()
        await call.write(_hello_frame(engine_of[0], shard, 2))
        await call.read()
        return call

    engine_of = []

    async def body(channel, engine):
        engine_of.append(engine)
        stub = pb_grpc.PersonaCloudStub(channel)
        a, b = await opened(stub, 0), await opened(stub, 1)
        for call in (a, b):
            await call.write(report(1, 0))
        (until,) = {(await call.read()).edits.until_us for call in (a, b)}
        await a.write(report(2, until))                # shard 0 waits for shard 1 ...
        await asyncio.sleep(0.1)
        b2 = await opened(stub, 1)                     # ... which comes back on a new stream, from the start
        await b2.write(report(1, 0))
        told = [await a.read(), await b2.read()]
        a2, b3 = await opened(stub, 0), await opened(stub, 1)
        for call in (a2, b3):
            await call.write(report(1, 0))
        fresh = [(await call.read()).edits.until_us for call in (a2, b3)]
        for call in (a, b, a2, b2, b3):
            call.cancel()
        return told, fresh, until

    (a_told, b2_told), fresh, until = serve(tiny_world, body)
    assert a_told.error.code == pb.ABORTED and "shard 1/2 started again the run of 'persona-s'" in a_told.error.message
    assert b2_told.error.code == pb.ABORTED and "shard 0/2 left" in b2_told.error.message
    assert fresh == [until, until]                     # the new run's first round, as the old one's was


@pytest.mark.parametrize("case", ["not pending", "wrong layers", "never sent"])
def test_a_device_refuses_values_it_was_not_promised_and_a_run_that_ends_without_them(tiny_world, case):
    """Values for an edit the device was not sent pending, or of other layers, are a bad frame; a run whose cloud
    never sends the values it promised ends with an error naming them, not with unscored predictions."""
    from persona_sim.errors import ProtocolError
    from persona_sim.sim.device import plan_device, prototype_params
    from persona_sim.sim.simulation import MethodRun, Recorder, device_links

    scenario, dataset, split, _, bundle = tiny_world
    plans = [plan_device(0, int(split.device_users[0]), dataset, scenario, bundle)]
    layers = prototype_params(bundle)

    class Cloud:       # answers the first request pending, then sends (or never sends) its values
        def __init__(self):
            self.asked = None

        async def round(self, report):
            if self.asked is None and report.arrivals:
                self.asked = report.arrivals[0]
                a, leaves = self.asked, max(self.asked.arrived_us, report.until_us) + 1
                return RoundReply([EditResult(a.request.device_id, a.request.seq, 0, None, 0.0, wire_bytes=500,
                                              departed_us=leaves)], leaves + 10**6)
            if self.asked is None:
                return RoundReply([], report.until_us + 10**6)
            a = self.asked
            values = {"not pending": [EditResult(a.request.device_id, a.request.seq + 1, 0, layers, 0.0)],
                      "wrong layers": [EditResult(a.request.device_id, a.request.seq, 0,
                                                  {k: v[:1] for k, v in layers.items()}, 0.0)],
                      "never sent": []}[case]
            return RoundReply([], None, values=values)

    run = MethodRun(scenario, bundle, plans, "persona-s", Recorder(), device_links(scenario, plans))
    match = {"not pending": "not waiting for them", "wrong layers": "have layers",
             "never sent": "without their values"}[case]
    with pytest.raises(ProtocolError, match=match):
        asyncio.run(run.run(Cloud()))


def test_a_replys_values_come_with_the_next_reply_or_with_the_runs_last():
    """The node decodes a reply's edit values behind its next report: they come with the next reply, and the
    run's last reply brings its own. A stand-in call answers with frames the cloud's codec builds."""
    from persona_sim.wire import codec

    def values(i):
        return EditResult(f"dev-{i:06d}", 1, 0, {"w": np.full(3, i, np.float32)}, 0.5)

    def frames(until_us, ids):
        blocks = codec.values_blocks([values(i) for i in ids], "FLOAT32", 1 << 20)
        return [pb.CloudFrame.FromString(f) for f in codec.reply_frames(0, RoundReply([], until_us,
                                                                                       value_blocks=blocks), 1 << 20)]

    class Call:
        def __init__(self):
            self.replies = frames(100, [1, 2]) + frames(200, [3]) + frames(None, [4])

        async def write(self, frame):
            pass

        async def read(self):
            frame = self.replies.pop(0)
            frame.edits.frame_id = transport.frame_id
            return frame

    transport = GrpcTransport(grpc.insecure_channel("127.0.0.1:1"), "stand-in", Hello("n", "m"), 1 << 20)
    transport.call = Call()                    # in place of the stream the channel would open
    got = [asyncio.run(transport.round(RoundReport("persona-s", t, None))) for t in (0, 100, 200)]
    assert [[v.device_id for v in r.values] for r in got] == [[], ["dev-000001", "dev-000002"],
                                                              ["dev-000003", "dev-000004"]]
    assert got[1].values[1].params["w"].tolist() == [2.0, 2.0, 2.0] and transport.held == []
