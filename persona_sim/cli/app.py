"""The persona-sim command line. The only place that prints errors and picks exit codes.

    persona-sim run SCENARIO [--out DIR] [--seed N] [--set KEY=VALUE] [--transport grpc|inproc] [--shards N]
    persona-sim eval SCENARIO [--out DIR] [--seeds N] [--set KEY=VALUE]
    persona-sim validate SCENARIO
    persona-sim report RUN_DIR
    persona-sim compare RUN_DIR RUN_DIR ...
    persona-sim merge OUT SHARD_DIR ...
    persona-sim export RUN_DIR [--format csv|parquet] [--out DIR]
    persona-sim calibrate SCENARIO [--out FILE] [--repeats N]
    persona-sim data list|info|fetch|convert ...   (cli.data)
    persona-sim cloud ...      (from the cloud_node package)
    persona-sim devices ...    (from the device_node package)

The node commands are found through the ``persona_sim.commands`` entry-point
group, so the core never imports the node packages.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import signal
import sys
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path

from ..errors import BundleError, DatasetError, NodeError, PersonaSimError, ScenarioError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DATA, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
LOG_LEVELS = ("debug", "info", "warning", "error")


def _overrides(args: argparse.Namespace) -> dict:
    from ..scenario.files import command_overrides

    return command_overrides(args.set, getattr(args, "seed", None))


def _cmd_validate(args: argparse.Namespace) -> int:
    from ..data.dataset import load_dataset
    from ..scenario.files import load_variants

    variants = load_variants(args.scenario, _overrides(args))
    scenario = variants[0].scenario
    dataset = load_dataset(scenario.dataset, scenario.seed)
    sweep = f", a sweep of {len(variants)} variants" if len(variants) > 1 else ""
    print(f"{args.scenario}: ok — scenario {scenario.name!r}{sweep}, methods {', '.join(scenario.methods)}, "
          f"{scenario.devices.count} devices, dataset {dataset.name} ({dataset.num_users} users, "
          f"{dataset.num_items} items, {dataset.num_interactions} interactions)")
    return EXIT_OK


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ..data.dataset import load_dataset
    from ..jobs.calibrate import fit, measure
    from ..progress import stage_progress
    from ..scenario.files import load_scenario
    from ..train.bundle import ensure_bundle, load_bundle, reproducible_torch

    scenario = load_scenario(args.scenario, _overrides(args))
    dataset = load_dataset(scenario.dataset, scenario.seed)
    path, _ = ensure_bundle(scenario, dataset, stage_progress(args.quiet))
    with reproducible_torch():          # one thread, as the cloud node computes
        rows = measure(scenario, load_bundle(path), repeats=max(1, args.repeats))
    result = fit(rows)
    print(f"{'method':<16}{'batch':>6}{'P':>4}{'steps':>6}{'median ms':>11}{'fitted ms':>11}")
    for r in rows:
        print(f"{r['method']:<16}{r['batch']:>6}{r['prototypes']:>4}{r['steps']:>6}{r['ms_median']:>11.4f}"
              f"{r['ms_fitted']:>11.4f}")
    step = f", per_step_ms: {result['per_step_ms']}" if "per_step_ms" in result else ""
    print(f"\nfit (largest error {result['max_relative_error']:.0%}); for the scenario:\n"
          f"cloud: {{compute: model, base_ms: {result['base_ms']}, per_request_ms: {result['per_request_ms']}, "
          f"per_prototype_ms: {result['per_prototype_ms']}{step}}}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"scenario": scenario.name, "fit": result, "measurements": rows}, indent=2))
        print(f"written: {args.out}")
    return EXIT_OK


def _cmd_bench_sim(args: argparse.Namespace) -> int:
    from ..jobs.bench_sim import bench_sim, render

    result = bench_sim(Path(args.scenario), args.devices, args.transport, max(1, args.repeats), _overrides(args),
                       code=args.code, warmup=not args.no_warmup,
                       progress=(lambda line: None) if args.quiet else (lambda line: print(line, flush=True)))
    print(render(result))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-sim-{platform.node() or 'host'}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {path}")
    return EXIT_OK


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..jobs.offline import run_eval
    from ..progress import stage_progress
    from ..report.eval_report import render
    from ..report.rundir import check_fresh
    from ..scenario.files import load_variants

    if args.seeds < 1:
        raise ScenarioError("--seeds", [("--seeds", "must be at least 1", args.seeds)])
    variants = load_variants(args.scenario, _overrides(args))
    base = variants[0].scenario
    out = args.out or Path("runs") / f"{base.name}-eval-{time.strftime('%Y%m%d-%H%M%S')}"
    check_fresh(out, args.force, "summary.json")
    seeds = [base.seed + i for i in range(args.seeds)]
    summary = run_eval(variants, seeds, out, stage_progress(args.quiet), {"command": " ".join(sys.argv[1:])})
    print(render(summary))
    print(f"eval directory: {out}  (report.md, summary.json)")
    return EXIT_OK


def _slug(settings: dict) -> str:
    text = "_".join(f"{k}-{v}" for k, v in settings.items())
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text)


def _cmd_run(args: argparse.Namespace) -> int:
    from ..jobs.runner import run
    from ..progress import stage_progress
    from ..report.compare import render_compare, write_compare
    from ..report.markdown import render_table
    from ..report.rundir import check_fresh
    from ..scenario.files import load_variants

    if args.resume is not None:
        from ..scenario.files import load_scenario
        if args.scenario or args.set or args.seed is not None or args.out:
            raise ScenarioError("--resume", [("--resume", "takes the run directory alone: its scenario.yaml is the "
                                                          "scenario (no SCENARIO, --set, --seed or --out)", str(args.resume))])
        scenario = load_scenario(args.resume / "scenario.yaml")
        summary = run(scenario, args.resume, args.transport, args.shards, args.quiet, stage_progress(args.quiet),
                      resume=True)
        print(render_table(summary))
        print(f"\nrun directory: {args.resume}  (resumed; report.md, summary.json, results.sqlite)")
        return EXIT_OK
    if not args.scenario:
        raise ScenarioError("run", [("SCENARIO", "give a scenario file (or --resume RUN_DIR)", None)])
    variants = load_variants(args.scenario, _overrides(args))
    base = variants[0].scenario
    out = args.out or Path("runs") / f"{base.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.seeds < 1:
        raise ScenarioError("--seeds", [("--seeds", "must be at least 1", args.seeds)])
    if args.seeds > 1:
        return _run_seeds(args, variants, out)
    if len(variants) == 1:
        check_fresh(out, args.force, "results.sqlite", "summary.json")
        summary = run(base, out, args.transport, args.shards, args.quiet, stage_progress(args.quiet),
                      cluster=args.cluster)
        print(render_table(summary))
        print(f"\nrun directory: {out}  (report.md, summary.json, results.sqlite)")
        return EXIT_OK
    check_fresh(out, args.force, "compare.json")       # a sweep: one run directory per variant, then a comparison
    dirs = [out / _slug(v.settings) for v in variants]
    for v, d in zip(variants, dirs):
        print(f"== {v.label} -> {d}", flush=True)
        check_fresh(d, args.force, "results.sqlite", "summary.json")
        run(v.scenario, d, args.transport, args.shards, args.quiet, stage_progress(args.quiet), cluster=args.cluster)
    print(render_compare(write_compare(out, dirs, [v.label for v in variants])))
    print(f"sweep directory: {out}  (compare.md, compare.json, one run directory per variant)")
    return EXIT_OK


def _run_seeds(args: argparse.Namespace, variants: list, out: Path) -> int:
    """The scenario once per seed (its seed and the next N-1), each into out/seed-S, then seeds.md/json."""
    from ..jobs.runner import run
    from ..progress import stage_progress
    from ..report.rundir import check_fresh
    from ..report.seeds import render_seeds, write_seeds
    from ..scenario.files import load_variants

    if len(variants) > 1:
        raise ScenarioError(args.scenario, [("--seeds", "a scenario with a sweep runs one seed per variant here; "
                                                        "use `persona-sim eval --seeds N` or fix the sweep with --set",
                                             args.seeds)])
    check_fresh(out, args.force, "seeds.json")
    seeds = [variants[0].scenario.seed + i for i in range(args.seeds)]
    dirs = [out / f"seed-{s}" for s in seeds]
    for seed, d in zip(seeds, dirs):
        print(f"== seed {seed} -> {d}", flush=True)
        check_fresh(d, args.force, "results.sqlite", "summary.json")
        scenario = load_variants(args.scenario, {**_overrides(args), "seed": seed})[0].scenario
        run(scenario, d, args.transport, args.shards, args.quiet, stage_progress(args.quiet), cluster=args.cluster)
    print(render_seeds(write_seeds(out, dirs, seeds)))
    print(f"seeds directory: {out}  (seeds.md, seeds.json, accuracy-over-time-seeds.png, one run directory per seed)")
    return EXIT_OK


def _cmd_certs(args: argparse.Namespace) -> int:
    from .certs import make_certs

    files = make_certs(args.out, args.host or ["localhost", "127.0.0.1"], args.days)
    d = args.out
    print("\n".join(f"written: {p}" for p in files.values()))
    print(f"\ncloud:   persona-sim cloud --scenario S --listen 0.0.0.0:50051 --tls-cert {d}/cloud.pem "
          f"--tls-key {d}/cloud.key --tls-client-ca {d}/ca.pem --token-file {d}/token\n"
          f"devices: persona-sim devices --scenario S --cloud HOST:50051 --out runs/x --tls-ca {d}/ca.pem "
          f"--tls-cert {d}/device.pem --tls-key {d}/device.key --token-file {d}/token")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..report.compare import compare_runs, render_compare

    data = compare_runs(args.run_dirs)
    print(json.dumps(data, indent=2) if args.json else render_compare(data))
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from ..report.rundir import write_summary
    from ..scenario.files import load_scenario

    run_dir = args.run_dir
    summary_file = run_dir / "summary.json"
    if not (run_dir / "results.sqlite").exists() and summary_file.exists() and "variants" in summary_file.read_text():
        from ..report.eval_report import render  # an eval directory: its report is made from summary.json
        (run_dir / "report.md").write_text(render(json.loads(summary_file.read_text())))
        print(f"rebuilt {run_dir / 'report.md'}")
        return EXIT_OK
    if not (run_dir / "results.sqlite").exists():
        raise NodeError(f"{run_dir}: no results.sqlite (is this a finished run directory?)")
    scenario = load_scenario(run_dir / "scenario.yaml")
    old = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    write_summary(run_dir, scenario, int(old.get("shards", 1)),
                  {k: old[k] for k in ("transport", "wall_seconds") if k in old})
    print(f"rebuilt {run_dir / 'summary.json'} and {run_dir / 'report.md'}")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from ..report.tables import export_run

    out = args.out or args.run_dir / "export"
    written = export_run(args.run_dir, args.format, out)
    for table, rows in written.items():
        print(f"{out / f'{table}.{args.format}'}: {rows} rows")
    return EXIT_OK


def _cmd_merge(args: argparse.Namespace) -> int:
    from ..report.markdown import render_table
    from ..report.rundir import check_fresh, merge_shard_dirs, write_summary

    check_fresh(args.out, args.force, "results.sqlite", "summary.json")
    scenario, count = merge_shard_dirs(args.out, args.shard_dirs)
    summary = write_summary(args.out, scenario, count, {"transport": "grpc",
                                                         "merged_from": [str(d) for d in args.shard_dirs]})
    print(render_table(summary))
    print(f"\nrun directory: {args.out}  (merged {count} shards; report.md, summary.json, results.sqlite)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="persona-sim", description="Device-cloud simulator for Persona "
                                     "(prototype-based parameter editing) over real gRPC and a SimPy clock.")
    parser.add_argument("--version", action="version", version=_version())
    _add_logging_options(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a scenario end to end and write a run directory (one per variant of a sweep)")
    p.add_argument("scenario", nargs="?", help="scenario YAML file")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="go on with an interrupted run from its last completed method (same results as uninterrupted)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<name>-<time>)")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a scenario key, e.g. model.arch=gru4rec")
    p.add_argument("--transport", choices=("grpc", "inproc"), default="grpc",
                   help="grpc: cloud and device nodes as processes over loopback gRPC (default); "
                        "inproc: one process, no sockets; same results")
    p.add_argument("--shards", type=int, default=1, help="device-node processes (default 1)")
    p.add_argument("--cluster", metavar="ENGINE[://ADDRESS]",
                   help="place the cloud and the --shards device shards on a cluster: `ray` (the cluster in "
                        "$RAY_ADDRESS, or a one-machine Ray) or `ray://HOST:PORT` (a cluster's GCS address); "
                        "needs pip install 'persona-sim[ray]'")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="run N seeds (the scenario's and the next ones), each into OUT/seed-S, and write their "
                        "mean ± std per method and accuracy bands (seeds.md)")
    p.add_argument("--force", action="store_true", help="replace results already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("eval", help="offline evaluation (eval.protocol: leave-one-out or realtime) over seeds and sweeps")
    p.add_argument("scenario", help="scenario YAML file (may hold a sweep)")
    p.add_argument("--out", type=Path, help="output directory (default runs/<name>-eval-<time>)")
    p.add_argument("--seeds", type=int, default=1, help="seeds to train and test, from the scenario's seed up (default 1)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a scenario key, e.g. model.arch=gru4rec")
    p.add_argument("--force", action="store_true", help="replace results already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_eval)

    p = sub.add_parser("validate", help="check a scenario file (and that its dataset is found)")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a scenario key")
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser("report", help="rebuild the report of a run directory (from results.sqlite) or an eval directory")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser("export", help="write a run's results.sqlite tables as CSV or Parquet files")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("--out", type=Path, help="directory for the files (default RUN_DIR/export)")
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser("merge", help="merge shard results that device nodes wrote to separate --out directories")
    p.add_argument("out", type=Path, help="the run directory to write")
    p.add_argument("shard_dirs", type=Path, nargs="+", metavar="SHARD_DIR", help="device nodes' --out directories")
    p.add_argument("--force", action="store_true", help="replace results already in OUT")
    p.set_defaults(handler=_cmd_merge)

    p = sub.add_parser("compare", help="put finished runs side by side (accuracy, round trip by stage, bytes)")
    p.add_argument("run_dirs", type=Path, nargs="+")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_compare)

    p = sub.add_parser("certs", help="make a throwaway CA, cloud and device-node certificates and a token (openssl)",
                       description="For trying TLS, mutual TLS and token auth between `persona-sim cloud` and "
                                   "`persona-sim devices`; use your own PKI for anything real.")
    p.add_argument("out", type=Path, help="directory to write ca.pem, cloud.pem/.key, device.pem/.key, token into")
    p.add_argument("--host", action="append", help="a name or address the cloud is reached by (repeatable; "
                                                   "default localhost and 127.0.0.1)")
    p.add_argument("--days", type=int, default=30, help="validity (default 30)")
    p.set_defaults(handler=_cmd_certs)

    p = sub.add_parser("calibrate", help="fit the cloud's `model` compute cost to timings of the real editor",
                       description="Time the real batched edit computation of the scenario's adaptive methods at "
                                   "several batch sizes on this machine, and fit cloud.base_ms, per_request_ms and "
                                   "per_prototype_ms to the medians.")
    p.add_argument("scenario", help="scenario YAML file (its model bundle is trained or reused)")
    p.add_argument("--out", type=Path, help="also write the measurements and the fit as JSON here")
    p.add_argument("--repeats", type=int, default=7, help="timings per batch size (default 7; the median is used)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a scenario key")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_calibrate)

    bench = sub.add_parser("bench", help="benchmarks of the simulator itself (writes a results file)")
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="{sim,cloud}")
    p = kinds.add_parser("sim", help="wall time, peak memory (whole process tree) and adaptations per wall second "
                                     "of `persona-sim run` at growing device counts",
                         description="Each cell is a fresh `persona-sim run` of the (synthetic) scenario scaled to N "
                                     "devices; repeats are interleaved and medians reported.")
    p.add_argument("scenario", nargs="?", default="scenarios/quickstart.yaml",
                   help="a synthetic scenario (default scenarios/quickstart.yaml)")
    p.add_argument("--devices", type=int, nargs="+", default=[1000, 10000, 100000], help="device counts")
    p.add_argument("--transport", nargs="+", choices=["inproc", "grpc"], default=["inproc", "grpc"])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per cell (default 3; the median is reported)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a scenario key in every run")
    p.add_argument("--code", type=Path, help="run another checkout's persona_sim (a before/after comparison)")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed run per size that caches its model")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="where bench-sim-HOST.json goes")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=_cmd_bench_sim)
    for ep in sorted(entry_points(group="persona_sim.bench"), key=lambda e: e.name):   # the node shells' benches
        ep.load()(kinds)

    from .data import add_parsers
    add_parsers(sub)
    for ep in sorted(entry_points(group="persona_sim.commands"), key=lambda e: e.name):
        ep.load()(sub)
    for command in sub.choices.values():     # `persona-sim run X --log-level info` as well as before the command
        _add_logging_options(command, default=argparse.SUPPRESS)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def of(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "?"

    return f"persona-sim {of('persona-sim')} (torch {of('torch')}, grpcio {of('grpcio')}, protobuf {of('protobuf')})"


def _add_logging_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=default,
                        help="log messages at this level and above (default: info for `cloud`, else warning)")
    parser.add_argument("--log-file", type=Path, default=default, help="append log messages to this file "
                        "instead of stderr")


def _configure_logging(args: argparse.Namespace) -> None:
    level = args.log_level or getattr(args, "default_log_level", "warning")
    target = {"filename": str(args.log_file)} if args.log_file else {"stream": sys.stderr}
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True,
                        **target)


class Terminated(Exception):
    """SIGTERM arrived (timeout, docker stop, a batch scheduler): unwind like Ctrl-C, so child processes stop."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "shards", 1) < 1:
        parser.error(f"--shards must be at least 1, got {args.shards}")
    _configure_logging(args)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        return _handle(args)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _handle(args: argparse.Namespace) -> int:
    """Run the command; turn what it raises into a message on stderr and an exit code."""
    try:
        return args.handler(args)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DatasetError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DATA
    except PersonaSimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:            # output piped into e.g. `head`, which closed early
        sys.stderr.close()
        return EXIT_OK

if __name__ == "__main__":
    sys.exit(main())
