import platform
import subprocess
import sys

from persona_sim import runtime


def test_a_serving_process_keeps_freed_memory_and_collects_less_often():
    """In a process of its own (the settings last for the process's life): the collector's thresholds are
    raised and start-up's objects frozen; on glibc, malloc's thresholds are set (mallopt said yes) and the
    heap can be trimmed."""
    code = ("import gc, json; from persona_sim.runtime import release_free_memory, tune_for_serving; "
            "applied = tune_for_serving(); "
            "print(json.dumps([applied, gc.get_threshold(), gc.get_freeze_count(), release_free_memory()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    applied, thresholds, frozen, trimmed = __import__("json").loads(out)
    assert tuple(thresholds) == runtime.GC_THRESHOLDS and frozen > 1000
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert any(line.startswith("malloc: mmap threshold 32 MB") for line in applied) == glibc == trimmed
