"""Every wire message round-trips; the codec validates what it decodes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persona_sim.errors import ProtocolError
from persona_sim.wire import codec
from persona_sim.wire.messages import (
    AdaptRequest,
    Arrival,
    CloudInfo,
    EditResult,
    Hello,
    RequestError,
    RoundReply,
    RoundReport,
)
from persona_sim.wire.proto import persona_pb2 as pb

TENSOR = pb.Tensor(name="head.0.weight", dtype=pb.FLOAT32, shape=[2, 3],
                   data=np.arange(6, dtype="<f4").tobytes())
EVERY_MESSAGE = [
    pb.DeviceFrame(hello=pb.Hello(protocol_version=1, node_id="n1", model_signature="abc",
                                  codecs=[pb.FLOAT32, pb.FLOAT16], shard_index=1, shard_count=3)),
    pb.DeviceFrame(requests=pb.RequestBatch(frame_id=9, requests=[
        pb.AdaptRequest(device_id="dev-000001", seq=4, issued_us=123456789, method="persona-s", window=[1, 2, 3])])),
    pb.DeviceFrame(heartbeat=pb.Heartbeat(sent_unix_ns=1_700_000_000_000_000_000)),
    pb.CloudFrame(hello_ack=pb.HelloAck(protocol_version=1, cloud_id="c", model_signature="abc", codec=pb.FLOAT32,
                                        max_frame_bytes=4 << 20)),
    pb.CloudFrame(edits=pb.EditBatch(frame_id=9, final=True, edits=[
        pb.EditPush(device_id="dev-000001", seq=4, prototype_id=2, tensors=[TENSOR], edit_norm=1.5, compute_ns=77)],
        errors=[pb.Error(code=pb.UNKNOWN_DEVICE, message="no", device_id="dev-9", seq=1)])),
    pb.CloudFrame(error=pb.Error(code=pb.MODEL_MISMATCH, message="other model")),
    pb.CloudFrame(heartbeat=pb.Heartbeat(sent_unix_ns=5)),
    pb.InfoRequest(),
    pb.CloudInfo(protocol_version=1, cloud_id="c", model_signature="abc", model_bytes=10, scenario_name="s",
                 methods=["static", "persona-s"], max_frame_bytes=100, device_count=7),
    pb.FetchModelRequest(model_signature="abc"),
    pb.ModelChunk(offset=0, data=b"\x00\x01", total_bytes=2),
]


@pytest.mark.parametrize("msg", EVERY_MESSAGE, ids=lambda m: type(m).__name__ + ":" + str(
    m.WhichOneof("body") if hasattr(m, "WhichOneof") and m.DESCRIPTOR.oneofs else ""))
def test_every_message_type_round_trips(msg):
    again = type(msg).FromString(msg.SerializeToString())
    assert again == msg
    if msg.DESCRIPTOR.oneofs:
        assert again.WhichOneof("body") == msg.WhichOneof("body")


def test_request_round_trip_through_codec():
    req = AdaptRequest("dev-000003", 7, 5_000_000, "persona-s", (4, 5, 6))
    assert codec.request_from_pb(pb.AdaptRequest.FromString(codec.request_to_pb(req).SerializeToString())) == req


def test_edit_round_trip_keeps_exact_floats():
    rng = np.random.default_rng(0)
    params = {"head.0.weight": rng.normal(size=(4, 4)).astype(np.float32), "head.0.bias": np.ones(4, np.float32)}
    edit = EditResult("dev-000001", 2, 1, params, 0.25, compute_ns=999)
    back = codec.edit_from_pb(pb.EditPush.FromString(codec.edit_to_pb(edit).SerializeToString()))
    assert (back.device_id, back.seq, back.prototype_id, back.edit_norm, back.compute_ns) == ("dev-000001", 2, 1, 0.25, 999)
    for k in params:
        assert back.params[k].tobytes() == params[k].tobytes()
    # tensors travel as bytes: 16 + 4 floats of 4 bytes, plus small headers
    assert 80 < back.wire_bytes < 200


def test_charged_edit_size_ignores_the_measured_time_and_the_clouds_stage_times():
    params = {"w": np.zeros((3, 3), np.float32)}
    small = codec.edit_to_pb(EditResult("dev-000001", 1, 0, params, 1.0, compute_ns=1))
    large = codec.edit_to_pb(EditResult("dev-000001", 1, 0, params, 1.0, compute_ns=10**15, enqueued_us=10**12,
                                        compute_start_us=10**12, compute_end_us=10**13, departed_us=10**14))
    assert small.ByteSize() != large.ByteSize()
    assert codec.edit_wire_bytes(small) == codec.edit_wire_bytes(large)


def test_tensor_whose_bytes_do_not_match_its_shape_is_rejected():
    bad = pb.EditPush(device_id="dev-000001", seq=1, prototype_id=0, edit_norm=0.0, tensors=[
        pb.Tensor(name="w", dtype=pb.FLOAT32, shape=[3, 3], data=b"\x00" * 12)])
    with pytest.raises(ProtocolError, match=r"tensor 'w' shape \(3, 3\) needs 36 bytes, got 12"):
        codec.edit_from_pb(bad)


def test_tensor_with_unknown_dtype_is_rejected():
    bad = pb.EditPush(device_id="dev-000001", seq=1, prototype_id=0, edit_norm=0.0, tensors=[pb.Tensor(name="w", dtype=0, shape=[1], data=b"1234")])
    with pytest.raises(ProtocolError, match="unsupported dtype"):
        codec.edit_from_pb(bad)


def test_reply_is_split_under_the_frame_cap_and_only_the_last_part_is_final():
    params = {"w": np.zeros((16, 16), np.float32)}       # about 1 KiB per edit
    edits = [EditResult(f"dev-{i:06d}", 1, 0, params, 0.0, departed_us=10 + i) for i in range(10)]
    errors = [RequestError("dev-000099", 1, "UNKNOWN_DEVICE", "unknown")]
    raw = codec.reply_frames(5, RoundReply(edits + errors, 777, 11, 22), max_bytes=3000)
    assert len(raw) > 1 and all(len(f) <= 3000 for f in raw)
    frames = [pb.CloudFrame.FromString(f) for f in raw]
    assert [f.edits.final for f in frames] == [False] * (len(frames) - 1) + [True]
    assert {f.edits.frame_id for f in frames} == {5}
    assert sum(len(f.edits.edits) for f in frames) == 10
    assert [e.device_id for e in frames[-1].edits.errors] == ["dev-000099"]
    back = codec.reply_from_pb([f.edits for f in frames])
    assert (back.until_us, back.server_ns, back.wait_ns) == (777, 11, 22)
    assert [r.departed_us for r in back.results if isinstance(r, EditResult)] == list(range(10, 20))
    assert codec.reply_from_frames(codec.reply_frames(1, RoundReply([], None), 3000)).until_us is None


def test_one_edit_larger_than_the_cap_fails_that_request_not_the_frame():
    edit = EditResult("dev-000001", 1, 0, {"w": np.zeros((64, 64), np.float32)}, 0.0)
    small = EditResult("dev-000002", 1, 0, {"w": np.zeros((2, 2), np.float32)}, 0.0)
    back = codec.reply_from_frames(codec.reply_frames(1, RoundReply([edit, small], 5), max_bytes=1024))
    assert [r.device_id for r in back.results if isinstance(r, EditResult)] == ["dev-000002"]
    (err,) = [r for r in back.results if isinstance(r, RequestError)]
    assert err.device_id == "dev-000001" and "exceeds the frame cap" in err.message


def test_round_report_is_split_and_reassembled_with_arrival_times():
    arrivals = tuple(Arrival(AdaptRequest(f"dev-{i:06d}", 1, 100 + i, "persona-s", tuple(range(1, 60))), 200 + i)
                     for i in range(40))
    report = RoundReport("persona-s", 150, 900, arrivals)
    frames = codec.report_frames(3, report, max_bytes=2000)
    assert len(frames) > 1 and all(f.ByteSize() <= 2000 for f in frames)
    assert [f.requests.final for f in frames] == [False] * (len(frames) - 1) + [True]
    back, errors = codec.report_from_pb([f.requests for f in frames])
    assert back == report and errors == []
    none, _ = codec.report_from_pb([f.requests for f in codec.report_frames(1, RoundReport("persona-s", 5, None), 2000)])
    assert none.next_arrival_us is None


def test_report_frames_size_requests_by_a_bound_that_holds():
    """report_frames sizes a request by a bound (its window's varints all as wide as its largest id's), not by
    serializing it; the bound holds for mixed widths, negative ids, the widest seq and times."""
    for window in ((1, 2, 300, 2**40), (5, -1, 7), (0,), (2**63 - 1,) * 3):
        req = AdaptRequest("dev-000007", 2**64 - 1, -5, "persona-s", window)
        msg = codec.request_to_pb(req)
        msg.arrived_us = -1
        assert codec._request_bytes(req, codec._window_bound(window), -1) >= msg.ByteSize(), window


def test_charged_request_size_leaves_the_arrival_time_out():
    req = AdaptRequest("dev-000001", 1, 100, "persona-s", (1, 2, 3))
    (frame,) = codec.report_frames(1, RoundReport("persona-s", 0, 0, (Arrival(req, 10**12),)), 10000)
    assert frame.requests.requests[0].arrived_us == 10**12
    assert codec.request_wire_bytes(req) == codec.request_wire_bytes(codec.request_from_pb(frame.requests.requests[0]))


def test_hello_and_info_round_trip():
    hello = Hello("n", "sig", 2, 4, codecs=("FLOAT32",))
    assert codec.hello_from_pb(codec.hello_to_pb(hello).hello) == hello
    info = CloudInfo("c", "sig", 10, "s", ("static",), 100, 7)
    assert codec.info_from_pb(codec.info_to_pb(info)) == info


def test_hello_with_impossible_shard_is_rejected():
    with pytest.raises(ProtocolError, match="not a valid shard"):
        codec.hello_from_pb(pb.Hello(shard_index=3, shard_count=3))


@pytest.mark.parametrize("dtype, bound", [
    ("FLOAT32", lambda x: np.zeros_like(x)),
    ("FLOAT16", lambda x: np.maximum(np.abs(x) * 2.0**-11, 2.0**-25)),  # 11 significant bits; below 2^-14, 2^-25
    ("INT8", lambda x: np.full_like(x, np.abs(x).max() / 127 / 2 * (1 + 1e-6))),   # half a step of max|x|/127
])
def test_each_edit_codec_round_trips_within_its_stated_error(dtype, bound):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(33, 17)) * rng.choice([1e-3, 0.1, 3.0], size=(33, 17))).astype(np.float32)
    t = pb.Tensor.FromString(codec.tensor_to_pb("w", x, pb.DType.Value(dtype)).SerializeToString())
    back = codec.tensor_from_pb(t, "test")
    assert back.dtype == np.float32 and back.shape == x.shape
    assert (np.abs(back - x) <= bound(x)).all()
    assert len(t.data) == x.size * {"FLOAT32": 4, "FLOAT16": 2, "INT8": 1}[dtype]
    zeros = codec.tensor_from_pb(codec.tensor_to_pb("z", np.zeros(3, np.float32), pb.INT8), "test")
    assert (zeros == 0).all()


def test_an_int8_tensor_with_a_bad_scale_is_rejected():
    t = codec.tensor_to_pb("w", np.ones(4, np.float32), pb.INT8)
    for scale in (0.0, -1.0, float("nan"), float("inf")):
        t.scale = scale
        with pytest.raises(ProtocolError, match="INT8 tensor 'w' has scale"):
            codec.tensor_from_pb(t, "EditPush")


def test_charged_edit_size_is_the_size_of_the_edit_sent_alone():
    rng = np.random.default_rng(2)
    for n in (0, 1, 3, 40, 700):
        params = {"a.weight": rng.normal(size=(n, 3)).astype(np.float32), "a.bias": np.ones(3, np.float32)}
        msg = codec.edit_to_pb(EditResult("dev-000001", 7**min(n, 20), 2, params, 0.5, compute_ns=n * 10**9,
                                          enqueued_us=n, departed_us=10**12))
        canonical = pb.EditPush()
        canonical.CopyFrom(msg)
        canonical.ClearField("compute_ns")
        canonical.ClearField("stages")
        alone = pb.CloudFrame(edits=pb.EditBatch(final=True, edits=[canonical])).ByteSize() + codec.GRPC_PREFIX_BYTES
        assert codec.edit_wire_bytes(msg) == alone


def test_delta_edits_send_only_changed_layers_and_the_device_ends_up_with_what_the_cloud_tracks():
    rng = np.random.default_rng(3)
    initial = {"h.weight": rng.normal(size=(8, 8)).astype(np.float32), "h.bias": rng.normal(size=8).astype(np.float32)}
    for dtype in ("FLOAT32", "INT8"):
        encoder, device = codec.EditEncoder(dtype, 0.05, initial), dict(initial)
        sent = []
        for seq in range(1, 6):
            params = {"h.weight": device["h.weight"] + rng.normal(size=(8, 8)).astype(np.float32) * 0.2,
                      "h.bias": device["h.bias"] * (1 + 0.01 * seq)}    # the bias moves by ~1 %: left out
            msg = encoder.encode(EditResult("dev-000004", seq, 0, params, 1.0))
            back = codec.edit_from_pb(pb.EditPush.FromString(codec.edit_to_pb(
                EditResult("dev-000004", seq, 0, params, 1.0, encoded=msg)).SerializeToString()))
            device = {**device, **back.params}
            sent.append(sorted(back.params))
        assert sent == [["h.weight"]] * 5
        for name in initial:
            assert device[name].tobytes() == encoder.held["dev-000004"][name].tobytes()
    full = codec.EditEncoder("FLOAT32", 0.0, initial)
    full.encode(probe := EditResult("dev-000001", 1, 0, initial, 1.0))
    assert len(probe.encoded.tensors) == 2 and probe.wire_bytes > msg.ByteSize()


def test_an_edit_sent_pending_is_charged_exactly_what_its_values_weigh_in_every_codec():
    """The charged size of an edit whose values come later is fixed by its layers' shapes and dtype: equal to the
    size of the complete edit, whatever its values, prototype id (0 included) or edit norm (0.0 included). Its values
    travel stacked with other edits' and decode to the bits the complete edit would."""
    rng = np.random.default_rng(5)
    initial = {"h.0.weight": rng.normal(size=(16, 16)).astype(np.float32), "h.0.bias": np.zeros(16, np.float32)}
    for dtype in ("FLOAT32", "FLOAT16", "INT8"):
        encoder = codec.EditEncoder(dtype, 0.0, initial)
        pending, values, alone = [], [], []
        for seq, proto, norm, scale in ((1, 0, 0.0, 0.0), (127, 1, 0.5, 1.0), (2**20, 4095, 3.25, 100.0)):
            edit = EditResult("dev-000123", seq, proto, {k: v * scale for k, v in initial.items()}, norm, seq)
            values.append(edit)
            alone.append(codec.edit_from_pb(pb.EditPush.FromString(
                codec.edit_to_pb(EditResult(**{**vars(edit), "encoded": None}), pb.DType.Value(dtype))
                .SerializeToString())))
            encoder.encode(edit)
            assert encoder.wire_bytes("dev-000123", seq) == edit.wire_bytes, (dtype, seq)
            pending.append(EditResult("dev-000123", seq, 0, None, 0.0, wire_bytes=edit.wire_bytes, departed_us=9))
        blocks = codec.values_blocks(values, dtype, 1 << 20)
        reply = codec.reply_from_frames(codec.reply_frames(1, RoundReply(pending, 10, value_blocks=blocks), 1 << 20))
        assert [(r.params, r.wire_bytes, r.departed_us) for r in reply.results] == \
            [(None, e.wire_bytes, 9) for e in values]
        for got, want in zip(reply.values, alone):
            assert (got.seq, got.prototype_id, got.edit_norm, got.compute_ns) == \
                (want.seq, want.prototype_id, want.edit_norm, want.seq)
            assert all(got.params[k].tobytes() == want.params[k].tobytes() for k in initial), dtype
    with pytest.raises(ValueError, match="delta"):
        codec.EditEncoder("FLOAT32", 0.1, initial).wire_bytes("dev-000001", 1)


