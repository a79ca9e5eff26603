"""The trained model bundle: what the cloud serves and every device runs.

One file (``bundle.pt``) holds the shared layers Θb, the global prototype's
Θc, the global Parameter Editor, Persona (m)'s groups and DUET's generator
when the scenario uses them, the training config and validation metrics. Its signature is the hash
of its bytes; bundles are cached by the scenario's training key.

Training runs in stages (prototype -> editor -> generator -> groups), each cached under a
key of only the settings it depends on. A sweep over the clip threshold T
retrains editors but reuses the prototype; a sweep over N_M reuses both.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import Dataset
from ..data.split import protocol_id, training_data
from ..errors import BundleError
from ..methods import needs_generator, needs_groups, needs_joint, needs_joint_groups, needs_tuned_groups
from ..model.adaptation import Generator, Groups, Joint, PersonaModels
from ..model.editor import EditorBank
from ..model.networks import PrototypeModel, SharedLayers, adaptive_shapes
from ..scenario.schema import ModelSpec, PersonaSpec, Scenario
from .evaluation import VALID_PURPOSE, build_cases
from .groups import train_groups
from .joint import train_joint
from .training import (
    SELECT_ON,
    UNCLIPPED,
    Progress,
    editor_samples,
    stacked,
    train_editor,
    train_generator,
    train_prototype,
)

CACHE_ENV = "PERSONA_SIM_CACHE"
FORMAT = 2
# Part of every training key: bump it when model or training code changes what a
# scenario trains, so cached bundles from older code are not reused.
TRAINING_CODE_VERSION = 2


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "persona-sim")


def training_key(scenario: Scenario, protocol: str = "holdout") -> str:
    """Content hash of everything that determines the trained model bundle.

    ``protocol`` is the data split the bundle is trained on: ``holdout``
    (simulated devices are users never trained on), ``leave-one-out`` (every
    user's last two items held out, DESIGN §3) or ``realtime`` (each user's
    later interactions held out, ``eval.realtime``).
    """
    resolved = scenario.resolved()
    relevant = {k: resolved[k] for k in ("seed", "dataset", "split", "model", "train", "persona")}
    relevant.update(code_version=TRAINING_CODE_VERSION, protocol=protocol_id(scenario, protocol), groups=needs_groups(scenario.methods))
    if needs_generator(scenario.methods):      # only then, so the keys of bundles without one stay as they were
        relevant["generator"] = True
    if needs_joint(scenario.methods):
        relevant["joint"] = True
    if needs_joint_groups(scenario.methods):
        relevant["joint_groups"] = True
    if needs_tuned_groups(scenario.methods):   # group fine-tuning's own groups (a bundle layout change)
        relevant["tuned_groups"] = True
    relevant["stage_versions"] = _STAGE_VERSIONS   # a bundle holds every stage: retrained stages give a new one
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def signature_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class Bundle:
    """A loaded bundle, ready for inference (eval mode, no gradients)."""

    signature: str
    num_items: int
    model_spec: ModelSpec
    persona_spec: PersonaSpec
    models: PersonaModels
    meta: dict

    @property
    def shared(self) -> SharedLayers:
        return self.models.shared

    @property
    def item_emb(self) -> torch.Tensor:
        return self.models.item_emb


# ---- stage keys -------------------------------------------------------------------------

_STAGE_SETTINGS = {   # stage -> settings (section.key) it depends on, beyond the previous stage's
    "prototype": ["seed", "dataset", "split", "model", "train.epochs", "train.batch_size", "train.lr",
                  "train.sampled_negatives", "train.patience"],
    "editor": ["persona.window", "persona.clip", "persona.editor_hidden", "persona.clkt", "persona.rank",
               "train.editor_epochs", "train.editor_lr", "eval.negatives"],
    "generator": [],      # DUET: the editor's settings (it shares the editor's samples and schedule)
    "joint": [],          # the authors' joint training: the prototype's and the editor's settings
    "groups": ["persona.prototypes", "persona.group_prototypes", "persona.assignment", "train.group_epochs",
               "train.group_lr", "train.kmeans_samples"],
    "joint-groups": [],   # the groups' settings, built on the joint stage's models
}
# A stage whose training code changed since caches were filled: stage -> its version (1 when absent), so only
# that stage and those after it retrain. groups 2: its fine-tunings' starting points compete on validation.
_STAGE_VERSIONS = {"groups": 2}
# Settings added after caches were filled enter a stage's key only when set away from their default, so
# adding one never invalidates the stages already trained: stage -> {setting: default}.
_LATER_SETTINGS = {"prototype": {"train.loss": "sampled-ce"}, "editor": {"persona.encoder": "mean-last",
                                                                       "train.editor_shift": 0.0},
                   "groups": {"persona.groups": "paper"}}
STAGES = list(_STAGE_SETTINGS)


def _setting(resolved: dict, setting: str):
    section, _, key = setting.partition(".")
    return resolved[section][key] if key else resolved[section]


def stage_key(scenario: Scenario, dataset: Dataset, protocol: str, stage: str) -> str:
    """Content hash of the data and the settings that determine ``stage`` and the stages before it."""
    resolved = scenario.resolved()
    relevant: dict = {"protocol": protocol_id(scenario, protocol), "code_version": TRAINING_CODE_VERSION, "data": dataset.fingerprint()}
    for name in STAGES[: STAGES.index(stage) + 1]:
        for setting in _STAGE_SETTINGS[name]:
            relevant[setting] = _setting(resolved, setting)
        for setting, default in _LATER_SETTINGS.get(name, {}).items():
            if _setting(resolved, setting) != default:
                relevant[setting] = _setting(resolved, setting)
        if name in _STAGE_VERSIONS:
            relevant[f"{name}.code_version"] = _STAGE_VERSIONS[name]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _save(obj: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _load(data: bytes, origin: str) -> dict:
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise BundleError(f"{origin}: not a readable model bundle ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else "?"
        raise BundleError(f"{origin}: unsupported bundle format {found} (this version reads {FORMAT}); retrain it")
    return payload


# ---- loading ----------------------------------------------------------------------------

def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_bundle_bytes(data: bytes, origin: str = "<bytes>") -> Bundle:
    payload = _load(data, origin)
    model_spec = ModelSpec.model_validate(payload["model_spec"])
    persona_spec = PersonaSpec.model_validate(payload["persona_spec"])
    shared = SharedLayers(payload["num_items"], model_spec, torch.Generator())
    shared.load_state_dict(payload["shared"])
    shapes = adaptive_shapes(model_spec)
    editor = EditorBank(model_spec.hidden, shapes, persona_spec, 1)
    editor.load_state_dict(payload["editor"])
    models = PersonaModels(_frozen(shared), payload["head"], _frozen(editor), _groups(payload["groups"], model_spec,
                                                                                      persona_spec),
                           persona_spec.assignment)
    models.tuned_groups = _groups(payload.get("tuned_groups"), model_spec, persona_spec)
    if payload.get("generator") is not None:
        models.generator = _generator(payload["generator"], model_spec, persona_spec)
    if payload.get("joint") is not None:
        models.joint = _joint(payload["joint"], payload["num_items"], model_spec, persona_spec)
    meta = dict(payload["meta"], training_key=payload["training_key"], protocol=payload["protocol"],
                dataset_fingerprint=payload["dataset_fingerprint"])
    return Bundle(signature_of(data), payload["num_items"], model_spec, persona_spec, models, meta)


def _groups(stage: dict | None, model_spec: ModelSpec, persona_spec: PersonaSpec) -> Groups | None:
    if stage is None:
        return None
    bank = EditorBank(model_spec.hidden, adaptive_shapes(model_spec), persona_spec, len(stage["centres"]))
    bank.load_state_dict(stage["editor"])
    return Groups(stage["heads"], _frozen(bank), stage["centres"], stage.get("space", "edits"))


def _groups_payload(groups: Groups | None) -> dict | None:
    if groups is None:
        return None
    return {"heads": groups.heads, "editor": groups.editor.state_dict(), "centres": groups.centres,
            "space": groups.space}


def _generator(stage: dict, model_spec: ModelSpec, persona_spec: PersonaSpec) -> Generator:
    bank = EditorBank(model_spec.hidden, adaptive_shapes(model_spec), persona_spec.model_copy(update={"clip": UNCLIPPED}), 1)
    bank.load_state_dict(stage["editor"])
    return Generator(stage["head"], _frozen(bank))


def _joint(stage: dict, num_items: int, model_spec: ModelSpec, persona_spec: PersonaSpec) -> Joint:
    shared = SharedLayers(num_items, model_spec, torch.Generator())
    shared.load_state_dict(stage["shared"])
    editor = EditorBank(model_spec.hidden, adaptive_shapes(model_spec), persona_spec, 1)
    editor.load_state_dict(stage["editor"])
    return Joint(_frozen(shared), _frozen(editor), _groups(stage.get("groups"), model_spec, persona_spec),
                 stage.get("assignment", "nearest-centre"))


def load_bundle(path: Path) -> Bundle:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read model bundle ({exc.strerror})") from None
    return load_bundle_bytes(data, str(path))


def bundle_path(scenario: Scenario, dataset: Dataset, protocol: str = "holdout") -> Path:
    """Cached by training key and data: a synthetic dataset changes with the seed it is generated with."""
    return cache_dir() / "bundles" / f"{training_key(scenario, protocol)}-{dataset.fingerprint()}" / "bundle.pt"


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
    _deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        _deterministic_algorithms(deterministic)


def _deterministic_algorithms(mode: bool) -> None:
    """``torch.use_deterministic_algorithms`` less its import of torch._inductor (~2 s per process, for a
    compiler setting this project never uses: nothing here is compiled)."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(mode)
    else:
        setter(mode, warn_only=False)


