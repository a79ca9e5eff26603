"""``persona-sim data …``: inspect, fetch and convert datasets. Part of the CLI (prints, picks exit codes).

    persona-sim data list
    persona-sim data info SOURCE [--format F] [--kcore K] [--min-rating R] [--set synthetic.KEY=VALUE] [--json]
    persona-sim data fetch NAME [--dir DIR]
    persona-sim data convert SOURCE --to FORMAT OUT

SOURCE is a file or directory, a dataset name looked up under $PERSONA_SIM_DATA
(``amazon-beauty``), or ``synthetic`` (the embedded generator; size it with --set).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import ScenarioError

EXIT_OK = 0


def _spec(args: argparse.Namespace):
    from pydantic import ValidationError

    from ..scenario.files import parse_assignment
    from ..scenario.schema import DatasetSpec

    synthetic = {}
    for text in args.set or []:
        key, value = parse_assignment(text)
        if not key.startswith("synthetic."):
            raise ScenarioError("--set", [(key, "data commands take synthetic.KEY=VALUE only", value)])
        synthetic[key.removeprefix("synthetic.")] = value
    fields = {"format": args.format, "kcore": args.kcore, "min_rating": args.min_rating,
              "attributes": args.attributes}
    source = args.source
    if source == "synthetic":
        fields["synthetic"] = synthetic
    elif Path(source).exists():
        fields.update(path=str(Path(source).resolve()), name=Path(source).resolve().name.removesuffix(".gz"))
    else:
        fields["name"] = source
    try:
        return DatasetSpec.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise ScenarioError("command line", [(".".join(map(str, e["loc"])), e["msg"], e.get("input"))
                                             for e in exc.errors()]) from None


def _load(args: argparse.Namespace):
    from ..data.dataset import load_dataset

    return load_dataset(_spec(args), args.seed)


def _cmd_info(args: argparse.Namespace) -> int:
    info = _load(args).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    lens = info["sequence_length"]
    print(f"{info['name']}: {info['users']:,} users, {info['items']:,} items, {info['interactions']:,} interactions "
          f"(density {info['density']:.6f})")
    print("sequence length: " + ", ".join(f"{k} {v:g}" for k, v in lens.items()) + f"; mean {info['mean_length']}")
    cats = "none" if info["categories"] is None else f"{info['categories']:,} categories over {info['items_with_category']:,} items"
    print(f"attributes: {cats}; timestamps: {'yes' if info['timestamps'] else 'no'}; fingerprint {info['fingerprint']}")
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    from ..data.catalogue import CATALOGUE

    for entry in CATALOGUE.values():
        print(f"{entry.name:<20} {entry.description}\n{'':<20} {entry.url or entry.homepage}")
    return EXIT_OK


def _cmd_fetch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.catalogue import CATALOGUE, fetch, how_to_get
    from ..data.dataset import DATA_ENV
    from ..errors import DatasetError

    entry = CATALOGUE.get(args.name)
    if entry is None:
        raise DatasetError(how_to_get(args.name))
    base = args.dir or (Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else None)
    if base is None:
        raise DatasetError(f"where to? pass --dir DIR or set ${DATA_ENV}")
    with tqdm(unit="B", unit_scale=True, desc=entry.name, file=sys.stderr, disable=args.quiet) as bar:
        path, checked = fetch(entry, base, progress=bar.update)
    print(f"{path}: {checked}")
    return EXIT_OK


def _cmd_convert(args: argparse.Namespace) -> int:
    from ..data.export import write_dataset

    ds = _load(args)
    write_dataset(ds, args.to, args.out)
    print(f"wrote {args.out} ({args.to}): {ds.num_users:,} users, {ds.num_items:,} items, "
          f"{ds.num_interactions:,} interactions")
    return EXIT_OK


def _source_args(p: argparse.ArgumentParser) -> None:
    from ..scenario.schema import DATA_FORMATS

    p.add_argument("source", help="file, directory, dataset name (under $PERSONA_SIM_DATA) or 'synthetic'")
    p.add_argument("--format", choices=DATA_FORMATS, help="interaction format (default: detected)")
    p.add_argument("--kcore", type=int, help="keep users and items with at least K interactions")
    p.add_argument("--min-rating", type=float, help="drop interactions rated below this")
    p.add_argument("--attributes", help="item attribute file (default: found beside the data)")
    p.add_argument("--set", action="append", metavar="synthetic.KEY=VALUE", help="size the synthetic generator")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic generator (default 0)")


def add_parsers(sub) -> None:
    data = sub.add_parser("data", help="inspect, fetch and convert datasets").add_subparsers(
        dest="data_command", required=True, metavar="ACTION")
    p = data.add_parser("list", help="the datasets known by name")
    p.set_defaults(handler=_cmd_list)
    p = data.add_parser("info", help="users, items, interactions, length percentiles, attributes")
    _source_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_info)
    p = data.add_parser("fetch", help="download a named dataset from its publisher")
    p.add_argument("name")
    p.add_argument("--dir", type=Path, help="data directory (default $PERSONA_SIM_DATA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_fetch)
    p = data.add_parser("convert", help="write a dataset in another format")
    _source_args(p)
    p.add_argument("--to", required=True, choices=("sequences", "amazon-csv", "amazon-json", "movielens", "recbole"))
    p.add_argument("out", type=Path, help="output file (.gz compresses)")
    p.set_defaults(handler=_cmd_convert)
