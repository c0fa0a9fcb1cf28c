"""How much of the nearest-Kronecker error a function-preserving permutation removes (issue 13).

    python workflow/scripts/permutation_gain.py --config config/ladder.yaml --students kroneckerbert_8 kroneckerbert_21

Prints, per student, the mean relative Frobenius error of every factorised matrix with the
plain SVD and after each iteration of kbert.permutation.search, and the per-group means;
with --out, writes the same as JSON. No training: weights only.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from kbert import permutation
from kbert.config import load_config
from kbert.students import student_config
from kbert.teachers import load_pretrained


def group_of(name: str) -> str:
    """The matrix group of a factorised matrix's name (kbert.permutation.factorised_matrices)."""
    if "embeddings" in name:
        return "word embedding"
    return "attention" if ".attention." in name else "FFN"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--students", nargs="+", required=True)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.config)
    teacher = load_pretrained(config["teacher"])
    results = {}
    for student in args.students:
        started = time.time()
        spec = student_config(teacher.config, config["students"][student], teacher).kronecker
        _, report = permutation.search(teacher, spec, args.iterations, log=print)
        groups = {}
        for when in ("unpermuted", "permuted"):
            for name, error in report[f"relative_error_{when}"].items():
                groups.setdefault(group_of(name), {}).setdefault(when, []).append(error)
        summary = {g: {w: float(np.mean(v)) for w, v in by.items()} for g, by in groups.items()}
        results[student] = {"shapes": spec, "minutes": (time.time() - started) / 60, "groups": summary, **report}
        print(f"{student} {spec}: mean relative error {report['relative_error_mean_unpermuted']:.4f} -> "
              f"{report['relative_error_mean_by_iteration'][-1]:.4f} "
              f"({(time.time() - started) / 60:.1f} min)")
        for g, by in summary.items():
            print(f"  {g:15s} {by['unpermuted']:.4f} -> {by['permuted']:.4f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
