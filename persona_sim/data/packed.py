"""A dataset as one self-describing byte string: what a cloud node sends a device machine that lacks the data.

The arrays go into an ``.npz`` (numpy's zip of ``.npy`` files) and are read back with pickling disabled, so
bytes from the network can only ever become plain arrays; the loaded dataset's fingerprint is then checked
against the one asked for by the caller.
"""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np

from ..errors import DatasetError
from .sequences import Dataset, Sequences

FORMAT = "persona-sim-dataset/1"


def pack(ds: Dataset) -> bytes:
    arrays = {"items": ds.sequences.flat, "offsets": ds.sequences.offsets,
              "meta": np.frombuffer(json.dumps({"format": FORMAT, "name": ds.name,
                                                "num_items": ds.num_items}).encode(), dtype=np.uint8)}
    if ds.item_category is not None:
        arrays["item_category"] = ds.item_category
    if ds.timestamps is not None:
        arrays["times"], arrays["time_offsets"] = ds.timestamps.flat, ds.timestamps.offsets
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def unpack(data: bytes, where: str) -> Dataset:
    """The dataset in ``data``; a DatasetError naming ``where`` for anything that is not one."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        sequences = Sequences(arrays["items"].astype(np.int64, copy=False), arrays["offsets"])
        times = (Sequences(arrays["times"].astype(np.float64, copy=False), arrays["time_offsets"])
                 if "times" in arrays else None)
        num_items = int(meta["num_items"])
        if len(sequences.flat) and not (1 <= sequences.flat.min() and sequences.flat.max() <= num_items):
            raise ValueError(f"item ids outside 1..{num_items}")
        return Dataset(str(meta["name"]), num_items, sequences, arrays.get("item_category"), times)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{where}: not a packed dataset ({exc.__class__.__name__}: {exc})") from None
