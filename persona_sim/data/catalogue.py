"""Datasets persona-sim knows by name: which files to look for, and where the publisher serves them.

A named dataset lives in ``<data dir>/<name>/``; the entry lists the files that
may hold it, in order of preference, with their format. ``persona-sim data fetch``
downloads the publisher's file into that directory and checks it against a
checksum where one is known (a recorded SHA-256, or the MD5 file the publisher
serves beside the archive); with neither, the downloaded file's SHA-256 is
printed and written beside it, so later copies can be compared.
"""
from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DatasetError

SNAP = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
AMAZON_HOME = "https://cseweb.ucsd.edu/~jmcauley/datasets/amazon/links.html"
GROUPLENS = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    files: tuple[tuple[str, str], ...]    # (path inside the dataset directory, format), preferred first
    homepage: str
    url: str | None = None                # what `data fetch` downloads
    checksum_url: str | None = None       # the publisher's MD5 file for `url`
    sha256: str | None = None             # a recorded checksum of `url`
    kcore: int = 0                        # k-core applied when a scenario does not say
    attributes_url: str | None = None     # optional item metadata (categories)


def _amazon(name: str, title: str, category_file: str) -> Entry:
    return Entry(
        name, f"Amazon {title} reviews (McAuley et al. 2014), 5-core",
        (("sequences.txt", "sequences"), (f"reviews_{category_file}_5.json.gz", "amazon-json"),
         (f"ratings_{category_file}.csv", "amazon-csv")),
        AMAZON_HOME, url=f"{SNAP}/reviews_{category_file}_5.json.gz", kcore=5,
        attributes_url=f"{SNAP}/meta_{category_file}.json.gz")


CATALOGUE: dict[str, Entry] = {e.name: e for e in (
    _amazon("amazon-beauty", "Beauty", "Beauty"),
    _amazon("amazon-cds", "CDs and Vinyl", "CDs_and_Vinyl"),
    _amazon("amazon-electronics", "Electronics", "Electronics"),
    Entry("movielens-1m", "MovieLens 1M ratings (GroupLens)", (("ml-1m/ratings.dat", "movielens"),
                                                               ("ratings.dat", "movielens")),
          "https://grouplens.org/datasets/movielens/1m/", url=f"{GROUPLENS}/ml-1m.zip",
          checksum_url=f"{GROUPLENS}/ml-1m.zip.md5"),
    Entry("movielens-100k", "MovieLens 100K ratings (GroupLens)", (("ml-100k/u.data", "movielens"),
                                                                   ("u.data", "movielens")),
          "https://grouplens.org/datasets/movielens/100k/", url=f"{GROUPLENS}/ml-100k.zip",
          checksum_url=f"{GROUPLENS}/ml-100k.zip.md5"),
)}


def how_to_get(name: str) -> str:
    entry = CATALOGUE.get(name)
    if entry is None:
        return (f"'{name}' is not in the catalogue ({', '.join(CATALOGUE)}); point dataset.path at its file, "
                "or use dataset.name: synthetic, which runs anywhere")
    fetch = f"run `persona-sim data fetch {name}` (downloads {entry.url}), or " if entry.url else ""
    return f"{fetch}get it from {entry.homepage} and place one of {', '.join(f for f, _ in entry.files)} there"


def _download(url: str, dest: Path, timeout_s: float, progress: Callable[[int], None] | None) -> None:
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, part.open("wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                if progress:
                    progress(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        raise DatasetError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
    part.replace(dest)


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _expected_md5(entry: Entry, timeout_s: float) -> str | None:
    if not entry.checksum_url:
        return None
    try:
        with urllib.request.urlopen(entry.checksum_url, timeout=timeout_s) as resp:
            text = resp.read(4096).decode("ascii", "replace")
    except (urllib.error.URLError, OSError, TimeoutError):
        return None
    return text.split()[0].lower() if text.split() else None


def fetch(entry: Entry, data_dir: Path, timeout_s: float = 60.0,
          progress: Callable[[int], None] | None = None) -> tuple[Path, str]:
    """Download ``entry`` into ``data_dir/<name>/``; return the file and how it was checked."""
    if entry.url is None:
        raise DatasetError(f"{entry.name}: no download address is known; {how_to_get(entry.name)}")
    target_dir = data_dir / entry.name
    target_dir.mkdir(parents=True, exist_ok=True)
    dest = target_dir / entry.url.rsplit("/", 1)[1]
    _download(entry.url, dest, timeout_s, progress)
    sha = file_digest(dest, "sha256")
    if entry.sha256:
        if sha != entry.sha256:
            dest.unlink()
            raise DatasetError(f"{entry.url}: SHA-256 {sha} does not match the recorded {entry.sha256}; file removed")
        checked = f"SHA-256 matches the recorded {sha[:16]}…"
    elif (md5 := _expected_md5(entry, timeout_s)) is not None:
        got = file_digest(dest, "md5")
        if got != md5:
            dest.unlink()
            raise DatasetError(f"{entry.url}: MD5 {got} does not match the publisher's {md5}; file removed")
        checked = f"MD5 matches the publisher's {md5}"
    else:
        checked = f"no published checksum; SHA-256 {sha} written to {dest.name}.sha256"
    (target_dir / f"{dest.name}.sha256").write_text(f"{sha}  {dest.name}\n")
    if dest.suffix == ".zip":
        with zipfile.ZipFile(dest) as archive:
            archive.extractall(target_dir)
    return dest, checked
