"""Memory and the collector: settings for a node process that serves rounds for long, and (``release_free_memory``)
free pages handed back by a run in process.

A round moves big buffers (a flush of edit values is 17 MB at Beauty size, copied a few times on each
end) and builds thousands of small objects (an edit, its dict and arrays, per device).

  - glibc's malloc gives big blocks back to the kernel as soon as they are freed: a block above the mmap
    threshold is unmapped, and the heap's top is trimmed past the trim threshold (both rise with the
    largest block freed so far, the first to 32 MB at most). The next round's buffers are then fresh
    pages, each faulted in and zeroed by the kernel: `perf` on `bench cloud`'s processes (2-core VM) put
    about a sixth of the load process's CPU in the kernel's page-fault path. Fixing both thresholds high
    keeps freed memory for the next round; the resident size stays at its peak instead. (protobuf's
    Python runtime calls malloc_trim every 10,000 message arenas it frees, which hands free pages back
    whatever the thresholds: ``persona_sim.wire.codec`` keeps its hot paths from building messages apart.)
  - The cyclic collector scans the youngest generation every 700 net allocations of tracked objects, so
    several times per round, and every object start-up built (the model, the dataset's indexes) on each
    full collection. Freezing what start-up built and collecting the young generation less often keeps
    its cost off the rounds.

Results never depend on these; only speed and resident memory do.
"""
from __future__ import annotations

import ctypes
import functools
import gc
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD = 32 << 20                         # glibc's largest (4 × 1024 × 1024 × sizeof(long))
TRIM_THRESHOLD = 256 << 20
GC_THRESHOLDS = (50_000, 20, 20)                  # Python's defaults: (700, 10, 10)


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """glibc, loaded once (``ctypes.util.find_library`` would run ``ldconfig`` on every call)."""
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        return ctypes.CDLL("libc.so.6")
    return None


def release_free_memory() -> bool:
    """Hand every free page of the heap back to the kernel (glibc's malloc_trim); False where there is no glibc.

    For a run in process, held to its memory (the 100,000-device run's 3 GB) rather than its speed: freed
    memory inside the heap stays the process's until trimmed. protobuf's Python runtime trimmed every 10,000
    message arenas it freed, which the codec's hot paths no longer build; the in-process transport trims
    every ``TRIM_EVERY_ROUNDS`` rounds instead (persona_sim.jobs.transport)."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def tune_for_serving() -> list[str]:
    """Apply the settings above to this process; returns what was set (glibc's part only on glibc)."""
    applied = []
    libc = _glibc()
    if libc is not None:
        if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
            applied.append(f"malloc: mmap threshold {MMAP_THRESHOLD >> 20} MB, trim threshold "
                           f"{TRIM_THRESHOLD >> 20} MB")
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    applied.append(f"gc: start-up objects frozen, thresholds {GC_THRESHOLDS}")
    return applied
