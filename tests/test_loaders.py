"""Loaders, k-core, attributes, catalogue lookup and fetch: every fixture written here, by the test."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from persona_sim.data.catalogue import Entry, fetch
from persona_sim.data.dataset import load_dataset, locate
from persona_sim.data.export import write_dataset
from persona_sim.data.loaders import detect_format, kcore_mask
from persona_sim.errors import DatasetError
from persona_sim.scenario.schema import DatasetSpec

# Three users; u2's lines are out of time order on purpose. Time order per user:
#   u1: a b c     u2: b a     u3: c
ROWS = [("u1", "a", 5, 100), ("u2", "a", 4, 300), ("u1", "b", 3, 200), ("u2", "b", 5, 250),
        ("u1", "c", 1, 300), ("u3", "c", 2, 50)]


def _seqs(ds) -> list[list[int]]:
    return [s.tolist() for s in ds.sequences]


def _load(path: Path, **kw):
    return load_dataset(DatasetSpec(name="t", path=str(path), **kw), seed=0)


@pytest.mark.parametrize("name,text", [
    ("r.csv", "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS)),
    ("h.csv", "user,item,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS)),
    ("u.data", "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ROWS)),
    ("ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ROWS)),
    ("x.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ROWS)),
    ("r2014.json", "".join(json.dumps({"reviewerID": u, "asin": i, "overall": float(r), "unixReviewTime": t,
                                       "reviewText": "fine"}) + "\n" for u, i, r, t in ROWS)),
    ("r2023.jsonl", "".join(json.dumps({"user_id": u, "parent_asin": i, "rating": float(r), "timestamp": t * 1000})
                            + "\n" for u, i, r, t in ROWS)),
])
def test_every_format_orders_by_time_and_numbers_by_first_appearance(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    ds = _load(path)
    # items numbered by first appearance in (user, time) order: a=1 b=2 c=3; users by first line
    assert _seqs(ds) == [[1, 2, 3], [2, 1], [3]]
    assert ds.num_items == 3 and ds.num_interactions == 6
    assert ds.timestamps is not None and ds.timestamps[1].tolist() == [250.0, 300.0]


def test_gzip_json_is_read_and_detected(tmp_path):
    path = tmp_path / "reviews_X_5.json.gz"
    with gzip.open(path, "wt") as out:
        for u, i, r, t in ROWS:
            out.write(json.dumps({"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t}) + "\n")
    assert detect_format(path) == "amazon-json"
    assert _seqs(_load(path)) == [[1, 2, 3], [2, 1], [3]]


def test_sequence_layout_keeps_item_ids(tmp_path):
    path = tmp_path / "sequences.txt"
    path.write_text("7 4 9 4\n8 2\n")
    ds = _load(path)
    assert _seqs(ds) == [[4, 9, 4], [2]] and ds.num_items == 9 and ds.timestamps is None


def test_min_rating_and_kcore(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS))
    assert _seqs(_load(path, min_rating=3)) == [[1, 2], [2, 1]]              # drops u1-c (1) and u3-c (2)
    # 2-core: u3 has one interaction -> gone; then c has one (u1) -> gone; a, b keep 2 each.
    assert _seqs(_load(path, kcore=2)) == [[1, 2], [2, 1]]
    with pytest.raises(DatasetError, match="no interactions left"):
        _load(path, kcore=3)


def test_kcore_iterates_until_stable():
    # A chain: removing user 2 (one item) drops item 2's count to 1, which removes it from user 1 too.
    users = np.array([0, 0, 1, 1, 2])
    items = np.array([0, 1, 0, 1, 2])
    assert kcore_mask(users, items, 2).tolist() == [True, True, True, True, False]
    users = np.array([0, 0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 2, 0, 1, 2, 3])
    # 2-core: item 3 (once) goes, then user 2 has one, goes; item 2 then has one (user 0), goes.
    assert kcore_mask(users, items, 2).tolist() == [True, True, False, True, True, False, False]


@pytest.mark.parametrize("name,text,where", [
    ("r.csv", "u1,a,5,100\nu1,b,five,200\n", r"r\.csv:2: rating must be a number, got 'five'"),
    ("r.csv", "u1,a,5,100\nu1,b\n", r"r\.csv:2: expected user,item,rating"),
    ("u.data", "1\t2\t3\t4\n1\t2\t3\tlate\n", r"u\.data:2: timestamp must be a number, got 'late'"),
    ("x.inter", "user_id:token\titem_id:token\n1\t2\n1\n", r"x\.inter:3: expected 2 tab-separated fields"),
    ("x.inter", "uid:token\titem_id:token\n1\t2\n", r"x\.inter:1: header needs user_id"),
    ("r.json", '{"reviewerID": "u", "asin": "a"}\n{"reviewerID": "u", "asin": \n', r"r\.json:2: not valid JSON"),
    ("r.json", '{"reviewerID": "u"}\n', r"r\.json:1: no item field"),
    ("sequences.txt", "1 2 3\n2 4 x\n", r"sequences\.txt:2: item ids are integers >= 1, got 'x'"),
])
def test_malformed_line_names_file_and_line(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DatasetError, match=where):
        _load(path)


def test_attributes_become_categories(tmp_path):
    d = tmp_path / "ml"
    d.mkdir()
    (d / "ratings.dat").write_text("1::10::5::1\n1::20::5::2\n2::30::4::3\n")
    (d / "movies.dat").write_text("10::A (1990)::Comedy|Drama\n20::B (1991)::Drama\n30::C (1992)::Comedy\n")
    ds = _load(d)
    assert ds.item_category.tolist() == [0, 1, 2, 1]     # 10 Comedy, 20 Drama, 30 Comedy
    meta = tmp_path / "meta_X.json"
    meta.write_text("{'asin': 'a', 'categories': [['Beauty', 'Makeup', 'Eyes']]}\n"
                    + json.dumps({"asin": "b", "category": ["Beauty", "Skin Care"]}) + "\n")
    csv = tmp_path / "r.csv"
    csv.write_text("u,a,5,1\nu,b,5,2\nv,c,5,3\n")
    ds = _load(csv, attributes=str(meta))
    assert ds.item_category.tolist() == [0, 1, 2, 0]      # a Makeup, b Skin Care, c unknown


def test_conversion_round_trip_is_identical(tmp_path):
    src = tmp_path / "sequences.txt"
    src.write_text("1 1 2 3\n2 3 4\n3 5 5 5 1\n")
    ds = _load(src)
    for fmt, name in [("amazon-csv", "a.csv"), ("amazon-json", "a.json.gz"), ("movielens", "u.data"),
                      ("movielens", "ratings.dat"), ("recbole", "a.inter"), ("sequences", "s.txt")]:
        write_dataset(ds, fmt, tmp_path / name)
        back = _load(tmp_path / name)
        assert (back.num_users, back.num_items, back.num_interactions) == (3, 5, 9), name
        # items are renumbered by first appearance, and these ids already are: the same sequences
        assert back.fingerprint() == ds.fingerprint(), name


def test_missing_named_dataset_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_SIM_DATA", str(tmp_path))
    with pytest.raises(DatasetError) as err:
        locate(DatasetSpec(name="movielens-1m"))
    msg = str(err.value)
    assert str(tmp_path / "movielens-1m") in msg and "persona-sim data fetch movielens-1m" in msg
    monkeypatch.delenv("PERSONA_SIM_DATA")
    with pytest.raises(DatasetError, match="PERSONA_SIM_DATA are all unset"):
        locate(DatasetSpec(name="amazon-beauty"))


def test_named_dataset_found_through_catalogue_files(tmp_path, monkeypatch):
    d = tmp_path / "movielens-100k" / "ml-100k"
    d.mkdir(parents=True)
    (d / "u.data").write_text("1\t5\t3\t10\n1\t6\t4\t11\n")
    monkeypatch.setenv("PERSONA_SIM_DATA", str(tmp_path))
    path, fmt = locate(DatasetSpec(name="movielens-100k"))
    assert path == d / "u.data" and fmt == "movielens"


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **kw: _Files(*a, directory=str(root), **kw)   # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_checks_the_publishers_md5_and_extracts(http_dir, tmp_path):
    root, url = http_dir
    with zipfile.ZipFile(root / "ml.zip", "w") as z:
        z.writestr("ml/u.data", "1\t5\t3\t10\n")
    md5 = hashlib.md5((root / "ml.zip").read_bytes()).hexdigest()
    (root / "ml.zip.md5").write_text(f"{md5}  ml.zip\n")
    entry = Entry("ml-test", "test", (("ml/u.data", "movielens"),), "home", url=f"{url}/ml.zip",
                  checksum_url=f"{url}/ml.zip.md5")
    path, checked = fetch(entry, tmp_path / "data")
    assert "MD5 matches" in checked and (tmp_path / "data" / "ml-test" / "ml" / "u.data").exists()
    (root / "ml.zip.md5").write_text("0" * 32 + "  ml.zip\n")
    with pytest.raises(DatasetError, match="does not match the publisher's"):
        fetch(entry, tmp_path / "data2")
    assert not (tmp_path / "data2" / "ml-test" / "ml.zip").exists()


def test_fetch_unreachable_is_a_clear_error(tmp_path, http_dir):
    _, url = http_dir
    entry = Entry("x", "x", (("a", "movielens"),), "home", url=f"{url}/nothing-here.zip")
    with pytest.raises(DatasetError, match="cannot download .*nothing-here.zip"):
        fetch(entry, tmp_path)


def test_data_commands_print_counts_convert_and_fail_clearly(tmp_path, capsys, monkeypatch):
    from persona_sim.cli import main

    src = tmp_path / "amazon-x" / "sequences.txt"
    src.parent.mkdir()
    src.write_text("1 1 2 3\n2 3 4\n3 5 5 5 1\n")
    assert main(["data", "info", str(src.parent)]) == 0
    out = capsys.readouterr().out
    assert "3 users, 5 items, 9 interactions" in out and "p50 3" in out
    assert main(["data", "convert", str(src), "--to", "recbole", str(tmp_path / "x.inter")]) == 0
    assert main(["data", "info", str(tmp_path / "x.inter"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert (info["users"], info["items"], info["interactions"]) == (3, 5, 9)
    monkeypatch.setenv("PERSONA_SIM_DATA", str(tmp_path))
    assert main(["data", "info", "amazon-x"]) == 0
    assert main(["data", "info", "movielens-1m"]) == 3
    assert "persona-sim data fetch movielens-1m" in capsys.readouterr().err
    assert main(["data", "info", "synthetic", "--set", "synthetic.users=50", "--set", "synthetic.items=30"]) == 0
    assert "50 users, 30 items" in capsys.readouterr().out
