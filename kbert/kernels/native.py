"""The C kernels in kbert/kernels/csrc/: built once per machine, loaded with ctypes.

Optional: without a C compiler (or with ``KBERT_NATIVE=0``) every pass runs as torch ops,
with the same numbers up to rounding. ``kernel`` hands out a kernel only for CPU float32 /
float64 tensors of one dtype; everything else (bf16, CUDA) takes the torch ops.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).with_name("csrc")
SOURCES = ("kron_passes.c", "kron_fused.c", "attention.c")  # compiled; they include the .h files

# -fassociative-math lets the compiler vectorise the sums; no -ffast-math (it would set
# flush-to-zero for the whole process and assume no NaNs).
_NATIVE_FLAGS = ["-O3", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno", "-fassociative-math",
                 "-fno-signed-zeros", "-fno-trapping-math"]
_TYPED_SIGNATURES = {  # kron_passes.h, one kernel per dtype: name: (pointer args, long args)
    "kbert_mid": (5, 4),
    "kbert_rows_to_planar": (3, 3),
    "kbert_planar_to_rows": (5, 3),
    "kbert_interleave": (3, 5),
    "kbert_deinterleave": (3, 5),
}
_F32_SIGNATURES = {  # float32 only: name: argument types (the thread count last)
    "kbert_planar2_f32": [ctypes.c_void_p] * 6 + [ctypes.c_long] * 6,
    "kbert_aplanar2_f32": [ctypes.c_void_p] * 6 + [ctypes.c_long] * 4,
    "kbert_scores_f32": [ctypes.c_void_p] * 4 + [ctypes.c_float] + [ctypes.c_long] * 5,
    "kbert_context_f32": [ctypes.c_void_p] * 3 + [ctypes.c_long] * 4,
}
_native_state: dict = {}


def native_lib():
    """The compiled C kernels, or None (no compiler, ``KBERT_NATIVE=0``, or any failure).

    Built once per machine with the system C compiler (< 1 s) into ``$KBERT_NATIVE_DIR``
    (default ``~/.cache/kbert/native``), keyed by source, compiler and CPU flags. The
    kernels use the OpenMP runtime torch already loaded, with torch's thread count.
    """
    if "lib" in _native_state:
        return _native_state["lib"]
    _native_state["lib"] = None
    if os.environ.get("KBERT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        _native_state["lib"] = _build_native()
        _native_state["wide"] = bool(_native_state["lib"].kbert_wide_vectors())
    except Exception as error:  # fall back to torch ops, and say so once
        _native_state["error"] = repr(error)
        warnings.warn(f"kbert: C kernels for Kronecker layers unavailable ({error}); using torch ops", stacklevel=3)
    return _native_state["lib"]


def _source_key() -> str:
    """Every C file under csrc/, names and contents: a change anywhere rebuilds."""
    return "\0".join(f"{path.name}\0{path.read_text()}" for path in sorted(CSRC.glob("*.[ch]")))


def _build_native():
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler on PATH")
    flags = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([_source_key(), " ".join(_NATIVE_FLAGS), cc, version, flags,
                                    platform.machine()]).encode())
    root = Path(os.environ.get("KBERT_NATIVE_DIR") or Path.home() / ".cache" / "kbert" / "native")
    so = root / f"kbert_kron_{key.hexdigest()[:16]}.so"
    if not so.exists():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            out = Path(tmp) / so.name
            cmd = [cc, *_NATIVE_FLAGS, *(str(CSRC / name) for name in SOURCES), "-o", str(out)]
            run = subprocess.run(cmd[:1] + ["-march=native"] + cmd[1:], capture_output=True, text=True, timeout=120)
            if run.returncode != 0:  # some compilers reject -march=native
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if run.returncode != 0:
                raise RuntimeError(f"{cc} failed: {run.stderr.strip()[-300:]}")
            os.replace(out, so)  # atomic: concurrent builders race harmlessly
    lib = ctypes.CDLL(str(so))
    for name, (pointers, longs) in _TYPED_SIGNATURES.items():
        for suffix in ("f32", "f64"):
            fn = getattr(lib, f"{name}_{suffix}")
            fn.argtypes = [ctypes.c_void_p] * pointers + [ctypes.c_long] * longs + [ctypes.c_int]
            fn.restype = None
    for name, argtypes in _F32_SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes + [ctypes.c_int]
        fn.restype = None
    lib.kbert_wide_vectors.argtypes, lib.kbert_wide_vectors.restype = [], ctypes.c_int
    return lib


def native_available() -> bool:
    """Whether the C kernels are in use (see ``native_lib``)."""
    return native_lib() is not None


def kernel(name: str, *tensors: torch.Tensor | None):
    """The kron_passes.h kernel ``name`` for these tensors' dtype, or None (use torch ops)."""
    lib = native_lib()
    dtype = next(t for t in tensors if t is not None).dtype
    if lib is None or dtype not in (torch.float32, torch.float64):
        return None
    if any(t is not None and (t.device.type != "cpu" or t.dtype != dtype) for t in tensors):
        return None
    return getattr(lib, f"{name}_{'f32' if dtype == torch.float32 else 'f64'}")


def f32_kernel(name: str, *tensors: torch.Tensor | None):
    """The float32-only kernel ``name`` when every given tensor is a CPU float32 one, else None.

    Only where the library was compiled with 512-bit vectors (``kbert_wide_vectors``): these
    one-pass kernels keep arrays of 16-float accumulators, which spill to the stack on AVX2,
    where they measured 4-30x slower than torch's ops (docs/efficiency.md).
    """
    lib = native_lib()
    if lib is None or not _native_state.get("wide") or any(t is not None and (t.dtype != torch.float32 or t.device.type != "cpu") for t in tensors):
        return None
    return getattr(lib, name)


def ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()
