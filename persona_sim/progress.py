"""Progress on stderr, as callbacks the core calls: (stage, done, total).

On a terminal, one tqdm bar per stage; elsewhere (a log file, a pipe, CI) plain
lines at 0 %, every 25 % and the end, so redirected output holds no cursor codes.
"""
from __future__ import annotations

import sys
from typing import Callable, TextIO

from tqdm import tqdm

Callback = Callable[[str, int, int], None]
UNITS = {"prototype": "epoch", "editor": "epoch", "groups": "epoch", "eval": "run"}   # else simulated events
LINE_STEPS = 4


def unit_of(stage: str) -> str:
    return UNITS.get(stage, "event")


def stage_progress(quiet: bool = False, position: int = 0, prefix: str = "", stream: TextIO | None = None) -> Callback:
    """One bar (or a few plain lines) per stage name; a stage closes when it reaches its total."""
    stream = stream or sys.stderr
    if quiet:
        return lambda stage, done, total: None
    if not stream.isatty():
        return _plain_lines(stream, prefix)
    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{prefix}{stage}", unit=unit_of(stage), file=stream,
                                     position=position, leave=True, dynamic_ncols=True, mininterval=0.5)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _plain_lines(stream: TextIO, prefix: str) -> Callback:
    shown: dict[str, int] = {}     # stage -> the last quarter printed

    def update(stage: str, done: int, total: int) -> None:
        step = LINE_STEPS if done >= total else (LINE_STEPS * done) // max(total, 1)
        if shown.get(stage, -1) >= step:
            return
        shown[stage] = step
        unit = unit_of(stage) + ("s" if total != 1 else "")
        print(f"{prefix}{stage}: {done}/{total} {unit}" + (" done" if done >= total else ""), file=stream, flush=True)

    return update
