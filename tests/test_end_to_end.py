"""Whole runs at tiny scale: real processes over loopback gRPC, and in-process."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from persona_sim.cli import main

RUN_FILES = ("scenario.yaml", "manifest.json", "results.sqlite", "summary.json", "report.md")
SUMMARY_KEYS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10", "auc", "adaptations", "rtt_ms_p50", "rtt_ms_p95",
                "rtt_ms_p99", "bytes_up", "bytes_down")


def cli(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "persona_sim.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def metrics_only(s: dict) -> dict:
    return {"methods": s["methods"], "results_digest": s["results_digest"]}


def test_run_over_grpc_writes_every_file(grpc_run):
    _, out, proc = grpc_run
    for name in RUN_FILES:
        assert (out / name).exists(), name
    s = summary(out)
    persona = s["methods"]["persona-s"]
    for key in SUMMARY_KEYS:
        assert key in persona
    assert persona["adaptations"] > 0 and persona["bytes_up"] > 0 and persona["bytes_down"] > 0
    assert 0 < persona["rtt_ms_p50"] <= persona["rtt_ms_p95"] <= persona["rtt_ms_p99"]
    assert s["methods"]["static"]["adaptations"] == 0
    assert s["transport"] == "grpc" and s["compute_mode"] == "model"
    assert "persona-s" in proc.stdout and "run directory" in proc.stdout
    assert "| persona-s |" in (out / "report.md").read_text()
    # TINY injects a takeover, a category shift and periodic switching: logged, measured, plotted
    assert set(s["drift"]["shifts"]) == {"takeover", "category", "periodic"}
    assert set(s["drift"]["recovery"]["takeover"]) == {"static", "persona-s", "persona-m"}
    assert "## Distribution shifts and recovery" in (out / "report.md").read_text()
    assert (out / "accuracy-over-time.png").stat().st_size > 0 and (out / "accuracy-around-shifts.png").exists()
    assert (out / "accuracy-vs-latency.png").exists() and (out / "accuracy-vs-latency.svg").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["dataset"]["fingerprint"] and manifest["versions"]["torch"]


def test_results_hold_one_row_per_event_and_ordered_stage_times(grpc_run):
    _, out, _ = grpc_run
    con = sqlite3.connect(out / "results.sqlite")
    events = con.execute("SELECT COUNT(*) FROM predictions WHERE method='static'").fetchone()[0]
    assert events == con.execute("SELECT COUNT(*) FROM predictions WHERE method='persona-s'").fetchone()[0] > 0
    rows = con.execute("SELECT issued_us, upload_done_us, enqueued_us, compute_start_us, compute_end_us, "
                       "departed_us, download_done_us, applied_us FROM adaptations WHERE status='ok'").fetchall()
    assert rows and all(list(r) == sorted(r) and r[0] < r[-1] for r in rows)
    # an applied edit is in use by the device's next prediction
    used = con.execute("SELECT COUNT(*) FROM predictions WHERE method='persona-s' AND edit_seq > 0").fetchone()[0]
    assert used > 0
    # Persona (m) assigns each request to one of the 2 group prototypes; Persona (s) has only the global one.
    protos = dict(con.execute("SELECT method, GROUP_CONCAT(DISTINCT prototype_id) FROM adaptations "
                              "WHERE status='ok' GROUP BY method").fetchall())
    assert protos["persona-s"] == "0" and set(protos["persona-m"].split(",")) <= {"0", "1"}
    # model mode: a batch of B takes base + B × (per request + per prototype × N_M), exactly; one worker
    # computes one batch at a time, so some requests queue, and batches of two (max_batch) form.
    batches = con.execute("SELECT compute_start_us, compute_end_us, COUNT(*) FROM adaptations "
                          "WHERE method='persona-m' GROUP BY compute_start_us ORDER BY compute_start_us").fetchall()
    assert all(end - start == (400 + n * (50 + 0.5 * 2)) * 1000 for start, end, n in batches)
    assert {n for _, _, n in batches} == {1, 2}
    assert all(b[0] >= a[1] for a, b in zip(batches, batches[1:]))
    queued = con.execute("SELECT COUNT(*) FROM adaptations WHERE compute_start_us > enqueued_us").fetchone()[0]
    assert queued > 0


def test_inproc_and_sharded_runs_give_the_same_results(grpc_run, tmp_path):
    scenario, out, _ = grpc_run
    assert main(["run", str(scenario), "--out", str(tmp_path / "a"), "--transport", "inproc", "--quiet"]) == 0
    assert main(["run", str(scenario), "--out", str(tmp_path / "b"), "--transport", "inproc", "--shards", "3",
                 "--quiet"]) == 0
    assert metrics_only(summary(tmp_path / "a")) == metrics_only(summary(out))
    assert metrics_only(summary(tmp_path / "b")) == metrics_only(summary(out))


def test_arrivals_reported_ahead_or_as_uploads_start_change_nothing_but_the_rounds(tiny_dict, tmp_path, monkeypatch):
    """On links of their own (no shared cell) a request's arrival is known when its upload starts, so a shard
    reports it then and the cloud's horizon moves an upload further each round; an idle device's next request
    is even known before it is issued, so it is reported ahead: the same simulation, for any sharding, in
    fewer rounds each time (far fewer where devices are mostly idle). Fewer reported ahead per round: more
    rounds, the same simulation."""
    from persona_sim.sim import simulation
    from persona_sim.sim.netsim import Network
    tiny_dict["network"] = {**tiny_dict["network"], "cell": None, "delay_ms": 20}
    tiny_dict["cloud"] = {**tiny_dict["cloud"], "base_ms": 1, "per_request_ms": 0.1}

    def run(name: str, mean_s: float, *extra: str) -> tuple[str, int]:
        tiny_dict["devices"]["arrivals"]["mean_s"] = mean_s
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tiny_dict))
        assert main(["run", str(path), "--out", str(tmp_path / name), "--transport", "inproc", "--quiet", *extra]) == 0
        with contextlib.closing(sqlite3.connect(tmp_path / name / "results.sqlite")) as con:
            rounds = con.execute("SELECT count(DISTINCT method || until_us) FROM rounds").fetchone()[0]
        return summary(tmp_path / name)["results_digest"], rounds
    busy = 0.02                                           # requests overlap round boundaries
    ahead, sharded, sparse = run("ahead", busy), run("sharded", busy, "--shards", "3"), run("sparse", 2.0)
    monkeypatch.setattr(simulation, "AHEAD_PER_ROUND", 2)                      # a few reported ahead per round
    capped = run("capped", 2.0)
    monkeypatch.setattr(simulation, "REPORT_AHEAD", False)                     # reported as uploads start
    early, early_sharded, sparse_early = run("early", busy), run("early-3", busy, "--shards", "2"), run("sp-e", 2.0)
    monkeypatch.setattr(Network, "exact_ends", property(lambda self: False))   # report on arrival, as in a cell
    late = run("late", busy)
    assert ahead[0] == sharded[0] == early[0] == early_sharded[0] == late[0] and sparse[0] == sparse_early[0]
    assert sharded[1] == ahead[1] <= early[1] < 0.95 * late[1], (ahead, early, late)
    assert sparse[1] < 0.5 * sparse_early[1], (sparse, sparse_early)
    assert capped[0] == sparse[0] and sparse[1] < capped[1] < sparse_early[1], (capped, sparse, sparse_early)


def test_edits_whose_values_come_later_change_nothing(tiny_dict, tmp_path, monkeypatch):
    """Edits sent pending, their values computed a few at a time in later rounds (or at the end, with 3 shards;
    or on a thread of their own, sent whenever they are done, as the cloud node does) simulate exactly what
    edits computed as their batches start do."""
    import functools

    from persona_sim.jobs import runner
    from persona_sim.sim import lockstep
    tiny_dict["devices"]["arrivals"]["mean_s"] = 0.05     # busy: many edits pending at once
    path = tmp_path / "busy.yaml"
    path.write_text(yaml.safe_dump(tiny_dict))

    def run(name: str, *extra: str) -> str:
        assert main(["run", str(path), "--out", str(tmp_path / name), "--transport", "inproc", "--quiet", *extra]) == 0
        return summary(tmp_path / name)["results_digest"]
    monkeypatch.setattr(lockstep, "FLUSH_ROWS", 3)
    later, sharded = run("later"), run("sharded", "--shards", "3")
    monkeypatch.setattr(runner, "Lockstep", functools.partial(lockstep.Lockstep, values_thread=True))
    threaded = run("threaded", "--shards", "2")
    monkeypatch.setattr(runner, "Lockstep", functools.partial(lockstep.Lockstep, defer_values=False))
    at_once = run("at-once")
    assert later == sharded == threaded == at_once
    with contextlib.closing(sqlite3.connect(tmp_path / "later" / "results.sqlite")) as con:
        assert con.execute("SELECT count(*) FROM adaptations WHERE status = 'ok'").fetchone()[0] > 20

@contextlib.contextmanager
def cloud_node(scenario: Path, tmp_path: Path, *extra: str):
    """`persona-sim cloud` on a free loopback port: yields its HOST:PORT; stopped by SIGTERM, which it survives."""
    port_file = tmp_path / "port"
    cloud = subprocess.Popen([sys.executable, "-m", "persona_sim.cli", "cloud", "--scenario", str(scenario),
                              "--listen", "127.0.0.1:0", "--port-file", str(port_file), "--quiet", *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            assert cloud.poll() is None, cloud.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield f"127.0.0.1:{port_file.read_text()}"
    finally:
        cloud.send_signal(signal.SIGTERM)
        cloud.wait(timeout=30)
    assert cloud.returncode == 0


def test_cloud_and_devices_started_by_hand_match_run(grpc_run, tmp_path):
    scenario, out, _ = grpc_run
    with cloud_node(scenario, tmp_path) as target:
        # the device node fetches the model from the cloud: give it an empty cache
        env = dict(os.environ, PERSONA_SIM_CACHE=str(tmp_path / "device-cache"))
        devices = subprocess.run([sys.executable, "-m", "persona_sim.cli", "devices", "--scenario", str(scenario),
                                  "--cloud", target, "--out", str(tmp_path / "manual"), "--quiet"],
                                 capture_output=True, text=True, timeout=180, env=env)
        assert devices.returncode == 0, devices.stderr
    assert metrics_only(summary(tmp_path / "manual")) == metrics_only(summary(out))
    assert list((tmp_path / "device-cache" / "fetched").glob("*.pt"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_nodes_over_mutual_tls_with_a_token_match_run(grpc_run, tmp_path):
    scenario, out, _ = grpc_run
    assert main(["certs", str(tmp_path / "pki")]) == 0
    pki = tmp_path / "pki"
    with cloud_node(scenario, tmp_path, "--tls-cert", str(pki / "cloud.pem"), "--tls-key", str(pki / "cloud.key"),
                    "--tls-client-ca", str(pki / "ca.pem"), "--token-file", str(pki / "token")) as target:
        base = [sys.executable, "-m", "persona_sim.cli", "devices", "--scenario", str(scenario), "--cloud", target,
                "--quiet", "--connect-timeout", "5", "--tls-ca", str(pki / "ca.pem")]
        no_cert = subprocess.run(base + ["--out", str(tmp_path / "refused")], capture_output=True, text=True,
                                 timeout=120)
        assert no_cert.returncode == 1 and "a client certificate if the cloud requires one" in no_cert.stderr
        base += ["--tls-cert", str(pki / "device.pem"), "--tls-key", str(pki / "device.key")]
        no_token = subprocess.run(base + ["--out", str(tmp_path / "refused")], capture_output=True, text=True,
                                  timeout=120)
        assert no_token.returncode == 1 and "UNAUTHENTICATED: missing bearer token" in no_token.stderr
        devices = subprocess.run(base + ["--out", str(tmp_path / "tls"), "--token-file", str(pki / "token")],
                                 capture_output=True, text=True, timeout=180)
        assert devices.returncode == 0, devices.stderr
    assert summary(tmp_path / "tls")["results_digest"] == summary(out)["results_digest"]


def test_same_seed_same_digest_other_seed_other_digest(tiny_file, tmp_path):
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert main(["run", str(tiny_file), "--out", str(tmp_path / name), "--seed", seed,
                     "--transport", "inproc", "--quiet"]) == 0
    digests = [summary(tmp_path / n)["results_digest"] for n in "abc"]
    assert digests[0] == digests[1] != digests[2]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_html_report_is_self_contained_with_its_plots(grpc_run):
    """The check a headless browser would make, without one on this machine: the page parses, every
    image is an embedded PNG of real size, nothing is fetched from elsewhere, the tables are there."""
    import base64
    from html.parser import HTMLParser

    _, out, _ = grpc_run

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.images, self.tables, self.links = [], 0, []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "img":
                self.images.append(attrs["src"])
            self.tables += tag == "table"
            self.links += [v for k, v in attrs.items() if k in ("href", "src") and not v.startswith("data:")]

    page = Page()
    page.feed((out / "report.html").read_text())
    assert page.tables >= 3 and not page.links
    assert len(page.images) == 6     # accuracy over time, around shifts, accuracy vs latency, RTT CDF, bytes, prototypes
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        width, height = _png_size(base64.b64decode(src.split(",", 1)[1]))
        assert width > 300 and height > 200


def _laid_out_images(box, found: list) -> list:
    if type(box).__name__ in ("InlineReplacedBox", "BlockReplacedBox"):
        found.append((box.width, box.height, type(box.replacement).__name__))
    for child in getattr(box, "children", None) or ():
        _laid_out_images(child, found)
    return found


def test_html_report_renders_with_its_plots_visible(grpc_run, tmp_path):
    """In the default run, where no browser need be installed, WeasyPrint (an HTML/CSS layout engine) renders
    the page: each plot must be decoded and laid out as an image box of real size (an image that fails to
    load becomes its alt text, and this fails), and the page prints to PDF. The slow test below uses a real
    headless Chromium."""
    try:
        import weasyprint
    except (ImportError, OSError) as exc:       # OSError: the Pango libraries it needs are missing
        pytest.skip(f"weasyprint unavailable: {exc}")
    _, out, _ = grpc_run
    document = weasyprint.HTML(filename=str(out / "report.html")).render()
    images = [i for page in document.pages for i in _laid_out_images(page._page_box, [])]
    assert len(images) == 6 and all(kind == "RasterImage" and w > 300 and h > 150 for w, h, kind in images)
    pdf = tmp_path / "report.pdf"
    document.write_pdf(pdf)
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 50_000


def test_compare_puts_runs_side_by_side(grpc_run, tmp_path, capsys):
    _, out, _ = grpc_run
    assert main(["run", str(grpc_run[0]), "--out", str(tmp_path / "s4"), "--seed", "4", "--transport", "inproc",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(out), str(tmp_path / "s4")]) == 0
    table = capsys.readouterr().out
    assert table.count("| persona-m |") == 2 and summary(out)["results_digest"][:12] in table
    assert main(["compare", str(tmp_path)]) == 1                      # not a run directory


def test_run_refuses_to_overwrite_recorded_results(grpc_run, capsys):
    scenario, out, _ = grpc_run
    before = (out / "results.sqlite").read_bytes()
    assert main(["run", str(scenario), "--out", str(out), "--transport", "inproc", "--quiet"]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert (out / "results.sqlite").read_bytes() == before


def test_report_rebuilds_from_results(grpc_run, tmp_path):
    _, out, _ = grpc_run
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in RUN_FILES:
        (copy / name).write_bytes((out / name).read_bytes())
    (copy / "report.md").unlink()
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.md").read_text() == (out / "report.md").read_text()


def test_devices_command_reports_a_refused_connection_at_once(tiny_file, tmp_path, capsys):
    t0 = time.perf_counter()
    code = main(["devices", "--scenario", str(tiny_file), "--cloud", "127.0.0.1:1", "--out", str(tmp_path / "x"),
                 "--quiet"])
    assert code == 1 and time.perf_counter() - t0 < 2.0
    assert "connection refused by 127.0.0.1:1: no cloud node listens there" in capsys.readouterr().err


def test_devices_command_reports_an_unreachable_cloud(tiny_file, tmp_path):
    from device_node.cli import probe

    probe("dns:///127.0.0.1:1")                        # targets of other forms are left to gRPC
    proc = cli("devices", "--scenario", str(tiny_file), "--cloud", "dns:///127.0.0.1:1", "--out",
               str(tmp_path / "x"), "--quiet", "--connect-timeout", "2", timeout=120)
    assert proc.returncode == 1 and "cannot reach the cloud node at dns:///127.0.0.1:1" in proc.stderr


SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_scenario_runs_at_tiny_scale(path, tmp_path, monkeypatch):
    """Each shipped scenario, shrunk to the tiny sizes, runs end to end in-process (sweeps through eval)."""
    from persona_sim.scenario.files import read_scenario_data
    from tests.conftest import TINY

    data = read_scenario_data(path)
    for section in ("dataset", "split", "model", "train", "eval"):
        data[section] = TINY[section]
    data["persona"] = {**data.get("persona", {}), **TINY["persona"]}
    data["devices"] = {**data.get("devices", {}), "count": TINY["devices"]["count"]}
    small = tmp_path / path.name
    small.write_text(yaml.safe_dump(data))
    simulation_only = all(k.split(".")[0] in ("network", "devices", "drift", "cloud") for k in data.get("sweep", {}))
    if "sweep" in data and simulation_only:          # a sweep of the simulation: one run per variant, compared
        assert main(["run", str(small), "--out", str(tmp_path / "sw"), "--transport", "inproc", "--quiet"]) == 0
        rows = json.loads((tmp_path / "sw" / "compare.json").read_text())["rows"]
        assert len({r["run"] for r in rows}) == math.prod(len(v) for v in data["sweep"].values())
    elif "sweep" in data:
        assert main(["eval", str(small), "--out", str(tmp_path / "ev"), "--quiet"]) == 0
        assert len(summary(tmp_path / "ev")["variants"]) > 1
    else:
        assert main(["run", str(small), "--out", str(tmp_path / "run"), "--transport", "inproc", "--quiet"]) == 0
        assert summary(tmp_path / "run")["methods"]


def test_shards_on_separate_disks_merge_into_the_single_machine_run(grpc_run, tmp_path, capsys):
    scenario, out, _ = grpc_run
    with cloud_node(scenario, tmp_path) as target:
        shards = [subprocess.Popen([sys.executable, "-m", "persona_sim.cli", "devices", "--scenario", str(scenario),
                                    "--cloud", target, "--shard", f"{i}/2", "--out", str(tmp_path / f"disk{i}"),
                                    "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for i in range(2)]
        outputs = [s.communicate(timeout=180) for s in shards]
        assert [s.returncode for s in shards] == [0, 0], outputs
    assert all("done: its results are in" in o for o, _ in outputs) and not any("waiting" in o for o, _ in outputs)
    assert main(["merge", str(tmp_path / "merged"), str(tmp_path / "disk0"), str(tmp_path / "disk1")]) == 0
    assert metrics_only(summary(tmp_path / "merged")) == metrics_only(summary(out))
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "half"), str(tmp_path / "disk1")]) == 2          # shard 0/2 is missing
    assert "shard(s) 0/2 not found" in capsys.readouterr().err


def test_devices_refuse_a_finished_out_without_force(grpc_run, capsys):
    scenario, out, _ = grpc_run
    code = main(["devices", "--scenario", str(scenario), "--cloud", "127.0.0.1:1", "--out", str(out), "--quiet"])
    assert code == 2 and "already holds results" in capsys.readouterr().err


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` now (from /proc)."""
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return kids | {g for k in kids for g in _children(k)}


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _run_until_serving(scenario: Path, out: Path) -> tuple[subprocess.Popen, set[int]]:
    """`persona-sim run` over gRPC, returned once its cloud serves and a device node has started."""
    run = subprocess.Popen([sys.executable, "-m", "persona_sim.cli", "run", str(scenario), "--out", str(out),
                            "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, children = time.monotonic() + 120, set()
    while time.monotonic() < deadline and run.poll() is None:
        children = _children(run.pid)
        if len(children) >= 2 and (out / ".cloud-port").exists():
            break
        time.sleep(0.02)
    assert run.poll() is None and len(children) >= 2, "the run ended before it could be interrupted"
    return run, children


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_sigterm_to_run_stops_every_child_and_leaves_no_stray_file(grpc_run, tmp_path):
    scenario, _, _ = grpc_run
    out = tmp_path / "term"
    run, children = _run_until_serving(scenario, out)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 143 and "terminated" in err
    assert not [pid for pid in children if _alive(pid)], "a child process outlived the run"
    assert not (out / ".cloud-port").exists() and not list(out.glob("*.tmp"))


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_run_ends_at_once_when_its_cloud_dies(grpc_run, tmp_path):
    scenario, _, _ = grpc_run
    out = tmp_path / "dead"
    run, children = _run_until_serving(scenario, out)
    cloud = next(pid for pid in children if "cloud_node" in Path(f"/proc/{pid}/cmdline").read_text())
    os.kill(cloud, signal.SIGKILL)
    t0 = time.monotonic()
    _, err = run.communicate(timeout=60)
    assert run.returncode == 1 and "the cloud node exited with code -9 while the device nodes ran" in err
    assert time.monotonic() - t0 < 10 and not [pid for pid in children if _alive(pid)]


def test_a_failed_run_keeps_finished_methods_and_resumes_to_the_same_digest(grpc_run, tmp_path, monkeypatch):
    from persona_sim.errors import NodeError
    from persona_sim.sim import simulation

    scenario, full, _ = grpc_run
    real = simulation.MethodRun.run

    async def failing(self, transport, progress=None):
        if self.method == "persona-m":
            raise NodeError("the cloud went away (injected)")
        return await real(self, transport, progress)
    monkeypatch.setattr(simulation.MethodRun, "run", failing)
    out = tmp_path / "r"
    assert main(["run", str(scenario), "--out", str(out), "--transport", "inproc", "--shards", "2", "--quiet"]) != 0
    partial = summary(out)
    assert list(partial["methods"]) == ["static", "persona-s"] and partial["complete"] is False
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    assert main(["report", str(out)]) == 0                                  # what finished is readable
    monkeypatch.setattr(simulation.MethodRun, "run", real)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0              # over gRPC, 2 device nodes
    resumed = summary(out)
    assert resumed["complete"] is True and resumed["results_digest"] == summary(full)["results_digest"]
    assert not list(out.glob("shard-*.sqlite"))
    assert main(["run", "--resume", str(out), "--quiet"]) == 1              # complete: nothing to resume


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cloud_on(scenario: Path, port: int, log: Path) -> subprocess.Popen:
    """`persona-sim cloud` on a fixed loopback port, logging into ``log``; returned once it serves."""
    port_file = log.with_suffix(".port")
    with log.open("w") as sink:
        cloud = subprocess.Popen([sys.executable, "-m", "persona_sim.cli", "cloud", "--scenario", str(scenario),
                                  "--listen", f"127.0.0.1:{port}", "--port-file", str(port_file), "--quiet"],
                                 stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not port_file.exists():
        assert cloud.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    return cloud


def test_a_cloud_killed_mid_run_and_restarted_lets_the_run_finish_with_the_same_digest(grpc_run, tmp_path):
    scenario, full, _ = grpc_run
    port, first_log = _free_port(), tmp_path / "cloud-1.log"
    cloud = _cloud_on(scenario, port, first_log)
    shards = [subprocess.Popen([sys.executable, "-m", "persona_sim.cli", "devices", "--scenario", str(scenario),
                                "--cloud", f"127.0.0.1:{port}", "--shard", f"{i}/2", "--out", str(tmp_path / f"d{i}"),
                                "--quiet", "--reconnect", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for i in range(2)]
    try:
        deadline = time.monotonic() + 120
        while first_log.read_text().count("connected (shard") < 2 or "run of 'persona-s'" not in first_log.read_text():
            assert time.monotonic() < deadline and all(s.poll() is None for s in shards), first_log.read_text()
            time.sleep(0.005)
        cloud.kill()                                         # SIGKILL: nothing of its runs survives
        cloud.wait()
        time.sleep(0.5)                                      # the device nodes try, back off, try again
        cloud = _cloud_on(scenario, port, tmp_path / "cloud-2.log")
        outputs = [s.communicate(timeout=180) for s in shards]
    finally:
        cloud.kill()
        for s in shards:
            s.kill()
    assert [s.returncode for s in shards] == [0, 0], outputs
    assert all("reconnected to the cloud" in err for _, err in outputs), outputs
    assert main(["merge", str(tmp_path / "r"), str(tmp_path / "d0"), str(tmp_path / "d1")]) == 0
    assert summary(tmp_path / "r")["results_digest"] == summary(full)["results_digest"]


def test_a_device_machine_without_the_data_fetches_it_from_the_cloud(tiny_dict, tmp_path, capsys):
    from persona_sim.data.dataset import load_dataset
    from persona_sim.data.export import write_dataset
    from persona_sim.scenario.schema import parse_scenario

    synthetic = load_dataset(parse_scenario(tiny_dict, "tiny").dataset, tiny_dict["seed"])
    write_dataset(synthetic, "sequences", tmp_path / "data" / "sequences.txt")
    tiny_dict.pop("drift")                                      # a plain sequence file carries no categories
    tiny_dict["dataset"] = {"name": "tinyfile", "path": str(tmp_path / "data" / "sequences.txt")}
    scenario = tmp_path / "file.yaml"
    scenario.write_text(yaml.safe_dump(tiny_dict))
    assert main(["run", str(scenario), "--out", str(tmp_path / "local"), "--transport", "inproc", "--quiet"]) == 0
    with cloud_node(scenario, tmp_path) as target:
        env = dict(os.environ, PERSONA_SIM_CACHE=str(tmp_path / "bare-machine"))   # no bundle, no data
        devices = subprocess.run([sys.executable, "-m", "persona_sim.cli", "devices", "--scenario", str(scenario),
                                  "--set", f"dataset.path={tmp_path / 'elsewhere' / 'sequences.txt'}",
                                  "--cloud", target, "--out", str(tmp_path / "remote"), "--quiet"],
                                 capture_output=True, text=True, timeout=180, env=env)
        assert devices.returncode == 0, devices.stderr
        assert "fetching dataset" in devices.stderr
        assert list((tmp_path / "bare-machine" / "datasets").glob("*.npz"))
    assert summary(tmp_path / "remote")["results_digest"] == summary(tmp_path / "local")["results_digest"]


def test_a_packed_dataset_round_trips_and_anything_else_is_refused(tiny_world, tmp_path):
    import io

    import numpy as np

    from persona_sim.data.packed import pack, unpack
    from persona_sim.errors import DatasetError

    _, dataset, _, _, _ = tiny_world
    back = unpack(pack(dataset), "here")
    assert back.fingerprint() == dataset.fingerprint() and back.num_items == dataset.num_items
    assert (back.item_category == dataset.item_category).all()
    hostile = io.BytesIO()
    np.savez(hostile, meta=np.array([{"format": "x"}], dtype=object))        # needs unpickling: refused
    for data in (b"not a zip", hostile.getvalue()):
        with pytest.raises(DatasetError, match="from-the-wire: not a packed dataset"):
            unpack(data, "from-the-wire")


PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-probe', JSON.stringify({
    overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    images: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length}));
});
</script>"""


@pytest.mark.slow
@pytest.mark.parametrize("width", [1280, 800])
def test_report_in_a_real_browser_fits_the_window_and_shows_every_plot(grpc_run, tmp_path, width):
    """Headless Chromium (`apt-get install -y chromium`) loads report.html at a window width: nothing wider
    than the window, every image decoded; a screenshot is kept next to the copy for a person to look at."""
    import html
    import re

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium here (apt-get install -y chromium)")
    _, out, _ = grpc_run
    page = tmp_path / "run"
    shutil.copytree(out, page)
    (page / "probe.html").write_text((page / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000"]
    dom = subprocess.run(flags + [f"--window-size={width},1000", "--dump-dom", (page / "probe.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    probe = json.loads(html.unescape(found.group(1)))
    assert probe["overflow"] <= 0 and probe["images"] == probe["loaded"] == 6, probe
    shot = page / f"report-{width}.png"
    subprocess.run(flags + [f"--window-size={width},4200", f"--screenshot={shot}", (page / "report.html").as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 100_000


def test_run_over_several_seeds_reports_means_spreads_and_bands(tiny_file, tmp_path, capsys):
    out = tmp_path / "seeds"
    assert main(["run", str(tiny_file), "--seeds", "2", "--set", "methods=[static,persona-s]", "--out", str(out),
                 "--transport", "inproc", "--quiet"]) == 0
    data = json.loads((out / "seeds.json").read_text())
    runs = [summary(out / f"seed-{s}") for s in (3, 4)]
    assert data["seeds"] == [3, 4] and runs[0]["results_digest"] != runs[1]["results_digest"]
    ndcg = [r["methods"]["persona-s"]["ndcg@10"] for r in runs]
    row = data["methods"]["persona-s"]
    assert row["ndcg@10"]["mean"] == pytest.approx(sum(ndcg) / 2, abs=1e-6) and row["ndcg@10"]["n"] == 2
    assert row["ndcg@10"]["std"] == pytest.approx(abs(ndcg[0] - ndcg[1]) / 2**0.5, abs=1e-6)
    deltas = [r["methods"]["persona-s"]["ndcg@10"] - r["methods"]["static"]["ndcg@10"] for r in runs]
    assert data["verdict"]["persona-s"]["delta"] == pytest.approx(sum(deltas) / 2, abs=1e-6)
    assert data["verdict"]["persona-s"]["delta_std"] == pytest.approx(abs(deltas[0] - deltas[1]) / 2**0.5, abs=1e-6)
    assert (out / "accuracy-over-time-seeds.png").stat().st_size > 0 and "± " in (out / "seeds.md").read_text()
    assert "Δ NDCG@10 vs static" in capsys.readouterr().out


@pytest.mark.slow
def test_run_on_a_real_local_ray_cluster_gives_the_local_digest(grpc_run, tmp_path):
    """A head and a worker node as separate `ray start` processes; the cloud and 3 shards placed on them.
    (`ray stop` at the end stops every Ray process of this machine.)"""
    pytest.importorskip("ray")
    scenario, local, _ = grpc_run
    ray_cli = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    try:
        for args in (["--head", f"--port={port}", "--include-dashboard=false"], [f"--address=127.0.0.1:{port}"]):
            subprocess.run([ray_cli, "start", "--num-cpus=1", *args], check=True, capture_output=True, env=env,
                           timeout=180)
        out = tmp_path / "ray"
        proc = cli("run", str(scenario), "--out", str(out), "--cluster", f"ray://127.0.0.1:{port}", "--shards", "3",
                   timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, env=env, timeout=120)
    s = summary(out)
    assert s["results_digest"] == summary(local)["results_digest"]
    assert s["cluster"]["nodes"] == 2 and len(s["cluster"]["shard_nodes"]) == 3
    assert "ray: 2 node(s)" in proc.stdout and not list(out.glob("shard-*.sqlite"))
