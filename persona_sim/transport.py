"""The in-process transport: cloud logic called directly, messages still encoded.

Requests and edits go through the same protobuf encoding as over gRPC, so the
charged byte sizes and the decoded numbers are the ones the grpc transport
sees, and both give identical results.
"""
from __future__ import annotations

from .cloud import CloudEngine
from .codec import edit_from_pb, edit_to_pb, request_from_pb, request_to_pb
from .messages import AdaptRequest, EditResult, Hello, RequestError


class InprocTransport:
    def __init__(self, engine: CloudEngine, hello: Hello):
        engine.check_hello(hello)
        self.engine, self.hello = engine, hello

    async def exchange(self, requests: list[AdaptRequest]) -> list[EditResult | RequestError]:
        decoded = [request_from_pb(request_to_pb(r)) for r in requests]
        edits, errors = self.engine.adapt(decoded, self.hello)
        return [edit_from_pb(edit_to_pb(e)) for e in edits] + errors
