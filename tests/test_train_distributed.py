"""Data-parallel meta-training (``metadip.train.distributed``) with gloo on the CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metadip.cli import main
from metadip.init import MetaInit
from metadip.train import TrainConfig
from metadip.train.distributed import Group, join
from metadip.train.run import train
from tests.test_train import _args, _records, images  # noqa: F401  (the images fixture)

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mean_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    # Process 0 averaged 2 tasks, process 1 one task: the result weighs them 2 : 1.
    count = 2 if rank == 0 else 1
    loss = torch.tensor(1.0 + rank, dtype=torch.float64)
    grads = {"a": torch.full((2, 3), 3.0 * (rank + 1), dtype=torch.float64), "b": torch.ones(4)}
    loss, grads = Group(rank, 2).mean(loss, grads, count)
    torch.save({"loss": loss, **grads}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_the_mean_weighs_each_process_by_its_task_count(tmp_path):
    out = str(tmp_path / "mean")
    mp.spawn(_mean_worker, args=(_free_port(), out), nprocs=2)
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        assert got["loss"].item() == pytest.approx((2 * 1.0 + 1 * 2.0) / 3)
        torch.testing.assert_close(
            got["a"], torch.full((2, 3), (2 * 3.0 + 6.0) / 3, dtype=torch.float64)
        )
        assert got["b"].dtype == torch.float32 and torch.all(got["b"] == 1)


def test_one_process_is_the_plain_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    group = join("cpu", meta_batch=1)
    assert (group.rank, group.world, group.writer) == (0, 1, True)
    assert group.share([1, 2, 3]) == [1, 2, 3]
    assert Group(1, 2).share([0, 1, 2, 3, 4]) == [1, 3]


def test_more_processes_than_tasks_is_an_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match=r"meta_batch \(2\) must be at least .* \(4\)"):
        join("cpu", meta_batch=2)


def test_educated_pretraining_refuses_torchrun(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="covers --method maml"):
        train(TrainConfig(method="educated", out=str(tmp_path / "e")))


@pytest.mark.slow
def test_two_gloo_processes_train_as_one_process_does(images, tmp_path):  # noqa: F811
    """The same meta-batch of 3 tasks in one process and shared by 2 torchrun processes
    (2 + 1 tasks): the same init after 3 outer steps, in float64."""
    # A SIREN has no normalization layer, so no parameter whose gradient is exactly zero:
    # Adam turns such a gradient's rounding noise into steps of size lr, which would
    # differ between the two runs while everything else agrees to 1e-13.
    opts = {
        "network": "siren",
        "num_fourier": 0,
        "inner_lr": 0.05,
        "meta_batch": 3,
        "outer_steps": 3,
        "dtype": "float64",
        "tasks": "denoise,cs",
    }
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_args(images, one, **opts)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    proc = subprocess.run(
        [*cmd, "-m", "metadip", *_args(images, two, **opts)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = MetaInit.load(one / "init.safetensors").tensors()
    b = MetaInit.load(two / "init.safetensors").tensors()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-10, atol=1e-12, msg=name)
    losses = [[r["loss"] for r in _records(out) if "loss" in r] for out in (one, two)]
    assert len(losses[0]) == 3
    assert losses[1] == pytest.approx(losses[0], rel=1e-10)
    # One writer: the log has each outer step once.
    assert [r["step"] for r in _records(two) if "loss" in r] == [1, 2, 3]
