"""Progress bars on stderr (tqdm), as callbacks the core calls: (stage, done, total)."""
from __future__ import annotations

import sys
from typing import Callable

from tqdm import tqdm

Callback = Callable[[str, int, int], None]


def stage_progress(quiet: bool = False, position: int = 0, prefix: str = "") -> Callback:
    """One bar per stage name; a bar closes when its stage reaches its total."""
    bars: dict[str, tqdm] = {}

    def update(stage: str, done: int, total: int) -> None:
        if quiet:
            return
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=f"{prefix}{stage}", file=sys.stderr, position=position,
                                     leave=True, dynamic_ncols=True, mininterval=0.5)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update
