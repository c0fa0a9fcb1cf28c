"""The first training steps of the real stages, pinned: a change to what a stage trains on,
how it initialises, batches or weighs its loss terms fails here.

finetune-teacher, general-kd and task-kd (the Eq. 14 phase and the prediction-layer phase)
run through their ``run`` on the smoke preset (tiny random teacher, 32 MRPC rows, the
stages' fixed seeds, one thread); each step's loss and loss terms are read from the
``train_log.json`` the stage writes.

Tolerance: relative 1e-4 (absolute 1e-7 for near-zero terms). On one machine the values
repeat bit for bit; on another the float32 sums differ in their last bits (other SIMD
widths or BLAS, the C kernels or their torch fallback), about 1e-6 relative after a few
Adam steps. A changed recipe moves them by far more than 1e-4.

Regenerate GOLDEN (after an intended change, saying why in the commit message):

    PYTHONPATH=. HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python tests/stages/test_golden_losses.py
"""

import json
import tempfile
from pathlib import Path

import pytest

from kbert.stages import general_kd, task_kd
from helpers import SMOKE_STUDENT, SMOKE_TASK, one_thread, smoke_config, smoke_inputs

STEPS = 4  # smoke: max_steps 4 per stage; the prediction phase is one epoch of 32 rows at batch 8
TOLERANCE = dict(rel=1e-4, abs=1e-7)

# Stage (phase) -> its first STEPS train-log rows: {step, epoch, loss, each loss term}.
GOLDEN = {
    'finetune_teacher': [
        {'step': 1, 'epoch': 0, 'loss': 0.6935747, 'supervised': 0.6935747},
        {'step': 2, 'epoch': 0, 'loss': 0.6801952, 'supervised': 0.6801952},
        {'step': 3, 'epoch': 0, 'loss': 0.6869947, 'supervised': 0.6869947},
        {'step': 4, 'epoch': 0, 'loss': 0.6754065, 'supervised': 0.6754065},
    ],
    'general_kd': [
        {'step': 1, 'epoch': 0, 'loss': 1.111554, 'embedding': 0.3857366, 'attention': 0.0003144321, 'hidden': 0.7255028},
        {'step': 2, 'epoch': 0, 'loss': 1.107218, 'embedding': 0.3840716, 'attention': 0.0003072523, 'hidden': 0.7228395},
        {'step': 3, 'epoch': 0, 'loss': 1.115706, 'embedding': 0.3874989, 'attention': 0.0003128929, 'hidden': 0.7278941},
        {'step': 4, 'epoch': 0, 'loss': 1.087808, 'embedding': 0.378651, 'attention': 0.0002972134, 'hidden': 0.7088594},
    ],
    'task_kd': [
        {'step': 1, 'epoch': 0, 'loss': 2.430486, 'embedding': 0.3663837, 'attention': 0.000368919, 'hidden': 0.693904, 'logit': 0.6922761, 'supervised': 0.6775535},
        {'step': 2, 'epoch': 0, 'loss': 2.423029, 'embedding': 0.3738628, 'attention': 0.0003658686, 'hidden': 0.7000066, 'logit': 0.6922739, 'supervised': 0.6565205},
        {'step': 3, 'epoch': 0, 'loss': 2.429068, 'embedding': 0.3674257, 'attention': 0.0003627768, 'hidden': 0.6888756, 'logit': 0.6925523, 'supervised': 0.6798519},
        {'step': 4, 'epoch': 0, 'loss': 2.42479, 'embedding': 0.3739791, 'attention': 0.0003501691, 'hidden': 0.6971281, 'logit': 0.6927499, 'supervised': 0.6605832},
    ],
    'task_kd_prediction': [
        {'step': 1, 'epoch': 0, 'loss': 1.337336, 'logit': 0.6926501, 'supervised': 0.644686},
        {'step': 2, 'epoch': 0, 'loss': 1.350135, 'logit': 0.6929643, 'supervised': 0.6571708},
        {'step': 3, 'epoch': 0, 'loss': 1.370539, 'logit': 0.6928183, 'supervised': 0.677721},
        {'step': 4, 'epoch': 0, 'loss': 1.354545, 'logit': 0.6926638, 'supervised': 0.6618815},
    ],
}


def stage_logs(workdir: Path) -> dict[str, list[dict]]:
    """Run the stages in ``workdir`` on one thread; each stage's (phase's) first STEPS log rows."""
    config = smoke_config(prediction_epochs=1)
    with one_thread():
        teacher, init = smoke_inputs(config, workdir)
        general_kd.run(config, SMOKE_STUDENT, str(init), str(workdir / "general"))
        task_kd.run(config, SMOKE_TASK, SMOKE_STUDENT, "full", 0, str(workdir / "general"), str(teacher),
                    str(workdir / "task_kd"))

    def log(run):
        return json.loads((workdir / run / "train_log.json").read_text())

    kd = log("task_kd")
    return {"finetune_teacher": log("teacher")[:STEPS], "general_kd": log("general")[:STEPS],
            "task_kd": kd[:STEPS], "task_kd_prediction": kd[STEPS:2 * STEPS]}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return stage_logs(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("stage", list(GOLDEN))
def test_first_steps_match_the_golden_losses(logs, stage):
    got, want = logs[stage], GOLDEN[stage]
    assert [sorted(row) for row in got] == [sorted(row) for row in want], "other steps or loss terms"
    for row, golden in zip(got, want):
        assert row == pytest.approx(golden, **TOLERANCE), f"step {golden['step']}"


def golden_literal(logs: dict[str, list[dict]]) -> str:
    """``logs`` as the GOLDEN assignment above: one row a line, floats to float32's 7 digits."""
    def row(values):
        return "{" + ", ".join(f"{k!r}: {v:.7g}" if isinstance(v, float) else f"{k!r}: {v}" for k, v in values.items()) + "}"

    lines = [f"    {stage!r}: [\n" + "".join(f"        {row(r)},\n" for r in rows) + "    ]," for stage, rows in logs.items()]
    return "GOLDEN = {\n" + "\n".join(lines) + "\n}"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(golden_literal(stage_logs(Path(tmp))))
