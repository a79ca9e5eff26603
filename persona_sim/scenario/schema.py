"""The scenario schema: one YAML file describes a whole run.

Validation happens here, at the boundary: unknown keys are errors (with a
"did you mean" hint), and every problem names the file, the key path and the
bad value. The rest of the core receives a typed, fully-defaulted ``Scenario``.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ScenarioError

# The names a scenario may list; what each method does lives in persona_sim.methods (a test keeps the two equal).
METHODS = ("static", "persona-s", "persona-m", "group-finetune", "finetune", "tta", "dccl", "duet", "cloud-finetune",
           "persona-joint", "persona-joint-m", "joint-unedited")
Method = Literal[METHODS]


RUN_IRRELEVANT = ("eval",)                      # sections no run reads
MACHINE_LOCAL = ("path", "data_dir")           # dataset keys that say where a machine keeps the data
MISSING = "<absent>"


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


DATA_FORMATS = ("auto", "sequences", "amazon-csv", "amazon-json", "movielens", "recbole")


class DatasetSpec(_Strict):
    """Where the interactions come from. Paths are relative to the scenario file."""

    name: str = "synthetic"           # "synthetic", a catalogue name ("amazon-beauty", "movielens-1m", …) or any name
    path: str | None = None           # explicit directory or interaction file
    data_dir: str | None = None       # where names are looked up (else $PERSONA_SIM_DATA)
    format: Literal[DATA_FORMATS] = "auto"   # detected from the file name or first line when "auto"
    kcore: int | None = Field(None, ge=0)    # keep users and items with >= k interactions (None: catalogue default)
    min_rating: float | None = None          # drop interactions rated below this
    attributes: str | None = None            # item attribute file (categories); found beside the data when unset
    synthetic: SyntheticSpec = SyntheticSpec()


class SplitSpec(_Strict):
    device_users: int = Field(200, ge=1)   # users held out of training and simulated as devices
    context: int = Field(3, ge=1)          # items a device has seen before its first prediction
    valid_fraction: float = Field(0.1, gt=0.0, lt=0.5)  # of training users, for model selection


class ModelSpec(_Strict):
    """The on-device model: a sequence encoder and an MLP prediction head.

    Shared layers Θb are the encoder plus the head's first ``head_layers -
    adaptive_layers`` layers; adaptive layers Θc are the head's last
    ``adaptive_layers`` layers (the ones the Parameter Editor edits).
    """

    arch: Literal["sasrec", "gru4rec"] = "sasrec"
    hidden: int = Field(32, ge=4)
    blocks: int = Field(1, ge=1)               # SASRec transformer blocks, or GRU4Rec GRU layers
    heads: int = Field(1, ge=1)                # SASRec attention heads
    max_len: int = Field(50, ge=2)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    head_layers: int = Field(2, ge=1)          # layers of the prediction head (hidden -> hidden each)
    adaptive_layers: int = Field(2, ge=1)      # the head's last layers that are edited per device

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        if self.arch == "sasrec" and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.adaptive_layers > self.head_layers:
            raise ValueError(f"adaptive_layers ({self.adaptive_layers}) exceeds head_layers ({self.head_layers})")
        return self


class TrainSpec(_Strict):
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    loss: Literal["sampled-ce", "bce"] = "sampled-ce"   # bce: the authors' labelled rows (see train.training)
    sampled_negatives: int = Field(128, ge=1)     # k negatives per step (shared by the batch for sampled-ce)
    editor_epochs: int = Field(6, ge=1)
    editor_lr: float = Field(1e-3, gt=0.0)
    # the share of editor samples given another sample's history (train.training.editor_epoch); a list: train
    # an editor for each value and keep the one best on validation (0: the paper's training alone)
    editor_shift: float | list[float] = [0.0, 1.0]
    group_epochs: int = Field(3, ge=1)            # Persona (m): fine-tuning epochs of group PMs, then group PEs
    group_lr: float = Field(5e-4, gt=0.0)
    kmeans_samples: int = Field(8192, ge=10)      # edits the k-means of Eq. 9 is fitted on (all are assigned)
    patience: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _shift_choices(self) -> "TrainSpec":
        shifts = self.editor_shifts
        if not shifts or len(set(shifts)) != len(shifts) or not all(0.0 <= x <= 1.0 for x in shifts):
            raise ValueError(f"editor_shift must be a share in [0, 1] or a list of distinct ones, "
                             f"got {self.editor_shift}")
        return self

    @property
    def editor_shifts(self) -> list[float]:
        """The editor_shift values to train an editor with (one, or the list to choose from on validation)."""
        return list(self.editor_shift) if isinstance(self.editor_shift, list) else [self.editor_shift]


GroupsKind = Literal["paper", "authors"]


class PersonaSpec(_Strict):
    window: int = Field(10, ge=1)          # W: the device's real-time window
    encoder: Literal["mean-last", "gru"] = "mean-last"   # E of Eq. 5: [mean, last] of the window's items, or a
                                                         # GRU over them in place of the mean
    clip: float = Field(1.0, gt=0.0)       # T of Eq. 6
    editor_hidden: int = Field(64, ge=4)
    clkt: bool = True                      # cross-layer knowledge transfer (Eq. 13)
    rank: int | None = Field(None, ge=1)   # low-rank edit heads (G = U V, rank r) instead of full ones
    prototypes: int = Field(5, ge=1)       # N_M of Persona (m)
    group_prototypes: bool = True          # a PM per group (fine-tuned, or the authors': global + centre edit);
                                           # False: every group edits the global PM
    assignment: Literal["edit-norm", "nearest-centre"] = "edit-norm"   # Eq. 12, or the nearest k-means centre
    # Persona (m)'s groups: the paper's (k-means of the global PE's edits, fine-tuned group PMs, ``assignment``)
    # or the authors' code's (k-means of its codes, group PM = the global PM + the centre's edit, not
    # fine-tuned, devices sent to the nearest centre in code space); a list trains each, validation keeps one
    groups: GroupsKind | list[GroupsKind] = ["paper", "authors"]

    @model_validator(mode="after")
    def _group_choices(self) -> "PersonaSpec":
        kinds = self.group_kinds
        if not kinds or len(set(kinds)) != len(kinds):
            raise ValueError(f"groups must be 'paper', 'authors' or a list of distinct ones, got {self.groups}")
        return self

    @property
    def group_kinds(self) -> list[str]:
        """The groups variants to train (one, or the list to choose from on validation)."""
        return list(self.groups) if isinstance(self.groups, list) else [self.groups]

    def with_groups(self, kind: str) -> "PersonaSpec":
        """This spec with one groups variant and the assignment it uses (the authors': nearest centre)."""
        assignment = "nearest-centre" if kind == "authors" else self.assignment
        return self.model_copy(update={"groups": kind, "assignment": assignment})


class FinetuneSpec(_Strict):
    """On-device fine-tuning: Adam steps on the device's own recent interactions (next-item loss)."""

    layers: Literal["all", "adaptive"] = "all"   # all: Θb (less the shared item table) and Θc; adaptive: Θc
    steps: int = Field(20, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    window: int = Field(50, ge=1)                # the device's last interactions it learns from (labelled)


class TTASpec(_Strict):
    """Test-time adaptation (Tent-style): minimise the entropy of the device's own predictions, no labels."""

    layers: Literal["norm", "adaptive"] = "norm"   # norm: the encoder's LayerNorm parameters (SASRec only)
    steps: int = Field(3, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    window: int = Field(10, ge=1)                # the latest positions whose predictions are sharpened


class DCCLSpec(_Strict):
    """DCCL's on-device MetaPatch, simplified: a low-rank patch ΔW = A·B on each adaptive layer, trained on the
    device with the base frozen (the cloud-side MoMoDistill is not modelled)."""

    rank: int = Field(4, ge=1)
    steps: int = Field(20, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    window: int = Field(50, ge=1)


class CloudFinetuneSpec(_Strict):
    """The cloud fine-tunes a copy of Θc on the uploaded window and sends the full layers back."""

    steps: int = Field(20, ge=1)
    lr: float = Field(1e-3, gt=0.0)


class BaselinesSpec(_Strict):
    """Settings of the methods the paper compares Persona with; each is read only when it is listed."""

    finetune: FinetuneSpec = FinetuneSpec()
    tta: TTASpec = TTASpec()
    dccl: DCCLSpec = DCCLSpec()
    cloud_finetune: CloudFinetuneSpec = CloudFinetuneSpec()
    negatives: int = Field(64, ge=1)             # sampled negatives of the on-device next-item loss


class PolicySpec(_Strict):
    every: int = Field(5, ge=1)            # ask for an edit every k interactions


class ArrivalSpec(_Strict):
    """When a device's interactions happen in virtual time.

    exponential  gaps drawn exponentially with mean ``mean_s``
    sessions     sessions of geometric length (mean ``session_items``) with exponential gaps of mean
                 ``mean_s`` inside and of mean ``session_gap_s`` between them
    timestamps   the user's real timestamps divided by ``compress`` (needs a dataset with timestamps);
                 past the user's own sequence (after a takeover), exponential with the user's mean gap
    """

    kind: Literal["exponential", "sessions", "timestamps"] = "exponential"
    mean_s: float = Field(30.0, gt=0.0)
    session_items: float = Field(8.0, ge=1.0)
    session_gap_s: float = Field(3600.0, gt=0.0)
    compress: float = Field(1000.0, gt=0.0)


DRIFT_KINDS = ("takeover", "category", "popularity", "mixing", "periodic")


class DriftSpec(_Strict):
    """One injected distribution shift, for a fraction of devices, from virtual time ``at_s``.

    A device is shifted at its first interaction at or after ``at_s``; from there on it replays:
    takeover    another held-out user's whole sequence (preferably one of another prototype cluster)
    category    real interactions of one other item category, in other users' order (needs categories)
    popularity  its own items, each replaced with probability ``strength`` by one of ``trending``
                long-tail items that suddenly became popular (Zipf over them)
    mixing      its own items and another user's, the other's share rising linearly over ``duration_s``
    periodic    alternating between another user's items and its own every ``period_s``
    """

    kind: Literal[DRIFT_KINDS]
    at_s: float = Field(ge=0.0)
    fraction: float = Field(1.0, gt=0.0, le=1.0)  # of devices; injectors take consecutive slices of one shuffle
    devices: list[int] | None = None               # these device indices instead of a fraction
    events: int | None = Field(None, ge=1)         # at least this many interactions after the shift
    strength: float = Field(0.8, gt=0.0, le=1.0)   # popularity
    trending: int = Field(50, ge=1)                # popularity
    duration_s: float = Field(600.0, gt=0.0)       # mixing
    period_s: float = Field(300.0, gt=0.0)         # periodic


DEVICE_PROFILES = ("fixed", "flagship", "midrange", "lowend")


class ComputeSpec(_Strict):
    """How long a device's processor takes. ``fixed``: every device gets the three numbers below; a named
    profile draws each device's from that class of phone's distribution (device_compute.PROFILES)."""

    profile: Literal[DEVICE_PROFILES] = "fixed"
    apply_ms: float = Field(2.0, ge=0.0)          # load an edit into the adaptive layers
    infer_ms: float = Field(5.0, ge=0.0)          # one on-device prediction
    # one whole-model training step on a full history (max_len items, the loss at every position against
    # 1 + baselines.negatives items); an on-device method's step costs its FLOPs relative to that (model.flops)
    finetune_step_ms: float = Field(30.0, ge=0.0)


class DevicesSpec(_Strict):
    count: int = Field(200, ge=1)
    arrivals: ArrivalSpec = ArrivalSpec()
    policy: PolicySpec = PolicySpec()
    compute: ComputeSpec = ComputeSpec()


LINK_PROFILES = ("fixed", "wifi", "5g", "4g", "3g")


class CellSpec(_Strict):
    """A shared bottleneck: consecutive devices share a cell whose capacity is split fairly among the
    transfers in progress (each also capped by its own link)."""

    devices: int = Field(50, ge=1)               # devices per cell: indices 0..n-1 are cell 0, and so on
    uplink_mbps: float = Field(20.0, gt=0.0)
    downlink_mbps: float = Field(100.0, gt=0.0)


FIXED_LINK = {"uplink_mbps": 10.0, "downlink_mbps": 50.0, "delay_ms": 20.0, "jitter_ms": 5.0}


class NetworkSpec(_Strict):
    """Each device's link. ``fixed``: every device gets the four numbers below (defaults FIXED_LINK); a
    named profile draws each device's capacities and delay from that access technology's distribution
    (netsim.PROFILES), and the four stay unset."""

    profile: Literal[LINK_PROFILES] = "fixed"
    uplink_mbps: float | None = Field(None, gt=0.0)
    downlink_mbps: float | None = Field(None, gt=0.0)
    delay_ms: float | None = Field(None, gt=0.0)        # one-way propagation delay
    jitter_ms: float | None = Field(None, ge=0.0)       # uniform extra delay per transfer
    loss: float | None = Field(None, ge=0.0, lt=1.0)   # P(a transfer attempt is lost); None: the profile's
    rto_ms: float = Field(200.0, gt=0.0)          # wait before a lost attempt is sent again
    trace: str | None = None                      # bandwidth trace ("time_s Mbps" lines) for both directions
    cell: CellSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _fixed_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("profile", "fixed") == "fixed":
            data = {**FIXED_LINK, **{k: v for k, v in data.items() if v is not None}}
        return data

    @model_validator(mode="after")
    def _profile_fields(self) -> "NetworkSpec":
        fixed_only = sorted(k for k in FIXED_LINK if getattr(self, k) is not None)
        if self.profile != "fixed" and fixed_only:
            raise ValueError(f"{', '.join(fixed_only)} apply to profile 'fixed' only "
                             f"(profile {self.profile!r} draws them per device)")
        return self


class CloudSpec(_Strict):
    """The cloud as a batch server in virtual time (see persona_sim.sim.cloudsim)."""

    compute: Literal["model", "measured", "replay"] = "model"
    base_ms: float = Field(2.0, gt=0.0)           # fixed cost of one batch, in every mode
    per_request_ms: float = Field(0.0, ge=0.0)    # `model`: cost per request in the batch
    per_prototype_ms: float = Field(0.5, ge=0.0)  # `model`: cost per request per prototype editor evaluated
    per_step_ms: float = Field(1.5, ge=0.0)       # `model`: cost per fine-tuning step a request runs (cloud-finetune)
    replay: str | None = None                     # `replay`: a run directory whose measured times to feed back
    workers: int = Field(1, ge=1)                 # batches computed at once (GPUs, worker processes)
    max_batch: int = Field(32, ge=1)              # requests a worker takes from the queue at once
    ingress_mbps: float | None = Field(1000.0, gt=0.0)   # inbound capacity shared by all requests; null: unlimited
    egress_mbps: float | None = Field(1000.0, gt=0.0)    # outbound capacity shared by all replies
    max_frame_mb: float = Field(4.0, gt=0.0)      # gRPC message cap on both ends
    max_streams: int = Field(64, ge=1)            # Adapt streams the cloud node serves at once (one per device node)
    edit_codec: Literal["float32", "float16", "int8"] = "float32"   # edit tensors as sent (int8: one scale per tensor)
    edit_delta: float = Field(0.0, ge=0.0)        # > 0: leave out every layer whose relative change is at most this

    @property
    def edit_dtype(self) -> str:
        """``edit_codec`` as the wire's DType name."""
        return self.edit_codec.upper()

    @model_validator(mode="after")
    def _replay_source(self) -> "CloudSpec":
        if (self.compute == "replay") != (self.replay is not None):
            raise ValueError("compute 'replay' needs `replay: RUN_DIR`, and `replay` needs compute 'replay'")
        return self


class RealtimeSpec(_Strict):
    """``eval.protocol: realtime``: each user's early interactions are history (the cloud trains on them), every
    later one is a test event predicted from the interactions before it."""

    fraction: float = Field(0.6, gt=0.0, lt=1.0)   # share of interactions that is history
    by: Literal["position", "time"] = "position"    # per user by count, or one global time cut (needs timestamps)


class EvalSpec(_Strict):
    protocol: Literal["leave-one-out", "realtime"] = "leave-one-out"   # what `persona-sim eval` tests on
    negatives: int = Field(99, ge=1)               # sampled per test event, none from the user's sequence
    realtime: RealtimeSpec = RealtimeSpec()


class Scenario(_Strict):
    name: str
    seed: int = 0
    dataset: DatasetSpec = DatasetSpec()
    split: SplitSpec = SplitSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    persona: PersonaSpec = PersonaSpec()
    methods: list[Method] = ["static", "persona-s"]
    baselines: BaselinesSpec = BaselinesSpec()
    devices: DevicesSpec = DevicesSpec()
    network: NetworkSpec = NetworkSpec()
    cloud: CloudSpec = CloudSpec()
    eval: EvalSpec = EvalSpec()
    drift: list[DriftSpec] = []

    @model_validator(mode="after")
    def _cross_checks(self) -> "Scenario":
        if not self.methods:
            raise ValueError("methods must list at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods has duplicates: {self.methods}")
        if "tta" in self.methods and self.baselines.tta.layers == "norm" and self.model.arch != "sasrec":
            raise ValueError(f"baselines.tta.layers 'norm' adapts LayerNorm parameters, which {self.model.arch} "
                             "has none of; set baselines.tta.layers: adaptive")
        for j, d in enumerate(self.drift):
            bad = [i for i in d.devices or () if not 0 <= i < self.devices.count]
            if bad:
                raise ValueError(f"drift[{j}].devices: index {bad[0]} is not a device (0..{self.devices.count - 1})")
        if self.devices.count > self.split.device_users:
            raise ValueError(
                f"devices.count ({self.devices.count}) exceeds split.device_users "
                f"({self.split.device_users}): each device replays one held-out user"
            )
        return self

    def resolved(self) -> dict[str, Any]:
        """The scenario with every default filled in, as plain data."""
        return self.model_dump(mode="json")

    def run_view(self) -> dict[str, Any]:
        """What a run depends on: the resolved scenario less the offline ``eval`` section and where this machine
        keeps the data (``dataset.path``, ``dataset.data_dir``). Cloud and device nodes must agree on it."""
        view = {k: v for k, v in self.resolved().items() if k not in RUN_IRRELEVANT}
        view["dataset"] = {k: v for k, v in view["dataset"].items() if k not in MACHINE_LOCAL}
        return view

    def run_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.run_view(), sort_keys=True).encode()).hexdigest()[:16]

    def shard_of(self, device_index: int, shards: int) -> int:
        """The device-node shard that simulates a device: whole cells are dealt round-robin, so devices
        sharing a cell are always simulated together and any sharding gives the same results."""
        cell_size = self.network.cell.devices if self.network.cell else 1
        return (device_index // cell_size) % shards

    def with_seed(self, seed: int) -> "Scenario":
        return self.model_copy(update={"seed": seed})


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) wherever two resolved scenarios (plain data) differ, in key order."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += differing_keys(a.get(key, MISSING), b.get(key, MISSING), f"{prefix}{key}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


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


def parse_scenario(data: Any, source: str = "<scenario>") -> Scenario:
    """Validate plain data (as read from YAML) into a ``Scenario``; errors name ``source``."""
    if not isinstance(data, dict):
        raise ScenarioError(source, [("", "a scenario must be a mapping of keys", data)])
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, _problems(exc)) from None
