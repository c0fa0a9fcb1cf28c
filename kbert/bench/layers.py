"""Layer benchmark: every Table-1 matrix shape, dense ``nn.Linear`` vs ``KroneckerLinear``.

    python -m kbert.bench layers [--tokens 4096] [--repeats 15] [--train-repeats 7]
                                 [--threads N] [--baseline] [--quick] [--out results/efficiency_layers.csv]

For each shape (W_Q/K/V/O, W1, W2 of KroneckerBERT_8 and KroneckerBERT_21 on BERT-base) and
the same random input of ``--tokens`` rows, one run times, interleaved round by round:

- inference: ``layer(x)`` under ``torch.inference_mode`` (bias included on both sides);
- training: forward + backward of ``layer(x)`` with gradients for x, the weights and bias.

speedup = median over rounds of dense time / Kronecker time; flop_bound = dense FLOPs /
Eq. 7 FLOPs; fraction_of_bound = speedup / flop_bound. ``--baseline`` adds the plain
two-GEMM contraction (plan ``generic``) for comparison.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kbert import REPO_ROOT
from kbert.bench import write_rows
from kbert.bench.timing import (
    config_defaults, environment, interleaved, iqr, median, paired_ratio, set_threads, tune_malloc,
)
from kbert.layers.flops import dense_flops
from kbert.layers.kronecker import KroneckerLinear

HIDDEN, INTERMEDIATE = 768, 3072  # BERT-base: the shapes of paper Table 1
EXTRA_COLUMNS = [
    "dense_ms_median", "dense_ms_iqr", "kron_ms_median", "kron_ms_iqr",
    "train_dense_ms_median", "train_dense_ms_iqr", "train_kron_ms_median", "train_kron_ms_iqr",
    "train_speedup", "train_fraction_of_bound", "baseline_ms_median", "baseline_fraction_of_bound",
    "in_features", "out_features", "a_shape", "b_shape", "order", "plan", "dense_flops", "env",
]


def table1_shapes(hidden: int = HIDDEN, intermediate: int = INTERMEDIATE) -> list[dict]:
    """One entry per distinct matrix shape of the Table-1 presets (W_Q, W_K, W_V, W_O share one)."""
    from kbert.students import PRESETS

    shapes = []
    for preset, spec in PRESETS.items():
        att, ffn = tuple(spec["attention_a_shape"]), tuple(spec["ffn_a_shape"])
        shapes.append({"subject": f"{preset}/attention", "in": hidden, "out": hidden, "a_shape": att})
        shapes.append({"subject": f"{preset}/ffn_w1", "in": hidden, "out": intermediate, "a_shape": ffn})
        shapes.append({"subject": f"{preset}/ffn_w2", "in": intermediate, "out": hidden, "a_shape": ffn[::-1]})
    return shapes


def _train_step(layer: nn.Module, x: torch.Tensor, g: torch.Tensor):
    def step():
        for p in layer.parameters():
            p.grad = None
        x.grad = None
        layer(x).backward(g)

    return step


def bench_shape(shape: dict, tokens: int, repeats: int, train_repeats: int, warmup: int, baseline: bool,
                plan: str | None = None, seed: int = 0) -> dict:
    """Time one matrix shape; returns one CSV row."""
    torch.manual_seed(seed)
    n_in, n_out, a_shape = shape["in"], shape["out"], tuple(shape["a_shape"])
    dense = nn.Linear(n_in, n_out)
    kron = KroneckerLinear(n_in, n_out, a_shape)
    if plan:
        kron.plan = plan
    x = torch.randn(tokens, n_in)
    fns = {"dense": lambda: dense(x), "kron": lambda: kron(x)}
    if baseline:
        generic = KroneckerLinear(n_in, n_out, a_shape, order=kron.order)
        generic.plan = "generic"
        fns["baseline"] = lambda: generic(x)
    with torch.inference_mode():
        t = interleaved(fns, repeats, warmup)

    row_train = {}
    if train_repeats > 0:
        xg = x.clone().requires_grad_(True)
        g = torch.randn(tokens, n_out)
        tt = interleaved({"dense": _train_step(dense, xg, g), "kron": _train_step(kron, xg, g)}, train_repeats, warmup)
        row_train = {
            "train_dense_ms_median": median(tt["dense"]) * 1e3, "train_dense_ms_iqr": iqr(tt["dense"]) * 1e3,
            "train_kron_ms_median": median(tt["kron"]) * 1e3, "train_kron_ms_iqr": iqr(tt["kron"]) * 1e3,
            "train_speedup": paired_ratio(tt["dense"], tt["kron"]),
        }

    d_flops, k_flops = dense_flops(n_out, n_in), kron.flops()
    bound = d_flops / k_flops
    speedup = paired_ratio(t["dense"], t["kron"])
    row = {
        "benchmark": "layers",
        "config": "bert-base-uncased",
        "subject": shape["subject"],
        "params": kron.num_parameters(),
        "flops": k_flops * tokens,
        "threads": torch.get_num_threads(),
        "batch": tokens,
        "seq_len": 1,
        "latency_ms_median": median(t["kron"]) * 1e3,
        "latency_ms_iqr": iqr(t["kron"]) * 1e3,
        "throughput_median": tokens / median(t["kron"]),
        "speedup": speedup,
        "flop_bound": bound,
        "fraction_of_bound": speedup / bound,
        "dense_ms_median": median(t["dense"]) * 1e3,
        "dense_ms_iqr": iqr(t["dense"]) * 1e3,
        "kron_ms_median": median(t["kron"]) * 1e3,
        "kron_ms_iqr": iqr(t["kron"]) * 1e3,
        **row_train,
        "in_features": n_in,
        "out_features": n_out,
        "a_shape": "x".join(map(str, kron.a_shape)),
        "b_shape": "x".join(map(str, kron.b_shape)),
        "order": kron.order,
        "plan": kron.plan,
        "dense_flops": d_flops * tokens,
    }
    if train_repeats > 0:
        row["train_fraction_of_bound"] = row["train_speedup"] / bound
    if baseline:
        row["baseline_ms_median"] = median(t["baseline"]) * 1e3
        row["baseline_fraction_of_bound"] = paired_ratio(t["dense"], t["baseline"]) / bound
    return row


def run(tokens: int = 4096, repeats: int = 15, train_repeats: int = 7, warmup: int = 2, threads: int | None = None,
        baseline: bool = False, subjects: list[str] | None = None, plan: str | None = None,
        malloc: bool = True, verbose: bool = True) -> list[dict]:
    set_threads(threads)
    if malloc:
        tune_malloc()
    env = environment()
    rows = []
    for shape in table1_shapes():
        if subjects and shape["subject"] not in subjects:
            continue
        row = bench_shape(shape, tokens, repeats, train_repeats, warmup, baseline, plan)
        row["notes"] = (
            f"batch = {tokens} tokens; latency = Kronecker forward for all of them; throughput = tokens/s; "
            f"plan {row['plan']}; median of {repeats} interleaved rounds ({train_repeats} for training); "
            f"C kernels {'on' if env['native_kernel'] else 'off'}"
        )
        row["env"] = json.dumps(env, sort_keys=True)
        rows.append(row)
        if verbose:
            msg = (f"{row['subject']:<28} plan={row['plan']:<9} dense {row['dense_ms_median']:8.2f} ms  "
                   f"kron {row['kron_ms_median']:7.2f} ms  speedup {row['speedup']:5.2f} / bound "
                   f"{row['flop_bound']:5.2f} = {row['fraction_of_bound']:4.0%}")
            if "train_speedup" in row:
                msg += f" | train {row['train_speedup']:5.2f} = {row['train_fraction_of_bound']:4.0%}"
            if "baseline_ms_median" in row:
                msg += f" | generic {row['baseline_fraction_of_bound']:4.0%}"
            print(msg, flush=True)
    return rows


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog="python -m kbert.bench layers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096, help="rows of the input (batch 32 x seq 128)")
    parser.add_argument("--repeats", type=int, default=15, help="timed inference rounds per shape")
    parser.add_argument("--train-repeats", type=int, default=7, help="timed forward+backward rounds (0: skip)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--baseline", action="store_true", help="also time the plain two-GEMM contraction")
    parser.add_argument("--plan", default=None, help="force one contraction plan on every Kronecker layer")
    parser.add_argument("--subjects", nargs="*", default=None, help="only these subjects (e.g. kroneckerbert_8/attention)")
    parser.add_argument("--no-malloc-tuning", action="store_true", help="keep glibc's default allocator thresholds")
    parser.add_argument("--quick", action="store_true", help="a few seconds: 256 tokens, 2 repeats")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "efficiency_layers.csv")
    parser.add_argument("--config", default=None, help="take repeats/warmup/threads (and batch x seq_len tokens) from "
                        "this config's bench section; explicit flags win")
    defaults = config_defaults(argv, "bench_layers")
    if "batch" in defaults and "seq_len" in defaults:
        defaults["tokens"] = defaults["batch"] * defaults["seq_len"]
    if "repeats" in defaults:  # the config's repeats are for models; layers are cheap, time at least 15
        defaults["repeats"] = max(15, defaults["repeats"])
    parser.set_defaults(**{k: v for k, v in defaults.items() if k in ("tokens", "repeats", "warmup", "threads")})
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.repeats, args.train_repeats, args.warmup = min(args.tokens, 256), 2, 1, 1
    rows = run(args.tokens, args.repeats, args.train_repeats, args.warmup, args.threads, args.baseline,
               args.subjects, args.plan, not args.no_malloc_tuning)
    return write_rows(rows, EXTRA_COLUMNS, args.out)


if __name__ == "__main__":
    main()
