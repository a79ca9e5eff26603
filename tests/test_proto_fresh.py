"""The committed generated protobuf code must match protos/."""
from __future__ import annotations

import tempfile
from importlib.metadata import version
from pathlib import Path

from google.protobuf import descriptor_pb2

from persona_sim.wire.proto import persona_pb2, persona_pb2_grpc
from persona_sim.wire.proto.generate import PROTO_FILES, stale_files

ROOT = Path(__file__).resolve().parent.parent


def _fresh_descriptor() -> descriptor_pb2.FileDescriptorProto:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        assert protoc.main(["protoc", f"-I{ROOT / 'protos'}", f"--descriptor_set_out={out}",
                            str(ROOT / "protos" / PROTO_FILES[0])]) == 0
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    fresh = fds.file[0]
    # The Python generator drops json_name from the descriptor it embeds; compare like with like.
    for message in fresh.message_type:
        for field in message.field:
            field.ClearField("json_name")
    return fresh


def test_committed_descriptor_matches_proto_source():
    committed = descriptor_pb2.FileDescriptorProto.FromString(persona_pb2.DESCRIPTOR.serialized_pb)
    assert committed == _fresh_descriptor(), "protos/ changed: run python scripts/gen_protos.py"


def test_committed_files_are_byte_identical_to_a_fresh_generation():
    # The generator stamps its version into the files; compare bytes only with that same version.
    if version("grpcio-tools") != persona_pb2_grpc.GRPC_GENERATED_VERSION:
        import pytest

        pytest.skip(f"grpcio-tools {version('grpcio-tools')} installed, files made by "
                    f"{persona_pb2_grpc.GRPC_GENERATED_VERSION}; the descriptor test still guards the contract")
    assert stale_files(ROOT) == []
