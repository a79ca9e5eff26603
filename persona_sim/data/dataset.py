"""Finding and loading the scenario's dataset.

``dataset.path`` (a file or directory) wins; otherwise a name is looked up as
``<dataset.data_dir or $PERSONA_SIM_DATA>/<name>/``, where the catalogue entry
(or format detection) says which file to read. ``synthetic`` is the embedded
generator and needs no files.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DatasetError
from ..scenario.schema import DatasetSpec
from .attributes import find_attribute_file, read_categories
from .catalogue import CATALOGUE, how_to_get
from .loaders import FORMATS, as_dataset, detect_format, read
from .sequences import Dataset, Sequences

__all__ = ["DATA_ENV", "Dataset", "Sequences", "load_dataset", "locate"]

DATA_ENV = "PERSONA_SIM_DATA"


def _in_directory(directory: Path, name: str, fmt: str) -> tuple[Path, str] | None:
    """The interaction file inside a dataset directory, and its format."""
    entry = CATALOGUE.get(name)
    for rel, entry_fmt in entry.files if entry else ():
        if (directory / rel).exists():
            return directory / rel, entry_fmt if fmt == "auto" else fmt
    candidates = [p for p in sorted(directory.iterdir()) if p.is_file() and not p.name.startswith(".")
                  and p.name not in ("item_attributes.json", "README.md") and not p.name.endswith((".sha256", ".zip"))
                  and not p.name.startswith("meta_")]
    for preferred in ("sequences.txt", "ratings.dat", "u.data"):
        if (directory / preferred).exists():
            candidates = [directory / preferred]
    if len(candidates) == 1:
        return candidates[0], detect_format(candidates[0]) if fmt == "auto" else fmt
    return None


def locate(spec: DatasetSpec) -> tuple[Path, str]:
    """The interaction file a (non-synthetic) spec names, and its format; or a DatasetError saying
    where it was looked for and how to get it."""
    if spec.path is not None:
        path = Path(spec.path)
        if path.is_file():
            return path, detect_format(path) if spec.format == "auto" else spec.format
        if path.is_dir() and (found := _in_directory(path, spec.name, spec.format)):
            return found
        what = "holds no single interaction file" if path.is_dir() else "does not exist"
        raise DatasetError(f"dataset '{spec.name}' not found: dataset.path {path} {what}. "
                           f"To get it: {how_to_get(spec.name)}.")
    base = spec.data_dir or os.environ.get(DATA_ENV)
    if base:
        directory = Path(base) / spec.name
        if directory.is_dir() and (found := _in_directory(directory, spec.name, spec.format)):
            return found
        looked = f"{directory} ({'no interaction file in it' if directory.is_dir() else 'missing'})"
    else:
        looked = f"nowhere: dataset.path, dataset.data_dir and ${DATA_ENV} are all unset"
    raise DatasetError(f"dataset '{spec.name}' not found; looked in {looked}. To get it: {how_to_get(spec.name)}. "
                       f"Then set ${DATA_ENV} (or dataset.data_dir) to the directory holding '{spec.name}/'.")


def load_dataset(spec: DatasetSpec, seed: int) -> Dataset:
    """Build the scenario's dataset: the synthetic generator or a file in one of the known formats."""
    if spec.name == "synthetic" and spec.path is None:
        from .synthetic import generate

        return generate(spec.synthetic, seed)
    path, fmt = locate(spec)
    if fmt not in FORMATS:
        raise DatasetError(f"{path}: unknown format {fmt!r}")
    entry = CATALOGUE.get(spec.name)
    kcore = spec.kcore if spec.kcore is not None else (entry.kcore if entry and fmt != "sequences" else 0)
    built = read(path, fmt, min_rating=spec.min_rating, kcore=kcore)
    attr_file = Path(spec.attributes) if spec.attributes else find_attribute_file(path.parent)
    categories = read_categories(attr_file) if attr_file is not None else None
    return as_dataset(spec.name, built, categories)
