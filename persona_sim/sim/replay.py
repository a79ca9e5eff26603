"""`cloud.compute: replay`: feed a logged run's measured cloud times back into virtual time.

A run records the measured wall time of every request's real computation (the
``wall`` table of results.sqlite). Replaying it charges each request the time
the logged run measured for the same (method, device, seq); a request the
logged run did not make (its timing differed, so a device's requests did too)
is charged that method's median. The result is deterministic for a given log.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

import numpy as np

from .. import methods
from ..errors import ScenarioError
from ..scenario.schema import Scenario


def replayed_times(scenario: Scenario) -> Callable | None:
    """job -> measured ns from the logged run, or None when the scenario does not replay."""
    if scenario.cloud.compute != "replay":
        return None
    source = Path(scenario.cloud.replay)
    db = source / "results.sqlite" if source.is_dir() else source
    if not db.is_file():
        raise ScenarioError(str(source), [("cloud.replay", "no results.sqlite of a finished run there", str(source))])
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT method, device_id, seq, cloud_compute_ns FROM wall").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ScenarioError(str(db), [("cloud.replay", f"not a results file ({exc})", str(db))]) from None
    finally:
        con.close()
    logged = {(m, d, s): ns for m, d, s, ns in rows}
    medians = {}
    for method in (m for m in scenario.methods if methods.get(m).asks_cloud):
        times = [ns for (m, _, _), ns in logged.items() if m == method]
        if not times:
            raise ScenarioError(str(db), [("cloud.replay", f"the logged run has no measured times for {method!r}",
                                           str(source))])
        medians[method] = int(np.median(times))
    return lambda job: logged.get((job.method, job.device_id, job.seq), medians[job.method])