def test_values_blocks_and_their_frames_are_the_bytes_protobuf_writes():
    """Values blocks and the frames around them are put together by hand (one copy of the values): they must be
    exactly what protobuf writes for the same message, field order included, in every dtype."""
    rng = np.random.default_rng(3)
    edits = [EditResult(f"dev-{i:06d}", 2**(9 * i), i, {"b": rng.normal(size=4).astype(np.float32),
                                                         "a": rng.normal(size=(3, 4)).astype(np.float32)},
                        0.5 * i, 1000 + i) for i in range(5)]
    for dtype in ("FLOAT32", "FLOAT16", "INT8"):
        (block,) = codec.values_blocks(edits, dtype, 1 << 20)
        assert pb.EditValues.FromString(block).SerializeToString() == block, dtype
        pending = [EditResult("dev-000009", 3, 0, None, 0.0, wire_bytes=99, departed_us=7)]
        (frame,) = codec.reply_frames(4, RoundReply(pending, 8, value_blocks=[block, block]), 1 << 20)
        parsed = pb.CloudFrame.FromString(frame)
        assert parsed.SerializeToString() == frame and len(parsed.edits.values) == 2, dtype
    want = pb.EditValues(device_ids=[e.device_id for e in edits], seqs=[e.seq for e in edits],
                         prototype_ids=range(5), edit_norms=[e.edit_norm for e in edits],
                         compute_ns=[e.compute_ns for e in edits])
    for name in ("a", "b"):
        stacked = np.stack([e.params[name] for e in edits])
        want.tensors.add(name=name, dtype=pb.FLOAT32, shape=stacked.shape, data=stacked.tobytes())
    assert pb.EditValues.FromString(codec.values_blocks(edits, "FLOAT32", 1 << 20)[0]) == want


