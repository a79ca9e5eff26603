"""Regenerate the committed protobuf code from protos/.

    python scripts/gen_protos.py            # rewrite persona_sim/wire/proto/*_pb2*.py
    python scripts/gen_protos.py --check    # exit 1 when the committed code is stale

The generator is grpcio-tools' bundled protoc, so no system protoc is needed.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from persona_sim.wire.proto.generate import generate, stale_files  # noqa: E402


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_files(ROOT)
        for name in stale:
            print(f"stale: {name} (run python scripts/gen_protos.py)")
        return 1 if stale else 0
    for path in generate(ROOT):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
