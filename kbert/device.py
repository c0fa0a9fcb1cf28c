"""Where and in which precision a job computes: the config's ``device`` and ``precision``.

``device``: ``auto`` (CUDA when present, else CPU) | ``cpu`` | ``cuda`` | ``cuda:N``.
``precision``: ``fp32`` | ``bf16`` | ``fp16`` | ``auto`` (bf16 on GPUs that have it and on
CPUs with native bf16 instructions, fp32 otherwise).

Mixed precision means autocast around the forward passes: matrix products run in the low
precision, the parameters and the optimizer stay fp32, and the losses cast their inputs
to fp32 (kbert/losses.py). fp16 (GPU only) adds a gradient scaler. Every bad value is
rejected here, before a model is built or a step is taken.

Data parallelism: a job launched by ``torchrun`` (the workflow does so when
``resources.gpu`` > 1) runs one process per GPU. Each process holds the whole model and
computes on its shard of every batch; the gradients are averaged across processes
before each optimizer step (``Runtime.shard``, ``Runtime.average_gradients``), so the
run trains as one process would at the same (global) batch size.
"""

from __future__ import annotations

import contextlib
import os
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
    rank: int = 0  # this process among ``world`` data-parallel ones (torchrun's RANK, WORLD_SIZE)
    world: int = 1

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints and outputs."""
        return self.rank == 0

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

    def shard(self, batch: dict) -> tuple[dict, float]:
        """This process's rows of a (global) batch, and their share of it.

        Rows are split into ``world`` contiguous parts (a short last batch of an epoch
        splits unevenly; the share weights each process's gradient accordingly).
        """
        if self.world == 1:
            return batch, 1.0
        rows = len(next(iter(batch.values())))
        if rows < self.world:
            raise ValueError(f"a batch of {rows} rows cannot be split over {self.world} processes")
        part = {k: v.tensor_split(self.world)[self.rank] for k, v in batch.items()}
        return part, len(next(iter(part.values()))) / rows

    def average_gradients(self, model: torch.nn.Module, share: float) -> None:
        """Replace every gradient by the share-weighted sum over processes: the global batch's gradient.

        One all-reduce of all gradients flattened together (the parameters with a gradient
        are the same in every process: same model, same code path).
        """
        if self.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads]) * share
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean_over_processes(self, value: float, share: float) -> float:
        """The share-weighted sum of a per-process loss value: the global batch's value."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        total = torch.tensor([value * share], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total)

    def gather(self, obj) -> list:
        """``obj`` of every process, in rank order (``[obj]`` for one process)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def runtime(config: dict, device: str | None = None, precision: str | None = None) -> Runtime:
    """The job's Runtime: the config's ``device``/``precision``, or the command line's when given.

    Under ``torchrun`` (WORLD_SIZE > 1) this also joins the process group (NCCL on GPUs,
    gloo on CPU) and gives each process its own GPU (LOCAL_RANK).
    """
    dev = resolve_device(device or config.get("device", "auto"))
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        import torch.distributed as dist

        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Runtime(dev, resolve_precision(precision or config.get("precision", "fp32"), dev), rank, world)


def check_batch_size(batch_size: int, rt: Runtime, where: str) -> None:
    """A global batch must split evenly over the processes; say so before any training step."""
    if batch_size % rt.world:
        raise ValueError(f"{where}: batch_size {batch_size} does not split over {rt.world} processes "
                         f"(resources.gpu); use a multiple of {rt.world}")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters live on (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))
