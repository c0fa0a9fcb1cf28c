"""The evaluate-ood stage: a trained task model on its task's out-of-distribution sets
(the paper's Table 9: PAWS for MRPC, IMDb for SST-2, HANS for RTE).

It reads a finished run (fine-tuned teacher or task KD) and writes a metrics.json that
is the run's own, with the OOD results in place of the in-distribution ones: aggregate
then files them under the same model, variant and seed, in ``results/ood.csv``. A stage
of its own, so that turning OOD evaluation on retrains nothing and a hub failure costs
no training run.
"""

from __future__ import annotations

import time
from pathlib import Path

from kbert.artifacts import provenance, sha256_json, stage_identity, stage_metrics, write_stage
from kbert.config import ood_splits, settings_record, stage_settings
from kbert.data.splits import ood_checksum
from kbert.device import runtime
from kbert.evaluate import evaluate_ood
from kbert.modeling import TASK_MODELS
from kbert.tasks import OOD_SPLITS, get_task
from kbert.teachers import teacher_hash, tokenizer_for

# The config this stage reads (kbert.config.stage_settings); its rule's rerun fingerprint hashes the same.
CONFIG_SECTIONS = ("ood", "data")

#: What the OOD record keeps of the evaluated run's metrics.json: which model it is.
RUN_KEYS = ("task", "model", "family", "variant", "augment", "seed", "params", "compression_factor", "flops",
            "teacher")


def run(config: dict, run_dir: str, out_dir: str) -> dict:
    started = time.time()
    record = stage_metrics(run_dir)
    task = record["task"]
    spec = get_task(task)
    s = stage_settings(config, CONFIG_SECTIONS, task=task)["ood"]
    names = ood_splits(config)[0].get(task)
    if not names:
        raise ValueError(f"{run_dir}: no OOD set of {task} is evaluated with this config (ood.splits "
                         f"{config['ood']['splits']}, data.source {config['data']['source']!r})")
    oods = [OOD_SPLITS[name][1] for name in names]
    rt = runtime(config)
    model = TASK_MODELS[spec.kind].from_pretrained(Path(run_dir) / "model").to(rt.device)
    results = evaluate_ood(model, task, oods, tokenizer_for(config["teacher"]), s, runtime=rt)
    metrics = {
        **{key: record[key] for key in RUN_KEYS if key in record},
        "results": results,
        "evaluated_run": stage_identity(run_dir, task=task),
        "provenance": provenance(config, started, teacher_hash(config["teacher"]),
                                 sha256_json([ood_checksum(ood) for ood in oods]), record.get("seed"),
                                 settings=settings_record(config, CONFIG_SECTIONS, task=task)),
    }
    write_stage(out_dir, metrics)
    return metrics