def test_stacked_values_split_over_frames_under_the_cap():
    edits = [EditResult(f"dev-{i:06d}", 1, i, {"w": np.full((32, 32), i, np.float32)}, 1.0) for i in range(40)]
    frames = codec.reply_frames(3, RoundReply([], 5, value_blocks=codec.values_blocks(edits, "FLOAT32", 20_000)),
                                max_bytes=20_000)
    assert len(frames) > 5 and all(len(f) <= 20_000 for f in frames)
    back = codec.reply_from_frames(frames)
    assert [v.prototype_id for v in back.values] == list(range(40)) and back.until_us == 5
    assert all(v.params["w"][0, 0] == v.prototype_id for v in back.values)


def test_pending_edits_split_over_frames_by_a_size_bound_that_holds_at_the_widest():
    """reply_frames sizes a pending edit by a bound, not by serializing it: the bound holds for the widest
    values (the largest seq and sizes, the -1 of a stage not reached, a long device id), and frames stay
    under the cap."""
    widest = EditResult("d" * 100, 2**64 - 1, 0, None, 0.0, wire_bytes=2**64 - 1, enqueued_us=-1,
                        compute_start_us=-1, compute_end_us=-1, departed_us=-1)
    (frame,) = map(pb.CloudFrame.FromString, codec.reply_frames(1, RoundReply([widest], 5), max_bytes=4096))
    assert frame.edits.ByteSize() - pb.EditBatch(frame_id=1, final=True, until_us=5).ByteSize() \
        <= codec._pending_bytes(widest)
    pending = [EditResult(f"dev-{i:06d}", i + 1, 0, None, 0.0, wire_bytes=33_000, departed_us=10**12 + i)
               for i in range(200)]
    frames = codec.reply_frames(2, RoundReply(pending, 7), max_bytes=2_000)
    assert len(frames) > 5 and all(len(f) <= 2_000 for f in frames)
    back = codec.reply_from_frames(frames)
    assert [(r.seq, r.wire_bytes, r.departed_us) for r in back.results] == \
        [(e.seq, 33_000, e.departed_us) for e in pending] and back.until_us == 7


