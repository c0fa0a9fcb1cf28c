"""Where and in which precision a job computes: the config's ``device`` and ``precision``.

``device``: ``auto`` (CUDA when present, else CPU) | ``cpu`` | ``cuda`` | ``cuda:N``.
``precision``: ``fp32`` | ``bf16`` | ``fp16`` | ``auto`` (bf16 on GPUs that have it and on
CPUs with native bf16 instructions, fp32 otherwise).

Mixed precision means autocast around the forward passes: matrix products run in the low
precision, the parameters and the optimizer stay fp32, and the losses cast their inputs
to fp32 (kbert/losses.py). fp16 (GPU only) adds a gradient scaler. Every bad value is
rejected here, before a model is built or a step is taken.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

DEVICES = "auto | cpu | cuda | cuda:N"
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str = "auto") -> torch.device:
    """The torch device for a config value; an error naming the value when it cannot run here."""
    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise ValueError(f"device {spec!r} is not allowed; use {DEVICES}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {spec!r}: no CUDA GPU is visible here; use device: cpu (or auto)")
        if (device.index or 0) >= count:
            raise ValueError(f"device {spec!r}: only {count} CUDA GPU(s) visible (cuda:0..cuda:{count - 1})")
    return device


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
            return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def _has_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def resolve_precision(spec: str, device: torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for this device; an error naming the value when it cannot run here."""
    spec = str(spec).strip().lower()
    if spec not in PRECISIONS:
        raise ValueError(f"precision {spec!r} is not allowed; use one of {list(PRECISIONS)}")
    if spec == "auto":
        return "bf16" if _has_bf16(device) else "fp32"
    if spec == "bf16" and not _has_bf16(device):
        raise ValueError(f"precision 'bf16': {device} has no native bf16 (it would be emulated, slower than fp32); "
                         "use precision: fp32 (or auto)")
    if spec == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA GPU (device is {device}); on CPU use bf16, fp32 or auto")
    return spec


@dataclass(frozen=True)
class Runtime:
    """A resolved (device, precision) pair: what the training loop, evaluation and benchmarks follow."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"  # fp32 | bf16 | fp16 (resolved: never auto)

    def autocast(self):
        """The context for forward passes: autocast to the low precision, or nothing for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def to_device(self, batch: dict) -> dict:
        """The batch's tensors on this device (other values unchanged)."""
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def runtime(config: dict, device: str | None = None, precision: str | None = None) -> Runtime:
    """The job's Runtime: the config's ``device``/``precision``, or the command line's when given."""
    dev = resolve_device(device or config.get("device", "auto"))
    return Runtime(dev, resolve_precision(precision or config.get("precision", "fp32"), dev))


def autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast computes in on x's device, or None when autocast is off there."""
    kind = x.device.type
    if not torch.amp.is_autocast_available(kind) or not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters live on (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))
