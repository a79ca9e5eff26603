"""The wire contract: the core's protocol messages (``messages``, plain
dataclasses), the one codec that converts them to and from protobuf
(``codec``), and the code generated from ``protos/`` (``proto``).

This is the only package that imports the generated ``*_pb2`` modules or
``google.protobuf``; the node shells reach the generated service stubs through
``pb`` and ``pb_grpc`` here. May import ``persona_sim.errors`` only.
"""
from .proto import persona_pb2 as pb
from .proto import persona_pb2_grpc as pb_grpc

__all__ = ["pb", "pb_grpc"]
