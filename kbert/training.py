"""The training loop every stage shares: AdamW with linear warm-up/decay, a progress bar
with each loss term, a checkpoint every epoch (and every ``checkpoint_every`` steps) that a
killed job resumes from, and a hard stop on a NaN/inf loss.

A checkpoint carries the fingerprint of what produced it (the recipe's inputs, the
training settings, the parameter shapes); one that does not match, or does not load, is
discarded with one line and the run starts fresh, so a resumed run never continues
another run's weights.

A recipe supplies ``batches(epoch)`` (deterministic for a given epoch, so a resumed run
sees the same batches) and ``step_loss(batch) -> (loss, {term: value})``.
"""

from __future__ import annotations

import math
import os
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from kbert.device import Runtime
from kbert.artifacts import atomic_path, sha256_json

CHECKPOINT = "checkpoint.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    """Use the job's thread budget (Snakemake ``threads``), not every core of the machine."""
    threads = threads or int(os.environ.get("KBERT_THREADS", 0)) or torch.get_num_threads()
    torch.set_num_threads(threads)


@dataclass
class TrainSettings:
    epochs: int
    lr: float
    steps_per_epoch: int
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_steps: int | None = None  # stop early (general KD budget); None = all epochs
    checkpoint_every: int = 200  # steps; an epoch end always checkpoints
    grad_clip: float = 1.0


class NonFiniteLoss(FloatingPointError):
    pass


def _optimizer(model: torch.nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    # BERT convention: no weight decay on biases and LayerNorm weights.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr)


def _schedule(opt, total: int, warmup: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():  # dropout on a GPU draws from the CUDA generators
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def backward_step(loss, model, opt, scaler, grad_clip: float, runtime: Runtime | None = None, share: float = 1.0) -> None:
    """Backward pass, gradient averaging over data-parallel processes (``share``: this process's
    part of the batch), clipping and optimizer step; with fp16's scaler when there is one."""
    runtime = runtime or Runtime()
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        runtime.average_gradients(model, share)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        return
    scaler.scale(loss).backward()
    runtime.average_gradients(model, share)  # an overflow anywhere then reaches every process: all skip the step
    scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)  # skips the step when the scaled gradients overflowed
    scaler.update()


def run_fingerprint(model: torch.nn.Module, settings: TrainSettings, inputs) -> str:
    """What a checkpoint must match to be resumed: the recipe's ``inputs`` (its settings,
    init model, data), the training settings and every parameter's name and shape."""
    shapes = {name: list(p.shape) for name, p in model.state_dict().items()}
    return sha256_json({"inputs": inputs, "settings": asdict(settings), "shapes": shapes})


def _load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The checkpoint's state if it was made by this run, else None (said in one line)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated, corrupt or not a checkpoint: training restarts anyway
        print(f"discarding resume checkpoint {path}: unreadable ({type(err).__name__})", file=sys.stderr)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        print(f"discarding resume checkpoint {path}: made with other settings", file=sys.stderr)
        return None
    return state


def train(
    model: torch.nn.Module,
    batches: Callable[[int], Iterable[dict]],
    step_loss: Callable[[dict], tuple[torch.Tensor, dict[str, float]]],
    settings: TrainSettings,
    checkpoint_dir: str | os.PathLike,
    desc: str = "train",
    inputs=None,
    runtime: Runtime | None = None,
) -> list[dict]:
    """Train ``model`` in place; returns the per-step log ({step, epoch, loss, terms...}).

    If ``checkpoint_dir/checkpoint.pt`` was made by the same run (``inputs``: anything
    JSON-serialisable that identifies the recipe's settings, init model and data; see
    ``run_fingerprint``) the run continues from it, giving the same final weights as an
    uninterrupted run. ``runtime`` (default: CPU, fp32) is where the model already lives:
    each batch is moved there and ``step_loss`` runs under its autocast.
    """
    s = settings
    runtime = runtime or Runtime()
    scaler = runtime.grad_scaler()
    total = s.epochs * s.steps_per_epoch if s.max_steps is None else min(s.max_steps, s.epochs * s.steps_per_epoch)
    if total < 1:
        raise ValueError(f"{desc}: nothing to train on (0 steps: check the data and the epochs)")
    opt = _optimizer(model, s)
    sched = _schedule(opt, total, int(s.warmup_ratio * total))
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT
    step, log = 0, []
    fingerprint = run_fingerprint(model, s, inputs)
    state = _load_checkpoint(ckpt_path, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, log = state["step"], state["log"]
        _set_rng_state(state["rng"] if runtime.world == 1 else state["rng_per_rank"][runtime.rank])
        if scaler is not None and "scaler" in state:  # fp16: the loss scale it had learned
            scaler.load_state_dict(state["scaler"])

    def save() -> None:
        rng = runtime.gather(_rng_state())  # every process's generators, so each resumes its own stream
        if not runtime.is_main:  # one writer; the others wait at the barrier
            runtime.barrier()
            return
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "step": step, "log": log, "rng": rng[0], "fingerprint": fingerprint}
        if runtime.world > 1:
            state["rng_per_rank"] = rng
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)
        runtime.barrier()

    model.train()
    bar = tqdm(total=total, initial=step, desc=desc, dynamic_ncols=True, mininterval=2.0, disable=not runtime.is_main)
    start_epoch, skip = divmod(step, s.steps_per_epoch)
    for epoch in range(start_epoch, s.epochs):
        for i, batch in enumerate(batches(epoch)):
            if epoch == start_epoch and i < skip:
                continue  # already trained on before the interruption
            if step >= total:
                break
            batch, share = runtime.shard(runtime.to_device(batch))
            with runtime.autocast():
                loss, terms = step_loss(batch)
            # The global batch's values (one process: this one's), so every process stops together.
            value = runtime.mean_over_processes(loss.item(), share)
            terms = {k: runtime.mean_over_processes(v, share) for k, v in terms.items()}
            if not math.isfinite(value):
                shapes = {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")}
                raise NonFiniteLoss(
                    f"{desc}: non-finite loss {value} at step {step} (epoch {epoch}, batch {i}); "
                    f"terms {terms}; batch {shapes}. Lower the learning rate or check the inputs."
                )
            backward_step(loss, model, opt, scaler, s.grad_clip, runtime, share)
            sched.step()
            step += 1
            log.append({"step": step, "epoch": epoch, "loss": value, **terms})
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in log[-1].items() if k not in ("step", "epoch")}, refresh=False)
            if step % s.checkpoint_every == 0:
                save()
        save()
        if step >= total:
            break
    bar.close()
    model.eval()
    return log

