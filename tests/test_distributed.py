"""Data parallelism inside a job: 2 processes (gloo, CPU) train as 1 process at the same global batch."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from kbert.device import Runtime, check_batch_size, runtime
from kbert.training import TrainSettings, train

ROWS, BATCH = 61, 16  # the last batch of an epoch has 13 rows: an uneven 7 / 6 split over 2 processes
SETTINGS = dict(epochs=2, lr=1e-2, steps_per_epoch=4, checkpoint_every=3)


def _problem():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))  # no dropout
    g = torch.Generator().manual_seed(1)
    x = torch.randn(ROWS, 4, generator=g)
    y = x.sum(-1, keepdim=True)

    def batches(epoch):
        order = torch.randperm(ROWS, generator=torch.Generator().manual_seed(100 + epoch))
        for i in range(0, ROWS, BATCH):
            yield {"x": x[order[i:i + BATCH]], "y": y[order[i:i + BATCH]]}

    def step_loss(batch):
        loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
        return loss, {"mse": loss.item()}

    return model, batches, step_loss


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    rt = runtime({"device": "cpu", "precision": "fp32"})
    model, batches, step_loss = _problem()
    log = train(model, batches, step_loss, TrainSettings(**SETTINGS), out_dir, runtime=rt)
    if rt.is_main:
        torch.save({"log": log, "weights": model.state_dict()}, os.path.join(out_dir, "result.pt"))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_as_one_at_the_same_global_batch(tmp_path):
    model, batches, step_loss = _problem()
    single = train(model, batches, step_loss, TrainSettings(**SETTINGS), tmp_path / "one")
    (tmp_path / "two").mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two")), nprocs=2)
    double = torch.load(tmp_path / "two" / "result.pt", weights_only=False)
    assert [r["loss"] for r in double["log"]] == pytest.approx([r["loss"] for r in single], rel=1e-5)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(double["weights"][name], value, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "two" / "checkpoint.pt").exists()  # written by rank 0
    state = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=False)
    assert len(state["rng_per_rank"]) == 2


def test_a_batch_that_does_not_split_is_an_error_before_training():
    with pytest.raises(ValueError, match=r"task_kd: batch_size 30 does not split over 4 processes.*multiple of 4"):
        check_batch_size(30, Runtime(world=4), "task_kd")
    check_batch_size(32, Runtime(world=4), "task_kd")


def test_shards_cover_the_batch_with_their_shares():
    batch = {"x": torch.arange(13)}
    parts = [Runtime(rank=r, world=2).shard(batch) for r in range(2)]
    assert torch.equal(torch.cat([p["x"] for p, _ in parts]), batch["x"])
    assert [share for _, share in parts] == [7 / 13, 6 / 13]
