"""Plain SVD vs data-aware init on the configured teacher: weight and held-out output errors.

    PYTHONPATH=. python workflow/scripts/measure_data_aware_init.py [config/config.yaml]

Prints one row per student: the mean over factorised matrices of the relative weight error
and of the held-out output error of each init (data-aware: the fitted factors before the
safeguard; kept: what the student starts from), how many matrices kept the data-aware
factors, and the relative error of the final hidden state on the held-out windows.
"""

import sys
import time

from kbert.calibration import final_state_error
from kbert.students import compress
from kbert.config import load_config
from kbert.stages.compress import _calibration
from kbert.teachers import load_pretrained

STUDENTS = {  # the default preset's two Kronecker students, and explicit 2.6x shapes
    "kroneckerbert_8": {"target_compression": 7.7},
    "kroneckerbert_21": {"target_compression": 21},
    "explicit_2.6": {"attention_a_shape": [2, 3], "ffn_a_shape": [2, 2], "embedding_n": 2},
}


def main(path: str) -> None:
    config = load_config(path)
    teacher = load_pretrained(config["teacher"])
    fit, heldout = _calibration(config, "kroneckerbert_8")
    print(f"calibration: fit {tuple(fit.shape)}, held-out {tuple(heldout.shape)} token ids")
    print("student | CF | weight err svd / data-aware / kept | held-out output err svd / data-aware / kept"
          " | data-aware kept | final hidden err svd / kept | s")
    for name, spec in STUDENTS.items():
        started = time.time()
        plain, _ = compress(teacher, spec)
        aware, r = compress(teacher, {**spec, "init": "data_aware"}, calibration=(fit, heldout))
        kept_out = sum(r[f"output_error_{k}"][n] for n, k in r["init_kept"].items()) / len(r["init_kept"])
        print(f"{name} | {r['compression_factor']:.1f} | {r['weight_error_svd_mean']:.3f} / "
              f"{r['weight_error_data_aware_mean']:.3f} / {r['relative_error_mean']:.3f} | "
              f"{r['output_error_svd_mean']:.3f} / {r['output_error_data_aware_mean']:.3f} / {kept_out:.3f} | "
              f"{r['data_aware_kept']}/{len(r['init_kept'])} | {final_state_error(plain, teacher, heldout):.3f} / "
              f"{final_state_error(aware, teacher, heldout):.3f} | {time.time() - started:.0f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "config/config.yaml")
