"""The scenario schema: one YAML file describes a whole run.

Validation happens here, at the boundary: unknown keys are errors (with a
"did you mean" hint), and every problem names the file, the key path and the
bad value. The rest of the core receives a typed, fully-defaulted ``Scenario``.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ScenarioError

METHODS = ("static", "persona-s")
ADAPTIVE_METHODS = ("persona-s",)   # methods that ask the cloud for edits
# Part of every training key: bump it when model or training code changes what a
# scenario trains, so cached bundles from older code are not reused.
TRAINING_CODE_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticSpec(_Strict):
    """The embedded generator: users with interest mixtures over item categories."""

    users: int = Field(2000, ge=10)
    items: int = Field(500, ge=20)
    categories: int = Field(8, ge=1)
    min_len: int = Field(8, ge=3)
    max_len: int = Field(40, ge=3)
    interests_per_user: int = Field(2, ge=1)
    habit: float = Field(0.5, ge=0.0, le=1.0)        # P(next item follows the previous one's habit chain)
    popularity_alpha: float = Field(1.1, gt=0.0)     # Zipf exponent of item popularity within a category

    @model_validator(mode="after")
    def _lengths(self) -> "SyntheticSpec":
        if self.max_len < self.min_len:
            raise ValueError(f"max_len ({self.max_len}) is below min_len ({self.min_len})")
        return self


class DatasetSpec(_Strict):
    name: str = "synthetic"           # "synthetic", or a dataset directory name such as "amazon-beauty"
    path: str | None = None           # explicit directory or file; relative to the scenario file
    synthetic: SyntheticSpec = SyntheticSpec()


class SplitSpec(_Strict):
    device_users: int = Field(200, ge=1)   # users held out of training and simulated as devices
    context: int = Field(3, ge=1)          # items a device has seen before its first prediction
    valid_fraction: float = Field(0.1, gt=0.0, lt=0.5)  # of training users, for model selection


class ModelSpec(_Strict):
    arch: Literal["sasrec"] = "sasrec"
    hidden: int = Field(32, ge=4)
    blocks: int = Field(1, ge=1)
    heads: int = Field(1, ge=1)
    max_len: int = Field(50, ge=2)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelSpec":
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        return self


class TrainSpec(_Strict):
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    sampled_negatives: int = Field(128, ge=1)
    editor_epochs: int = Field(6, ge=1)
    editor_lr: float = Field(1e-3, gt=0.0)
    patience: int = Field(3, ge=1)


class PersonaSpec(_Strict):
    window: int = Field(10, ge=1)          # W: the device's real-time window
    clip: float = Field(1.0, gt=0.0)       # T of Eq. 6
    editor_hidden: int = Field(64, ge=4)
    clkt: bool = True                      # cross-layer knowledge transfer (Eq. 13)


class PolicySpec(_Strict):
    every: int = Field(5, ge=1)            # ask for an edit every k interactions


class DevicesSpec(_Strict):
    count: int = Field(200, ge=1)
    interarrival_s: float = Field(30.0, gt=0.0)   # mean of the exponential gap between interactions
    policy: PolicySpec = PolicySpec()
    apply_ms: float = Field(2.0, ge=0.0)          # time to load an edit into the adaptive layers
    infer_ms: float = Field(5.0, ge=0.0)          # time of one on-device prediction


class NetworkSpec(_Strict):
    uplink_mbps: float = Field(10.0, gt=0.0)
    downlink_mbps: float = Field(50.0, gt=0.0)
    delay_ms: float = Field(20.0, gt=0.0)         # one-way propagation delay
    jitter_ms: float = Field(5.0, ge=0.0)         # uniform extra delay per transfer


class CloudSpec(_Strict):
    compute: Literal["model", "measured"] = "model"
    base_ms: float = Field(2.0, ge=0.0)           # `model` mode: fixed cost of one adaptation
    per_prototype_ms: float = Field(0.5, ge=0.0)  # `model` mode: extra cost per prototype evaluated
    max_frame_mb: float = Field(4.0, gt=0.0)      # gRPC message cap on both ends
    streams: int = Field(2, ge=1)                 # streams a device node opens


class EvalSpec(_Strict):
    negatives: int = Field(99, ge=1)


class Scenario(_Strict):
    name: str
    seed: int = 0
    dataset: DatasetSpec = DatasetSpec()
    split: SplitSpec = SplitSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    persona: PersonaSpec = PersonaSpec()
    methods: list[Literal["static", "persona-s"]] = ["static", "persona-s"]
    devices: DevicesSpec = DevicesSpec()
    network: NetworkSpec = NetworkSpec()
    cloud: CloudSpec = CloudSpec()
    eval: EvalSpec = EvalSpec()

    @model_validator(mode="after")
    def _cross_checks(self) -> "Scenario":
        if not self.methods:
            raise ValueError("methods must list at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods has duplicates: {self.methods}")
        if self.devices.count > self.split.device_users:
            raise ValueError(
                f"devices.count ({self.devices.count}) exceeds split.device_users "
                f"({self.split.device_users}): each device replays one held-out user"
            )
        return self

    def resolved(self) -> dict[str, Any]:
        """The scenario with every default filled in, as plain data."""
        return self.model_dump(mode="json")

    def training_key(self) -> str:
        """Content hash of everything that determines the trained model bundle."""
        relevant = {k: self.resolved()[k] for k in ("seed", "dataset", "split", "model", "train", "persona")}
        relevant["code_version"] = TRAINING_CODE_VERSION
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    def with_seed(self, seed: int) -> "Scenario":
        return self.model_copy(update={"seed": seed})


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed at the parent of ``loc`` (for "did you mean")."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        current = field.annotation
    return list(current.model_fields)


def _problems(exc: ValidationError) -> list[tuple[str, str, object]]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(Scenario, loc)
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            msg = "unknown key" + (f"; did you mean '{hint[0]}'?" if hint else f"; allowed: {', '.join(allowed)}")
            out.append((key, msg, ScenarioError.MISSING))
        elif err["type"] == "missing":
            out.append((key, "required key is missing", ScenarioError.MISSING))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append((key, msg, err.get("input", ScenarioError.MISSING)))
    return out


def parse_scenario(data: Any, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    """Validate plain data (as read from YAML) into a ``Scenario``.

    A relative ``dataset.path`` is made absolute against ``base_dir`` (the
    scenario file's folder), so a resolved scenario runs from anywhere.
    """
    if not isinstance(data, dict):
        raise ScenarioError(source, [("", "a scenario must be a mapping of keys", data)])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, _problems(exc)) from None
    path = scenario.dataset.path
    if path is not None and base_dir is not None and not Path(path).is_absolute():
        dataset = scenario.dataset.model_copy(update={"path": str((base_dir / path).resolve())})
        scenario = scenario.model_copy(update={"dataset": dataset})
    return scenario


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario file; ``overrides`` replace top-level keys (e.g. seed)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(str(path), [("", f"cannot read file: {exc.strerror}", ScenarioError.MISSING)]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ScenarioError(str(path), [("", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}",
                                         ScenarioError.MISSING)]) from None
    if isinstance(data, dict) and overrides:
        data = {**data, **overrides}
    return parse_scenario(data, str(path), path.parent)
