"""A task-kd job killed mid-epoch and started again ends where an uninterrupted job ends.

The real stage (``task_kd.run``) on the smoke preset, both phases: 2 Eq. 14 epochs of 4
steps, then 1 prediction-layer epoch of 4, a checkpoint every 3 steps. The job dies inside
a training step (the step's update not applied), once in each phase; the rerun of the same
command must train only the steps after the last checkpoint and give the same per-step
log and the same final weights (fp32 tolerance) as a job that was never killed.

tests/test_training.py checks the same on a toy model through ``train`` itself; this one
also covers what the stage adds: its fingerprint inputs, both phases' checkpoint
directories, the RNG streams of dropout and batching restored from the checkpoint.
"""

import functools
import json

import pytest
import torch
from safetensors.torch import load_file

import kbert.training
from kbert.stages import task_kd
from kbert.training import TrainSettings
from helpers import SMOKE_STUDENT, SMOKE_TASK, one_thread, smoke_config, smoke_inputs

CHECKPOINT_EVERY = 3
PHASE_STEPS = (8, 4)  # Eq. 14: 2 epochs x 4 batches (32 rows, batch 8); prediction layer: 1 epoch


class Killed(Exception):
    """Stands in for SIGKILL: raised inside a training step."""


@pytest.fixture(scope="module")
def config():
    return smoke_config(epochs=2, max_steps=None, prediction_epochs=1)


@pytest.fixture(scope="module")
def inputs(config, tmp_path_factory):
    with one_thread():
        return smoke_inputs(config, tmp_path_factory.mktemp("inputs"))


@pytest.fixture
def steps(monkeypatch):
    """Checkpoint every CHECKPOINT_EVERY steps; ``steps.kill_at = k`` kills step k (counted
    over both phases); ``steps.trained`` counts the steps that were applied."""
    monkeypatch.setattr(task_kd, "TrainSettings", functools.partial(TrainSettings, checkpoint_every=CHECKPOINT_EVERY))
    counter = type("Steps", (), {"kill_at": None, "trained": 0})()
    real_step = kbert.training.backward_step

    def backward_step(*args, **kwargs):
        if counter.trained + 1 == counter.kill_at:
            raise Killed
        real_step(*args, **kwargs)
        counter.trained += 1

    monkeypatch.setattr(kbert.training, "backward_step", backward_step)
    return counter


def run_task_kd(config, inputs, out_dir):
    teacher, init = inputs
    with one_thread():
        task_kd.run(config, SMOKE_TASK, SMOKE_STUDENT, "no_general_kd", 0, str(init), str(teacher), str(out_dir))
    return (json.loads((out_dir / "train_log.json").read_text()),
            load_file(out_dir / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(config, inputs, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # the same checkpoint cadence: it is part of the fingerprint
        patch.setattr(task_kd, "TrainSettings", functools.partial(TrainSettings, checkpoint_every=CHECKPOINT_EVERY))
        return run_task_kd(config, inputs, tmp_path_factory.mktemp("uninterrupted") / "kd")


# (kill_at, steps the rerun trains): killed at step 7, Eq. 14 epoch 2's 3rd batch, the rerun
# continues from the step-6 checkpoint (mid-epoch); killed at step 12, the prediction
# phase's 4th step, it skips the finished Eq. 14 phase and continues from that phase's step 3.
@pytest.mark.parametrize("kill_at, retrained", [(7, 6), (12, 1)], ids=["eq14_phase", "prediction_phase"])
def test_killed_task_kd_resumes_to_the_uninterrupted_result(config, inputs, uninterrupted, steps, tmp_path,
                                                            kill_at, retrained):
    out = tmp_path / "kd"
    steps.kill_at = kill_at
    with pytest.raises(Killed):
        run_task_kd(config, inputs, out)
    assert steps.trained == kill_at - 1 and not out.exists()

    steps.kill_at, steps.trained = None, 0
    log, weights = run_task_kd(config, inputs, out)
    assert steps.trained == retrained  # resumed, not trained again from scratch

    want_log, want_weights = uninterrupted
    assert len(log) == len(want_log) == sum(PHASE_STEPS)
    for row, want in zip(log, want_log):
        assert row == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert weights.keys() == want_weights.keys()
    for name, want in want_weights.items():
        torch.testing.assert_close(weights[name], want, msg=lambda m: f"{name}: {m}")