class _Stages:
    """Trains or loads each stage of one scenario's bundle, in order."""

    def __init__(self, scenario: Scenario, dataset: Dataset, protocol: str, progress: Progress):
        self.scenario, self.dataset, self.protocol, self.progress = scenario, dataset, protocol, progress
        self.data = training_data(dataset, scenario, protocol)
        self.valid = build_cases(dataset, self.data.valid, scenario, VALID_PURPOSE)
        self._samples = None
        self.trained: list[str] = []

    def cached(self, stage: str, train, scenario: Scenario | None = None) -> dict:
        key = stage_key(scenario or self.scenario, self.dataset, self.protocol, stage)
        path = cache_dir() / "stages" / f"{stage}-{key}.pt"
        if path.exists():
            return _load(path.read_bytes(), str(path))
        t0 = time.perf_counter()
        payload = dict(train(), format=FORMAT)
        payload["meta"]["train_seconds"] = round(time.perf_counter() - t0, 2)
        write_atomic(path, _save(payload))
        self.trained.append(stage)
        return payload

    def samples(self, shared: SharedLayers):
        """The editor's training samples over ``shared`` (the prototype's Θb, or the joint one): the last kept."""
        if self._samples is None or self._samples[0] is not shared:
            self._samples = shared, editor_samples(shared, self.data.sequences, self.scenario)
        return self._samples[1]

    def prototype(self) -> dict:
        def train() -> dict:
            model, meta = train_prototype(self.data.sequences, self.dataset.num_items, self.valid, self.scenario,
                                          self.progress)
            return {"shared": model.shared.state_dict(), "head": stacked(model.head_params()), "meta": meta}
        return self.cached("prototype", train)

    def editor(self, model: PrototypeModel, shared: SharedLayers, head: dict) -> tuple[dict, Scenario]:
        """The global editor's stage, and the scenario with the ``train.editor_shift`` it was trained with:
        with a list of values, one editor each, and the one best on validation is kept."""
        best = None
        for shift in self.scenario.train.editor_shifts:
            sc = self.scenario.model_copy(update={"train": self.scenario.train.model_copy(update={"editor_shift": shift})})

            def train_global_editor() -> dict:
                model.head.load_state_dict({k.replace(".", "_"): v[0] for k, v in head.items()})
                editor, meta = train_editor(model, self.samples(shared), self.valid, sc, self.progress)
                return {"editor": editor.state_dict(), "meta": meta}
            stage = self.cached("editor", train_global_editor, sc)
            if best is None or stage["meta"]["best_" + SELECT_ON] > best[0]["meta"]["best_" + SELECT_ON]:
                best = stage, sc
        stage, sc = best
        if len(self.scenario.train.editor_shifts) > 1:
            stage = dict(stage, meta=dict(stage["meta"], editor_shift=sc.train.editor_shift))
        return stage, sc

    def groups(self, models: PersonaModels, scenario: Scenario, stage_name: str = "groups",
               want_tuned: bool = False) -> tuple[dict, Scenario, dict]:
        """Persona (m)'s groups stage (built on ``models``: the bundle's, or the joint ones under
        ``joint-groups``), the scenario with the ``persona.groups`` variant (and its assignment) it was trained
        with, and, when that is not the paper's and ``want_tuned`` (a method serves fine-tuned group PMs: group
        fine-tuning), the paper's groups stage (else None). With a list of variants, one stage each, and the
        one whose group editors are best on validation is kept (the first on a tie)."""
        def stage_of(kind: str) -> tuple[dict, Scenario]:
            sc = scenario.model_copy(update={"persona": scenario.persona.with_groups(kind)})

            def train() -> dict:
                groups, gmeta = train_groups(models, self.samples(models.shared), self.valid, sc, self.progress)
                return dict(_groups_payload(groups), meta=gmeta)
            return self.cached(stage_name, train, sc), sc
        stages = {kind: stage_of(kind) for kind in scenario.persona.group_kinds}
        kind = max(stages, key=lambda k: (stages[k][0]["meta"]["group_editors"]["best_" + SELECT_ON],
                                          -scenario.persona.group_kinds.index(k)))
        stage, sc = stages[kind]
        if len(stages) > 1:
            stage = dict(stage, meta=dict(stage["meta"], groups=kind))
        tuned = None
        if kind != "paper" and want_tuned:
            tuned = stages["paper"][0] if "paper" in stages else stage_of("paper")[0]
        return stage, sc, tuned

    def build(self) -> tuple[PersonaModels, dict, Scenario]:
        proto = self.prototype()
        model = PrototypeModel(self.dataset.num_items, self.scenario.model, self.scenario.seed)
        model.shared.load_state_dict(proto["shared"])
        shared = _frozen(model.shared)
        head = proto["head"]
        stage, sc = self.editor(model, shared, head)      # sc: the scenario with the chosen editor_shift
        editor = EditorBank(sc.model.hidden, adaptive_shapes(sc.model), sc.persona, 1)
        editor.load_state_dict(stage["editor"])
        models = PersonaModels(shared, head, _frozen(editor), None, sc.persona.assignment)
        meta = {"prototype": proto["meta"], "editor": stage["meta"]}
        if needs_generator(sc.methods):
            def train_duet() -> dict:
                model.head.load_state_dict({k.replace(".", "_"): v[0] for k, v in head.items()})
                generator, gmeta = train_generator(model, self.samples(shared), self.valid, sc, self.progress)
                return {"head": generator.head, "editor": generator.editor.state_dict(), "meta": gmeta}
            d = self.cached("generator", train_duet, sc)
            models.generator = _generator(d, sc.model, sc.persona)
            meta["generator"] = d["meta"]
        chosen = sc                                       # and with the groups variant kept, when trained
        if needs_groups(sc.methods):
            g, chosen, tuned = self.groups(models, sc, want_tuned=needs_tuned_groups(sc.methods))
            models.groups, models.assignment = _groups(g, sc.model, sc.persona), chosen.persona.assignment
            models.tuned_groups = _groups(tuned, sc.model, sc.persona)
            meta["groups"] = g["meta"]
        if needs_joint(sc.methods):
            def train_joined() -> dict:
                j_shared, j_editor, jmeta = train_joint(self.data.sequences, self.dataset.num_items, head,
                                                        self.valid, sc, self.progress)
                return {"shared": j_shared.state_dict(), "editor": j_editor.state_dict(), "meta": jmeta}
            j = self.cached("joint", train_joined, sc)
            models.joint = _joint(j, self.dataset.num_items, sc.model, sc.persona)
            meta["joint"] = j["meta"]
            if needs_joint_groups(sc.methods):
                jg, jsc, _ = self.groups(models.jointly_trained(), sc, "joint-groups")
                models.joint.groups = _groups(jg, sc.model, sc.persona)
                models.joint.assignment = jsc.persona.assignment
                meta["joint_groups"] = jg["meta"]
        return models, meta, chosen


