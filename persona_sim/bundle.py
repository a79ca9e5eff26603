"""The trained model bundle: what the cloud serves and every device runs.

One file (``bundle.pt``) holds the shared layers, the prototype head, the
Parameter Editor, the training config and validation metrics. Its signature is
the hash of its bytes; bundles are cached by the scenario's training key, so a
second run of the same scenario reuses the trained models.
"""
from __future__ import annotations

import hashlib
import io
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ModelSpec, PersonaSpec, Scenario
from .dataset import Dataset
from .editor import ParameterEditor
from .errors import BundleError
from .models import PrototypeModel, SASRecEncoder
from .split import Split
from .training import Progress, train_editor, train_prototype

CACHE_ENV = "PERSONA_SIM_CACHE"
FORMAT = 1


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "persona-sim")


def signature_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class Bundle:
    """A loaded bundle, ready for inference (eval mode, no gradients)."""

    signature: str
    num_items: int
    model_spec: ModelSpec
    persona_spec: PersonaSpec
    encoder: SASRecEncoder
    prototype_head: dict[str, torch.Tensor]
    editor: ParameterEditor
    meta: dict

    @property
    def item_emb(self) -> torch.Tensor:
        return self.encoder.item_emb.weight


def bundle_bytes(model: PrototypeModel, editor: ParameterEditor, scenario: Scenario, dataset: Dataset,
                 meta: dict) -> bytes:
    payload = {
        "format": FORMAT,
        "training_key": scenario.training_key(),
        "num_items": dataset.num_items,
        "model_spec": scenario.model.model_dump(mode="json"),
        "persona_spec": scenario.persona.model_dump(mode="json"),
        "dataset_fingerprint": dataset.fingerprint(),
        "encoder": model.encoder.state_dict(),
        "prototype_head": {k: v.detach().clone() for k, v in model.head_params().items()},
        "editor": editor.state_dict(),
        "meta": meta,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def load_bundle_bytes(data: bytes, origin: str = "<bytes>") -> Bundle:
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise BundleError(f"{origin}: not a readable model bundle ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BundleError(f"{origin}: unsupported bundle format {payload.get('format') if isinstance(payload, dict) else '?'}")
    model_spec = ModelSpec.model_validate(payload["model_spec"])
    persona_spec = PersonaSpec.model_validate(payload["persona_spec"])
    encoder = SASRecEncoder(payload["num_items"], model_spec)
    encoder.load_state_dict(payload["encoder"])
    encoder.eval()
    editor = ParameterEditor(model_spec.hidden, persona_spec)
    editor.load_state_dict(payload["editor"])
    editor.eval()
    for module in (encoder, editor):
        for p in module.parameters():
            p.requires_grad_(False)
    meta = dict(payload["meta"], training_key=payload["training_key"],
                dataset_fingerprint=payload["dataset_fingerprint"])
    return Bundle(signature_of(data), payload["num_items"], model_spec, persona_spec, encoder,
                  payload["prototype_head"], editor, meta)


def load_bundle(path: Path) -> Bundle:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read model bundle ({exc.strerror})") from None
    return load_bundle_bytes(data, str(path))


def bundle_path(scenario: Scenario) -> Path:
    return cache_dir() / "bundles" / scenario.training_key() / "bundle.pt"


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@contextmanager
def reproducible_torch():
    """One intra-op thread and deterministic kernels while training.

    With two threads, embedding gradients accumulate in a run-dependent order,
    and the thread count changes reduction order: either makes the trained
    weights (and so every simulated result) differ between runs and machines.
    Measured on the development machine, one thread trains as fast as two.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def ensure_bundle(scenario: Scenario, dataset: Dataset, split: Split, progress: Progress) -> tuple[Path, bool]:
    """Return the cached bundle for this scenario, training it first if needed; (path, trained_now)."""
    path = bundle_path(scenario)
    if path.exists():
        return path, False
    t0 = time.perf_counter()
    with reproducible_torch():
        model, proto_meta = train_prototype(dataset, split, scenario, progress)
        editor, editor_meta = train_editor(model, dataset, split, scenario, progress)
    meta = {"prototype": proto_meta, "editor": editor_meta, "train_seconds": round(time.perf_counter() - t0, 2),
            "train_users": int(len(split.train_users)), "valid_users": int(len(split.valid_users))}
    write_atomic(path, bundle_bytes(model, editor, scenario, dataset, meta))
    return path, True


def item_matrix(bundle: Bundle) -> np.ndarray:
    """Item embeddings as a float32 array (num_items + 1, D) for fast on-device scoring."""
    return bundle.item_emb.detach().numpy().astype(np.float32, copy=True)