def test_malformed_pending_edits_complete_edits_and_stacked_values_are_bad_frames():
    with pytest.raises(ProtocolError, match="pending edit carries no tensors"):
        codec.edit_from_pb(pb.EditPush(device_id="dev-000001", seq=1, pending=True, wire_bytes=0))
    with pytest.raises(ProtocolError, match="got 1 tensors"):
        codec.edit_from_pb(pb.EditPush(device_id="dev-000001", seq=1, pending=True, wire_bytes=9, tensors=[TENSOR]))
    with pytest.raises(ProtocolError, match=r"complete edit needs \['prototype_id', 'edit_norm'\]"):
        codec.edit_from_pb(pb.EditPush(device_id="dev-000001", seq=1, tensors=[TENSOR]))
    with pytest.raises(ProtocolError, match="not 2 each"):
        codec.values_from_pb(pb.EditValues(device_ids=["a", "b"], seqs=[1], prototype_ids=[0, 0], edit_norms=[1, 1],
                                           compute_ns=[0, 0]))
    (block,) = codec.values_blocks([EditResult("a", 1, 0, {"w": np.ones(3, np.float32)}, 1.0)] * 2, "INT8", 1 << 20)
    int8 = pb.EditValues.FromString(block)
    del int8.tensors[0].row_scales[1:]
    with pytest.raises(ProtocolError, match="one per row"):
        codec.values_from_pb(int8)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(device=st.text(max_size=40), seq=st.integers(0, 2**64 - 1), issued=st.integers(-2**63, 2**63 - 1),
       method=st.text(max_size=20), window=st.lists(st.integers(-2**63, 2**63 - 1), max_size=60))
def test_request_size_counted_field_by_field_is_protobufs(device, seq, issued, method, window):
    req = AdaptRequest(device, seq, issued, method, tuple(window))
    frame = pb.DeviceFrame(requests=pb.RequestBatch(requests=[codec.request_to_pb(req)]))
    assert codec.request_wire_bytes(req) == frame.ByteSize() + codec.GRPC_PREFIX_BYTES
