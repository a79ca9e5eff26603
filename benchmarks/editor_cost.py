"""The cloud's cost per adaptation: Persona's editors on one window, per prototype count and batch size.

    python benchmarks/editor_cost.py [--hidden 64] [--editor-hidden 64] [--repeats 5] [--out benchmarks/results]

Times the method's ``adapt`` (what the cloud node runs per request):
the window's item embeddings, every group editor in one batched call, the
edit norms, the argmin and the edited layers. Persona (s) is one prototype;
Persona (m) evaluates N_M. Weights are random: the cost does not depend on
their values. One torch thread, as the cloud node runs. Each figure is the
median of ``--repeats`` rounds, each round the mean of many calls.
Writes <out>/editor-cost-<host>.json.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
from results_file import write_result  # benchmarks/ is on sys.path when a script here runs

from persona_sim.methods import METHODS
from persona_sim.model.adaptation import Groups, PersonaModels
from persona_sim.model.editor import EditorBank
from persona_sim.model.networks import SharedLayers, adaptive_shapes
from persona_sim.scenario.schema import ModelSpec, PersonaSpec

ITEMS = 12101   # Amazon Beauty's catalogue
PAPER_MS = 10.78


def models(hidden: int, editor_hidden: int, prototypes: int) -> PersonaModels:
    spec = ModelSpec(hidden=hidden)
    persona = PersonaSpec(editor_hidden=editor_hidden)
    shapes = adaptive_shapes(spec)
    shared = SharedLayers(ITEMS, spec, torch.Generator().manual_seed(0)).eval()
    head = {f"{layer}.{part}": torch.randn(prototypes, *((n_in, n_out) if part == "weight" else (n_out,)))
            for layer, (n_in, n_out) in shapes.items() for part in ("weight", "bias")}
    features = sum(n_in * n_out + n_out for n_in, n_out in shapes.values())
    groups = Groups(head, EditorBank(hidden, shapes, persona, prototypes).eval(), torch.randn(prototypes, features))
    return PersonaModels(shared, {k: v[:1] for k, v in head.items()}, EditorBank(hidden, shapes, persona, 1).eval(),
                         groups)


def per_call_ms(m: PersonaModels, method: str, windows: torch.Tensor, calls: int) -> float:
    adapt = METHODS[method].adapt
    adapt(m, windows)                               # warm-up
    t0 = time.perf_counter()
    for _ in range(calls):
        adapt(m, windows)
    return 1000 * (time.perf_counter() - t0) / calls


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--editor-hidden", type=int, default=64)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for prototypes in (1, 2, 3, 5, 10):
        m = models(args.hidden, args.editor_hidden, prototypes)
        method = "persona-s" if prototypes == 1 else "persona-m"
        for batch in (1, 32, 256):
            windows = torch.randint(1, ITEMS + 1, (batch, args.window), generator=gen)
            calls = max(3, 400 // batch)
            rounds = [per_call_ms(m, method, windows, calls) for _ in range(args.repeats)]
            ms = statistics.median(rounds)
            rows.append({"prototypes": prototypes, "method": method, "batch": batch,
                         "ms_per_call": round(ms, 4), "ms_per_adaptation": round(ms / batch, 4),
                         "rounds_ms": [round(r, 4) for r in rounds]})
            print(f"N_M={prototypes:>2} batch={batch:>3}: {ms:8.3f} ms per call, {ms / batch:7.4f} ms per adaptation")
    result = {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "torch_threads": 1,
              "hidden": args.hidden, "editor_hidden": args.editor_hidden, "window": args.window,
              "paper_ms": PAPER_MS, "rows": rows, "date": time.strftime("%Y-%m-%d")}
    path = write_result(args.out, "editor-cost", result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
