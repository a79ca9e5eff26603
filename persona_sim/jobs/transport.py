"""The in-process transport: the cloud's lockstep called directly, messages still encoded.

Reports and replies go through the same protobuf encoding as over gRPC, so the
charged byte sizes and the decoded numbers are the ones the grpc transport
sees, and both give identical results. Shards of one in-process run share one
``Lockstep`` and run as concurrent tasks.
"""
from __future__ import annotations

import time

from ..runtime import release_free_memory
from ..sim.lockstep import Lockstep
from ..wire.codec import reply_frames, reply_from_frames, report_frames, report_from_pb
from ..wire.messages import Hello, RoundReply, RoundReport

TRIM_EVERY_ROUNDS = 16   # a run in process hands its free heap pages back this often (persona_sim.runtime)


class InprocTransport:
    def __init__(self, lockstep: Lockstep, hello: Hello):
        lockstep.engine.check_hello(hello)
        self.lockstep, self.hello = lockstep, hello
        self.max_frame_bytes = lockstep.engine.max_frame_bytes
        self.rounds = 0

    async def round(self, report: RoundReport) -> RoundReply:
        t0 = time.perf_counter_ns()
        frames = report_frames(0, report, self.max_frame_bytes)
        t1 = time.perf_counter_ns()
        decoded, errors = report_from_pb([f.requests for f in frames])
        reply = await self.lockstep.submit(self.hello, decoded)
        reply.results = errors + reply.results
        frames = reply_frames(0, reply, self.max_frame_bytes)
        del reply              # its values' bytes go before their decoded copies come (a round may carry thousands)
        t2 = time.perf_counter_ns()
        out = reply_from_frames(frames)
        out.codec_ns = (t1 - t0) + (time.perf_counter_ns() - t2)   # this node's side, as over gRPC
        self.rounds += 1
        if self.rounds % TRIM_EVERY_ROUNDS == 0:
            release_free_memory()
        return out
