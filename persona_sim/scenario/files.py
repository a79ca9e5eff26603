"""Reading scenario files: YAML, ``extends``, ``--set`` overrides and sweeps.

    extends: drift_beauty.yaml         # start from another scenario (path relative to this file),
                                       # then replace what this file sets (mappings merge key by key)
    sweep:                             # run the scenario once per combination of these values
      persona.clip: [0.1, 0.5, 1.0, 5.0]
      persona.clkt: [true, false]

A sweep expands into variants, each validated like a scenario of its own, so a
bad value names the variant, the key and the value. ``persona-sim eval`` runs
every variant; ``run`` takes one scenario, so it asks for the values to be
fixed with ``--set``.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ScenarioError
from .schema import Scenario, parse_scenario

MAX_EXTENDS = 8


@dataclass(frozen=True)
class Variant:
    label: str                    # 'persona.clip=0.5, persona.clkt=true', or '' without a sweep
    settings: dict[str, Any]      # the swept keys and their values
    scenario: Scenario


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(str(path), [("", f"cannot read file: {exc.strerror}", ScenarioError.MISSING)]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ScenarioError(str(path), [("", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}",
                                         ScenarioError.MISSING)]) from None


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


PATH_KEYS = {"dataset": ("path", "data_dir", "attributes"), "network": ("trace",), "cloud": ("replay",)}   # relative to their file


def _resolve_paths(data: dict, base_dir: Path) -> dict:
    """Make relative paths absolute against the file that set them."""
    for section, keys in PATH_KEYS.items():
        spec = data.get(section)
        if not isinstance(spec, dict):
            continue
        for key in keys:
            value = spec.get(key)
            if isinstance(value, str) and not Path(value).is_absolute():
                data = _merge(data, {section: {key: str((base_dir / value).resolve())}})
    return data


def read_scenario_data(path: Path, depth: int = 0) -> dict:
    """The file's mapping, with ``extends`` merged in and relative paths resolved."""
    data = _read(path)
    if not isinstance(data, dict):
        raise ScenarioError(str(path), [("", "a scenario must be a mapping of keys", data)])
    data = _resolve_paths(data, path.parent)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ScenarioError(str(path), [("extends", "must be the path of another scenario file", parent)])
    if depth >= MAX_EXTENDS:
        raise ScenarioError(str(path), [("extends", f"more than {MAX_EXTENDS} levels (a cycle?)", parent)])
    return _merge(read_scenario_data(path.parent / parent, depth + 1), data)


def set_key(data: dict, dotted: str, value: Any) -> dict:
    """A copy of ``data`` with ``a.b.c`` set to value (missing sections are created)."""
    out = copy.deepcopy(data)
    node = out
    *parents, leaf = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value
    return out


def parse_assignment(text: str) -> tuple[str, Any]:
    """'persona.clip=0.5' -> ('persona.clip', 0.5); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ScenarioError("--set", [("", "expected KEY=VALUE, e.g. persona.clip=0.5", text)])
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ScenarioError("--set", [(key.strip(), "the value is not valid YAML", raw)]) from None


def command_overrides(assignments: list[str] | None, seed: int | None = None) -> dict[str, Any]:
    """A command's ``--set KEY=VALUE`` list (and ``--seed``) as overrides for ``load_scenario``."""
    out = dict(parse_assignment(text) for text in assignments or [])
    if seed is not None:
        out["seed"] = seed
    return out


def _sweep(data: dict, source: str) -> list[dict[str, Any]]:
    sweep = data.pop("sweep", None)
    if sweep is None:
        return [{}]
    if not isinstance(sweep, dict) or not sweep:
        raise ScenarioError(source, [("sweep", "must map keys (like persona.clip) to lists of values", sweep)])
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise ScenarioError(source, [(f"sweep.{key}", "must be a non-empty list of values", values)])
    keys = list(sweep)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))]


def _label(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                     for k, v in settings.items())


def load_variants(path: str | Path, overrides: dict[str, Any] | None = None) -> list[Variant]:
    """Every variant of a scenario file; overrides (dotted keys) apply to each and fix swept keys."""
    path = Path(path)
    data = read_scenario_data(path)
    for key, value in (overrides or {}).items():
        data = set_key(data, key, value)
        if isinstance(data.get("sweep"), dict):
            data["sweep"] = {k: v for k, v in data["sweep"].items() if k != key} or None
    variants = []
    for settings in _sweep(data, str(path)):
        variant = data
        for key, value in settings.items():
            variant = set_key(variant, key, value)
        label = _label(settings)
        source = f"{path} (sweep variant {label})" if label else str(path)
        variants.append(Variant(label, settings, parse_scenario(variant, source)))
    return variants


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """One scenario; a file with a sweep must have its swept values fixed by overrides."""
    variants = load_variants(path, overrides)
    if len(variants) > 1:
        raise ScenarioError(str(path), [("sweep", f"this scenario sweeps {len(variants)} variants; `persona-sim eval` "
                                                  "runs sweeps, or fix each swept key with --set KEY=VALUE",
                                         ScenarioError.MISSING)])
    return variants[0].scenario