def ensure_bundle(scenario: Scenario, dataset: Dataset, progress: Progress,
                  protocol: str = "holdout") -> tuple[Path, bool]:
    """Return the cached bundle for this scenario, training what is missing first; (path, trained_now)."""
    path = bundle_path(scenario, dataset, protocol)
    if path.exists():
        return path, False
    with reproducible_torch():
        stages = _Stages(scenario, dataset, protocol, progress)
        models, meta, chosen = stages.build()     # chosen: the scenario with the variants validation kept
    payload = {
        "format": FORMAT, "training_key": training_key(scenario, protocol), "protocol": protocol,
        "num_items": dataset.num_items, "model_spec": scenario.model.model_dump(mode="json"),
        "persona_spec": chosen.persona.model_dump(mode="json"), "dataset_fingerprint": dataset.fingerprint(),
        "shared": models.shared.state_dict(), "head": models.head, "editor": models.editor.state_dict(),
        "groups": _groups_payload(models.groups), "tuned_groups": _groups_payload(models.tuned_groups),
        "generator": None if models.generator is None else {"head": models.generator.head,
                                                            "editor": models.generator.editor.state_dict()},
        "joint": None if models.joint is None else {"shared": models.joint.shared.state_dict(),
                                                    "editor": models.joint.editor.state_dict(),
                                                    "groups": _groups_payload(models.joint.groups),
                                                    "assignment": models.joint.assignment},
        "meta": dict(meta, train_cases=len(stages.data.sequences), valid_cases=len(stages.data.valid)),
    }
    write_atomic(path, _save(payload))
    return path, bool(stages.trained)


def item_matrix(bundle: Bundle) -> np.ndarray:
    """Item embeddings as a float32 array (num_items + 1, D) for fast on-device scoring."""
    return bundle.item_emb.detach().numpy().astype(np.float32, copy=True)
