"""Timing helpers shared by the benchmarks: interleaved repeats, medians, spreads, paired ratios.

The machine these benchmarks run on is small and shared, so every comparison is measured
*side by side*: one round times every contender once (in an order that alternates between
rounds), and a speedup is the median over rounds of the per-round ratio. Slow drifts in
background load then cancel, and one noisy round moves the median little.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

_MALLOC_SETTINGS: dict = {}


def tune_malloc() -> bool:
    """Keep freed large buffers in the process (glibc ``mallopt``), like jemalloc/tcmalloc do.

    glibc returns every buffer over 32 MB to the kernel when it is freed, so each forward
    pass page-faults its big activations back in (for a 4096 x 3072 float32 activation
    that costs more than the matrix product of a Kronecker layer). Applied to the whole
    benchmark process, so dense and Kronecker models run under the same allocator.
    Returns whether the setting took effect (False off glibc).
    """
    if "done" in _MALLOC_SETTINGS:
        return _MALLOC_SETTINGS["done"]
    ok = False
    try:
        name = ctypes.util.find_library("c")
        if name and platform.system() == "Linux":
            libc = ctypes.CDLL(name)
            M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
            ok = bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))
    except (OSError, AttributeError):
        ok = False
    _MALLOC_SETTINGS["done"] = ok
    return ok


def set_threads(threads: int | None) -> int:
    """Use ``threads`` intra-op threads (None: leave torch's default). Returns the count in use."""
    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def environment() -> dict:
    """What a timing depends on, for the notes column."""
    from kbert.kernels.native import native_available

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "native_kernel": native_available(),
        "malloc_tuned": bool(_MALLOC_SETTINGS.get("done")),
        "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    inner: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per call of every function, measured round-robin.

    Each of ``repeats`` rounds calls every function ``inner`` times back to back and
    records the mean; the order of the functions is reversed every other round. ``warmup``
    untimed rounds come first.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            fn = fns[name]
            start = clock()
            for _ in range(inner):
                fn()
            times[name].append((clock() - start) / inner)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def iqr(values: list[float]) -> float:
    """Inter-quartile range (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return float(q[2] - q[0])


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator[i] / denominator[i] (a speedup when numerator is the baseline)."""
    return median([a / b for a, b in zip(numerator, denominator) if b > 0])


def summary(values: list[float], scale: float = 1e3) -> dict:
    """Median, IQR, min and max of ``values`` times ``scale`` (default: seconds -> ms)."""
    return {
        "median": median(values) * scale,
        "iqr": iqr(values) * scale,
        "min": min(values) * scale,
        "max": max(values) * scale,
        "n": len(values),
    }


def config_defaults(argv: list[str] | None, rule: str) -> dict:
    """Benchmark settings from ``--config FILE`` (the workflow passes it), else {}.

    Maps the config's ``bench`` section (seq_len, batch, train_batch, repeats, warmup, threads; threads
    null = ``resources`` of ``rule``) to argument defaults; flags on the command line win.
    """
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return {}
    from kbert.config import load_config, resources

    config = load_config(known.config)
    bench = dict(config.get("bench") or {})
    out = {k: bench[k] for k in ("seq_len", "batch", "train_batch", "repeats", "warmup") if bench.get(k) is not None}
    threads = bench.get("threads") or resources(config, rule).get("threads")
    if threads:
        out["threads"] = int(threads)
    return out
