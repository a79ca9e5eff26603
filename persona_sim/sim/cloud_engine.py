"""Cloud logic: validate adaptation requests and answer them with edits.

Transport-agnostic: the gRPC servicer in ``cloud_node`` and the in-process
transport both call ``CloudEngine``. Nothing a client sends can make it raise
past ``adapt``: a bad request becomes a ``RequestError`` for that request only.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from .. import methods
from ..errors import BundleError, ProtocolError
from ..scenario.schema import Scenario
from ..train.bundle import Bundle, training_key
from ..wire.messages import PROTOCOL_VERSION, AdaptRequest, CloudInfo, EditResult, Hello, RequestError, device_index

MAX_WINDOW_FACTOR = 4   # a window may be at most this many times persona.window long
ROW_BLOCK = 8           # every real call computes a multiple of this many windows (see CloudEngine.compute)
MAX_ROWS = 256          # windows per real call, at most


class CloudEngine:
    def __init__(self, scenario: Scenario, bundle: Bundle, model_bytes: int, cloud_id: str | None = None):
        if bundle.meta.get("training_key") != training_key(scenario):   # also rules out a bundle without groups
            raise BundleError(f"the model bundle {bundle.signature} was trained for another scenario "
                              f"(training key {bundle.meta.get('training_key')}, this scenario's is "
                              f"{training_key(scenario)})")
        methods.require_simulable(scenario.methods, scenario.name)
        self.scenario = scenario
        self.bundle = bundle
        self.cloud_id = cloud_id or f"cloud-{os.getpid()}"
        self.model_bytes = model_bytes
        self.max_frame_bytes = int(scenario.cloud.max_frame_mb * 1024 * 1024)
        self._last_seq: dict[tuple[str, str], int] = {}
        self._max_window = scenario.persona.window * MAX_WINDOW_FACTOR
        self.scenario_hash = scenario.run_hash()
        self.edit_codec = scenario.cloud.edit_dtype
        self._adapters = {m: methods.get(m).adapter(scenario) for m in scenario.methods if methods.get(m).asks_cloud}
        # Fine-tuning in the cloud draws its sampled negatives once per call and trains the rows together,
        # so a request's layers would depend on its batch company: those requests are computed one by one.
        self._alone = {m for m in self._adapters if methods.get(m).cloud_steps is not None}

    def info(self) -> CloudInfo:
        return CloudInfo(self.cloud_id, self.bundle.signature, self.model_bytes, self.scenario.name,
                         tuple(self.scenario.methods), self.max_frame_bytes, self.scenario.devices.count,
                         scenario_json=json.dumps(self.scenario.run_view(), sort_keys=True),
                         dataset_fingerprint=self.bundle.meta.get("dataset_fingerprint", ""))

    def check_hello(self, hello: Hello) -> None:
        if hello.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError("BAD_FRAME", f"Hello.protocol_version {hello.protocol_version} is not supported "
                                             f"(this cloud speaks {PROTOCOL_VERSION})")
        if hello.model_signature != self.bundle.signature:
            raise ProtocolError("MODEL_MISMATCH", f"Hello.model_signature {hello.model_signature!r} does not match "
                                                  f"the cloud's model {self.bundle.signature!r}; fetch it with FetchModel")
        if hello.scenario_hash != self.scenario_hash:
            raise ProtocolError("SCENARIO_MISMATCH", f"Hello.scenario_hash {hello.scenario_hash!r} is not the cloud's "
                                                     f"{self.scenario_hash!r}: the node loaded another scenario (or "
                                                     "other --set/--seed); GetInfo's scenario_json shows the cloud's")
        if self.edit_codec not in hello.codecs:
            raise ProtocolError("BAD_FRAME", f"Hello.codecs {list(hello.codecs)} lacks {self.edit_codec}, the "
                                             f"scenario's cloud.edit_codec")
        if self.scenario.cloud.edit_delta > 0 and not hello.partial_edits:
            raise ProtocolError("BAD_FRAME", "Hello.partial_edits is false, but the scenario sends delta edits "
                                             f"(cloud.edit_delta {self.scenario.cloud.edit_delta})")

    def check_method(self, method: str, device_id: str = "", seq: int = 0) -> None:
        if method not in self._adapters:
            raise ProtocolError("BAD_REQUEST", f"method {method!r} is not served; this cloud adapts with "
                                               f"{list(self._adapters)}", device_id, seq)

    def forget_sequences(self, method: str) -> None:
        """A new run of ``method`` starts: its devices count their requests from 0 again."""
        self._last_seq = {k: v for k, v in self._last_seq.items() if k[0] != method}

    def _check(self, req: AdaptRequest, hello: Hello) -> None:
        idx = device_index(req.device_id)
        n = self.scenario.devices.count
        if idx is None or idx >= n:
            raise ProtocolError("UNKNOWN_DEVICE", f"unknown device {req.device_id!r}: this scenario has devices "
                                                  f"dev-000000..{n - 1:06d}", req.device_id, req.seq)
        if self.scenario.shard_of(idx, hello.shard_count) != hello.shard_index:
            raise ProtocolError("UNKNOWN_DEVICE", f"device {req.device_id!r} is not in shard "
                                                  f"{hello.shard_index}/{hello.shard_count}", req.device_id, req.seq)
        self.check_method(req.method, req.device_id, req.seq)
        if not 1 <= len(req.window) <= self._max_window:
            raise ProtocolError("BAD_REQUEST", f"window has {len(req.window)} items; expected 1..{self._max_window}",
                                req.device_id, req.seq)
        if not 1 <= min(req.window) <= max(req.window) <= self.bundle.num_items:
            bad = next(i for i in req.window if not 1 <= i <= self.bundle.num_items)
            raise ProtocolError("BAD_REQUEST", f"window item id {bad} is outside 1..{self.bundle.num_items}",
                                req.device_id, req.seq)
        last = self._last_seq.get((req.method, req.device_id), -1)
        if req.seq <= last:
            raise ProtocolError("BAD_REQUEST", f"seq {req.seq} is not above the last seen {last} for "
                                               f"{req.device_id}", req.device_id, req.seq)

    def admit(self, requests: list[AdaptRequest], hello: Hello) -> tuple[list[AdaptRequest], list[RequestError]]:
        """The valid requests, in order, and one RequestError per invalid one (checked on arrival)."""
        valid, errors = [], []
        for req in requests:
            try:
                self._check(req, hello)
            except ProtocolError as exc:
                errors.append(RequestError(req.device_id, req.seq, exc.code, str(exc)))
                continue
            self._last_seq[(req.method, req.device_id)] = req.seq
            valid.append(req)
        return valid, errors

    def adapt(self, requests: list[AdaptRequest], hello: Hello) -> tuple[list[EditResult], list[RequestError]]:
        """Admit the requests and compute the valid ones as one batch: edits, and errors for the rest."""
        valid, errors = self.admit(requests, hello)
        results = []
        for method in dict.fromkeys(r.method for r in valid):
            results += self.compute(method, [r for r in valid if r.method == method])
        return [r for r in results if isinstance(r, EditResult)], errors + [r for r in results
                                                                             if isinstance(r, RequestError)]

    def compute(self, method: str, requests: list[AdaptRequest]) -> list[EditResult | RequestError]:
        """Admitted requests of one method, computed in real batched calls of at most MAX_ROWS windows.

        A request's edit never depends on which requests share its call: each call is padded to a
        multiple of ``ROW_BLOCK`` rows, where the float32 matrix kernels compute every row alike (a
        call of 1–7 rows takes other code paths that round differently), and the rest is row-wise."""
        out: list[EditResult | RequestError] = []
        step = 1 if method in self._alone else MAX_ROWS
        for lo in range(0, len(requests), step):
            chunk = requests[lo: lo + step]
            try:
                out += self._compute(method, chunk)
            except Exception as exc:  # a bug must cost these requests, not the server
                out += [RequestError(r.device_id, r.seq, "INTERNAL", f"{exc.__class__.__name__}: {exc}")
                        for r in chunk]
        return out

    @torch.inference_mode()   # no autograd bookkeeping at all: ~15 % off a small call
    def _compute(self, method: str, requests: list[AdaptRequest]) -> list[EditResult]:
        t0 = time.perf_counter_ns()
        rows = -(-len(requests) // ROW_BLOCK) * ROW_BLOCK
        width = max(len(r.window) for r in requests)
        windows = np.zeros((rows, width), dtype=np.int64)          # (rows, W) right-padded; spare rows stay 0
        for i, r in enumerate(requests):
            windows[i, : len(r.window)] = r.window
        windows[len(requests):, 0] = 1                             # spare rows: a one-item window
        out = self._adapters[method](self.bundle.models, torch.from_numpy(windows))
        params = {k: np.asarray(v[: len(requests)].numpy(), dtype=np.float32) for k, v in out.params.items()}
        protos, norms = out.prototype.tolist(), out.edit_norm.tolist()
        share = (time.perf_counter_ns() - t0) // len(requests)    # each request's share of the call's wall time
        return [EditResult(r.device_id, r.seq, int(protos[i]), {k: v[i] for k, v in params.items()},
                           float(norms[i]), share) for i, r in enumerate(requests)]
