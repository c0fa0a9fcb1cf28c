"""Each equal-size family's initialisation, measured on held-out text (issue 18, "why the winner wins").

    PYTHONPATH=. python workflow/scripts/measure_init_output_error.py [config/config.yaml] [--out CSV]

For every student of the config's equal-size sweep (``equal_size.students`` and the
Kronecker students they match) this compresses the pre-trained teacher as the compress
stage does and measures, per matrix group (attention, FFN, word embedding; mean over the
group's factorised matrices):

- the weight error ||W_init - W||_F / ||W||_F (what ``init_error.csv`` reports), and
- the held-out output error ||(W_init - W) X^T||_F / ||W X^T||_F on the teacher's own inputs X
  to that matrix over the 64 held-out calibration windows of 128 tokens (the data-aware
  init's measure, kbert/calibration.py: the same windows, never fitted here);

and, per student, the relative error of the final hidden state on those windows. Dense
(TinyBERT-style) students start from random weights at another width: no row.
"""

import argparse
import time

import pandas as pd
import torch

from kbert.calibration import calibration_stats, data_error, final_state_error
from kbert.config import load_config, stage_settings
from kbert.report.equal_size import matrix_group
from kbert.stages.compress import CONFIG_SECTIONS, _calibration
from kbert.students import FACTORISED, compress
from kbert.teachers import load_pretrained


def sweep_students(config: dict) -> list[str]:
    """The equal-size students and the Kronecker students they match, Kronecker first."""
    rivals = config["equal_size"]["students"]
    matched = [config["students"][name]["match"] for name in rivals if config["students"][name].get("match")]
    return list(dict.fromkeys(matched + rivals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", default="config/config.yaml")
    parser.add_argument("--out", help="CSV, one row per student and matrix group")
    args = parser.parse_args()
    torch.set_grad_enabled(False)  # measurements only
    config = load_config(args.config)
    teacher = load_pretrained(config["teacher"])
    _, heldout = _calibration(config, {"corpus": config["general_kd"]["corpus"], "source": config["data"]["source"]})
    print(f"held-out windows: {tuple(heldout.shape)} token ids")
    stats, rows = {}, []
    for name in sweep_students(config):
        started = time.time()
        picked = stage_settings(config, CONFIG_SECTIONS, student=name)
        if picked["student"].get("family") == "dense":
            print(f"{name}: dense, random init at another width: no output error")
            continue
        student, report = compress(teacher, picked["student"], picked.get("matched_student"))
        factorised = {n: m for n, m in student.named_modules() if isinstance(m, FACTORISED)}
        missing = [n for n in factorised if n not in stats]
        if missing:  # the teacher's inputs to each matrix, once per matrix name
            stats.update(calibration_stats(teacher, teacher, missing, heldout))
        dense = dict(teacher.named_modules())
        errors = pd.DataFrame([{"group": matrix_group(n), "weight_error": report["relative_error"][n],
                                "output_error": data_error(dense[n].weight, m.weight, stats[n])}
                               for n, m in factorised.items()])
        hidden = final_state_error(student, teacher, heldout)
        for group, part in errors.groupby("group"):
            rows.append({"model": name, "family": report["family"], "params": report["params"], "group": group,
                         "matrices": len(part), "weight_error": part["weight_error"].mean(),
                         "output_error": part["output_error"].mean(), "final_hidden_error": hidden})
        means = errors.groupby("group")[["weight_error", "output_error"]].mean()
        print(f"{name} ({report['family']}, {report['params']:,} parameters): "
              + "; ".join(f"{g} weight {r.weight_error:.3f} output {r.output_error:.3f}" for g, r in means.iterrows())
              + f"; final hidden {hidden:.3f} ({time.time() - started:.0f} s)", flush=True)
    if args.out:
        pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
