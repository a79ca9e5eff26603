"""Item categories from the attribute files datasets come with (raw item id -> category name).

    item_attributes.json   ``{"item": [attribute, …]}``; the first attribute is the category
    movies.dat             MovieLens-1M ``id::title::Genre|Genre``; the first genre
    u.item                 MovieLens-100k ``id|title|…|19 genre flags``; the first genre set
    meta_*.json[.gz]       Amazon metadata lines (``asin`` with 2014 ``categories`` paths or 2018/2023
                           ``category``/``categories`` lists); the level below the store name
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from ..errors import DatasetError
from .loaders import read_lines

ATTRIBUTE_FILES = ("item_attributes.json", "movies.dat", "u.item")


def find_attribute_file(directory: Path) -> Path | None:
    for name in ATTRIBUTE_FILES:
        if (directory / name).exists():
            return directory / name
    metas = sorted(directory.glob("meta_*.json*"))
    return metas[0] if metas else None


def _item_attributes(path: Path) -> dict[str, str]:
    try:
        attrs = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(attrs, dict):
        raise DatasetError(f"{path}: expected an object mapping item ids to attribute lists")
    return {str(k): str(v[0]) for k, v in attrs.items() if isinstance(v, list) and v}


def _movielens(path: Path) -> dict[str, str]:
    out = {}
    if path.name == "movies.dat":
        with path.open(encoding="latin-1") as handle:
            for lineno, line in enumerate(handle, 1):
                parts = line.rstrip("\n").split("::")
                if len(parts) != 3:
                    raise DatasetError(f"{path}:{lineno}: expected id::title::genres")
                out[parts[0]] = parts[2].split("|")[0]
        return out
    with path.open(encoding="latin-1") as handle:                      # u.item
        for lineno, line in enumerate(handle, 1):
            parts = line.rstrip("\n").split("|")
            if len(parts) < 6:
                raise DatasetError(f"{path}:{lineno}: expected id|title|date|video date|url|genre flags")
            flags = parts[5:]
            first = next((g for g, f in enumerate(flags) if f == "1"), None)
            if first is not None:
                out[parts[0]] = f"genre-{first}"
    return out


def _category_of(rec: dict) -> str | None:
    cats = rec.get("categories", rec.get("category"))
    if not cats:
        return None
    path = cats[0] if isinstance(cats[0], list) else cats      # 2014: a list of category paths
    if not path:
        return None
    return str(path[1] if len(path) > 1 else path[0])          # below the store name ("Beauty")


def _amazon_meta(path: Path) -> dict[str, str]:
    out = {}
    for lineno, line in read_lines(path):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            try:
                rec = ast.literal_eval(line)                        # 2014 metadata is Python literal syntax
            except (ValueError, SyntaxError):
                raise DatasetError(f"{path}:{lineno}: neither JSON nor a Python literal") from None
        item = rec.get("parent_asin", rec.get("asin")) if isinstance(rec, dict) else None
        if item is None:
            raise DatasetError(f"{path}:{lineno}: a metadata line needs an asin")
        cat = _category_of(rec)
        if cat is not None:
            out[str(item)] = cat
    return out


def read_categories(path: Path) -> dict[str, str]:
    if not path.exists():
        raise DatasetError(f"{path}: attribute file not found")
    if path.suffix == ".json" and not path.name.startswith("meta_"):
        return _item_attributes(path)
    if path.name in ("movies.dat", "u.item"):
        return _movielens(path)
    return _amazon_meta(path)
