"""Generate (or check) the committed protobuf modules from ``protos/``.

Used by ``scripts/gen_protos.py`` and by the stale-code test. It needs
grpcio-tools, which bundles protoc and the well-known .proto files.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

PROTO_FILES = ("persona_sim/wire/proto/persona.proto",)
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _run_protoc(root: Path, out_dir: Path) -> None:
    from importlib.resources import files

    from grpc_tools import protoc

    include = str(files("grpc_tools") / "_proto")
    for proto in PROTO_FILES:
        args = [
            "protoc",
            f"-I{root / 'protos'}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(root / "protos" / proto),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on protos/{proto}")


def _outputs(proto: str) -> list[str]:
    stem = proto[: -len(".proto")]
    return [stem + suffix for suffix in GENERATED_SUFFIXES]


def generate(root: Path) -> list[Path]:
    """Write the generated modules into the source tree; return their paths."""
    _run_protoc(root, root)
    return [root / rel for proto in PROTO_FILES for rel in _outputs(proto)]


def stale_files(root: Path) -> list[str]:
    """Relative paths of generated modules that differ from a fresh generation."""
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        _run_protoc(root, Path(tmp))
        for proto in PROTO_FILES:
            for rel in _outputs(proto):
                fresh = (Path(tmp) / rel).read_bytes()
                committed = root / rel
                if not committed.exists() or committed.read_bytes() != fresh:
                    stale.append(rel)
    return stale
