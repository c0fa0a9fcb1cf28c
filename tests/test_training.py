"""The shared training loop: it learns, it resumes to identical weights, it stops on NaN."""

import pytest
import torch

from kbert.device import Runtime
from kbert.training import CHECKPOINT, NonFiniteLoss, TrainSettings, train
from helpers import TOY_SETTINGS, toy_problem


def test_training_lowers_the_loss(tmp_path):
    model, batches, step_loss = toy_problem()
    log = train(model, batches, step_loss, TrainSettings(**TOY_SETTINGS), tmp_path)
    assert len(log) == 12
    assert log[-1]["loss"] < log[0]["loss"]


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    model, batches, step_loss = toy_problem()
    train(model, batches, step_loss, TrainSettings(**TOY_SETTINGS), tmp_path / "straight")

    # Interrupted run: stop after 7 steps (mid-epoch; last checkpoint at step 6).
    interrupted, batches2, step_loss2 = toy_problem()
    calls = {"n": 0}

    def dying_loss(batch):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return step_loss2(batch)

    with pytest.raises(KeyboardInterrupt):
        train(interrupted, batches2, dying_loss, TrainSettings(**TOY_SETTINGS), tmp_path / "resumed")
    resumed, batches3, step_loss3 = toy_problem(seed=123)  # a fresh process: different init
    log = train(resumed, batches3, step_loss3, TrainSettings(**TOY_SETTINGS), tmp_path / "resumed")
    assert len(log) == 12
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def _interrupted(checkpoint_dir, settings=TOY_SETTINGS, inputs=None, runtime=None):
    """Train until step 7 and die (the last checkpoint is at step 6)."""
    model, batches, step_loss = toy_problem()
    calls = {"n": 0}

    def dying_loss(batch):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return step_loss(batch)

    with pytest.raises(KeyboardInterrupt):
        train(model, batches, dying_loss, TrainSettings(**settings), checkpoint_dir, inputs=inputs, runtime=runtime)


def _assert_same_weights(a, b):
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("change", ["settings", "inputs", "shapes"])
def test_checkpoint_of_other_settings_is_discarded(tmp_path, capsys, change):
    """Killed at lr 1e-2, rerun at lr 5e-3 (or other recipe inputs, or other shapes): the
    rerun trains every step from scratch instead of returning the old run's weights."""
    _interrupted(tmp_path, inputs={"data": "a"})
    settings = {**TOY_SETTINGS, "lr": 5e-3} if change == "settings" else TOY_SETTINGS
    inputs = {"data": "b"} if change == "inputs" else {"data": "a"}
    width = 16 if change == "shapes" else 8
    straight, batches, step_loss = toy_problem(width=width)
    train(straight, batches, step_loss, TrainSettings(**settings), tmp_path / "straight", inputs=inputs)
    rerun, batches, step_loss = toy_problem(width=width)
    capsys.readouterr()
    log = train(rerun, batches, step_loss, TrainSettings(**settings), tmp_path, inputs=inputs)
    assert len(log) == 12 and log[0]["step"] == 1
    _assert_same_weights(straight, rerun)
    err = capsys.readouterr().err
    assert f"discarding resume checkpoint {tmp_path / 'checkpoint.pt'}: made with other settings" in err


def test_unreadable_checkpoint_is_discarded(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    model, batches, step_loss = toy_problem()
    assert len(train(model, batches, step_loss, TrainSettings(**TOY_SETTINGS), tmp_path)) == 12
    assert "discarding resume checkpoint" in capsys.readouterr().err


def test_nan_loss_stops_with_the_step_and_terms(tmp_path):
    model, batches, _ = toy_problem()

    def nan_loss(batch):
        loss = model(batch["x"]).sum() * float("nan")
        return loss, {"mse": float("nan")}

    with pytest.raises(NonFiniteLoss, match=r"step 0 .*terms \{'mse': nan\}"):
        train(model, batches, nan_loss, TrainSettings(**TOY_SETTINGS), tmp_path)


def test_zero_steps_is_an_error(tmp_path):
    model, batches, step_loss = toy_problem()
    with pytest.raises(ValueError, match="nothing to train on"):
        train(model, batches, step_loss, TrainSettings(epochs=1, lr=1e-3, steps_per_epoch=0), tmp_path)


class _ScaledRuntime(Runtime):
    """fp32 on CPU with fp16's gradient scaler, whose scale doubles every 2 clean steps:
    the scaler's state is then part of what a resumed run must restore."""

    def grad_scaler(self):
        return torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=2)


def test_resume_restores_the_gradient_scalers_loss_scale(tmp_path):
    model, batches, step_loss = toy_problem()
    train(model, batches, step_loss, TrainSettings(**TOY_SETTINGS), tmp_path / "straight", runtime=_ScaledRuntime())
    _interrupted(tmp_path / "resumed", runtime=_ScaledRuntime())
    resumed, batches, step_loss = toy_problem(seed=123)
    train(resumed, batches, step_loss, TrainSettings(**TOY_SETTINGS), tmp_path / "resumed", runtime=_ScaledRuntime())
    _assert_same_weights(model, resumed)
    straight_scale = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=False)["scaler"]["scale"]
    resumed_scale = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=False)["scaler"]["scale"]
    assert straight_scale == resumed_scale == 2.0**4 * 2 ** (12 // 2)  # a fresh scaler would end 3 doublings short
