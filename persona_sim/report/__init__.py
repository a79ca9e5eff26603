"""What a run leaves behind: results storage and the digest (``results``), the
summary and recovery around shifts, report.md / report.html with plots, the
offline evaluation report, runs side by side (``compare``), and the run
directory's manifest and finalisation (``rundir``).

Reads results, never runs a simulation: may import ``train`` (for constants),
``methods``, ``data``, ``scenario`` and ``errors``; never ``sim``.
"""
