"""Distributed helpers and a real 2-process DDP run (gloo on the CPU, started with torchrun):
both ranks must end with identical weights, only rank 0 writes the run files, and no gloo
thread outlives the run (one alive at interpreter exit aborted a rank at random)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import load_checkpoint
from training.distributed import (
    DistEnv,
    EpochShardSampler,
    all_reduce_sums,
    detect_dist_env,
    epoch_permutation,
    process_device,
    shard_indices,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_epoch_order_is_a_function_of_seed_and_epoch() -> None:
    a = epoch_permutation(50, seed=3, epoch=1)
    assert sorted(a.tolist()) == list(range(50))
    assert (a == epoch_permutation(50, seed=3, epoch=1)).all()
    assert not (a == epoch_permutation(50, seed=3, epoch=2)).all()
    assert not (a == epoch_permutation(50, seed=4, epoch=1)).all()


@pytest.mark.parametrize("n, world", [(10, 3), (2, 4), (8, 2)])
def test_shards_cover_the_epoch(n: int, world: int) -> None:
    shards = []
    for rank in range(world):
        sampler = EpochShardSampler(n, seed=1, rank=rank, world_size=world)
        sampler.set_epoch(5)
        shards.append(list(sampler))
        assert len(sampler) == -(-n // world)
    assert len({len(s) for s in shards}) == 1
    assert set().union(*map(set, shards)) == set(range(n))
    interleaved = [shards[r][i] for i in range(len(shards[0])) for r in range(world)]
    assert interleaved[:n] == epoch_permutation(n, 1, 5).tolist()

    sampler = EpochShardSampler(n, seed=1, rank=0, world_size=world)
    sampler.set_epoch(5)
    sampler.set_start(1)
    assert list(sampler) == shards[0][1:]
    sampler.set_epoch(6)  # a new epoch starts from its beginning
    assert len(list(sampler)) == len(shards[0])
    with pytest.raises(ValueError, match="start"):
        sampler.set_start(len(shards[0]) + 1)

    evaluated = sorted(i for r in range(world) for i in shard_indices(n, DistEnv(r, world, r)))
    assert evaluated == list(range(n))


def test_dist_env_from_torchrun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert detect_dist_env() == DistEnv(0, 1, 0)
    assert not detect_dist_env().is_distributed
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    env = detect_dist_env()
    assert env == DistEnv(3, 4, 1) and env.is_distributed and not env.is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="inconsistent torchrun environment"):
        detect_dist_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        detect_dist_env()
    assert all_reduce_sums([1.5, 2], torch.device("cpu")) == [1.5, 2.0]
    assert process_device("auto", DistEnv()).type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="unsupported device type"):
        process_device("meta", DistEnv())


def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path: Path) -> None:
    out, hashes = tmp_path / "run", tmp_path / "hashes"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # torchrun binds a free port itself: no race with parallel tests
        "--nproc-per-node",
        "2",
        str(REPO_ROOT / "tests" / "training" / "train_and_report_threads.py"),
        "arrow-plstm",
        "--arrow-scale", "0.25", "--dim", "16", "--depth", "2", "--heads", "2",
        "--train-samples", "40", "--val-samples", "12", "--test-samples", "6",
        "--batch-size", "8", "--epochs", "2", "--max-steps", "4", "--lr", "3e-3",
        "--workers", "0", "--device", "cpu", "--log-every", "1",
        "--out", str(out), "--weights-hash-dir", str(hashes),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0 = (hashes / "rank0.sha256").read_text().strip()
    rank1 = (hashes / "rank1.sha256").read_text().strip()
    assert len(rank0) == 64 and rank0 == rank1

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # written once (rank 0 only): 4 step rows, one epoch row per (partial) epoch, one final
    assert [r["step"] for r in rows if r["event"] == "step"] == [1, 2, 3, 4]
    epochs = [r for r in rows if r["event"] == "epoch"]
    # 40 samples / 2 ranks / 4 per rank = 5 steps per epoch: step 4 is inside epoch 1
    assert len(epochs) == 1 and epochs[0]["epoch"] == pytest.approx(0.8)
    assert epochs[0]["val_samples"] == 12  # sharded evaluation, summed over both ranks
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 4
    loaded = load_checkpoint(out / "best")
    assert loaded.metrics["test"]["num_samples"] == 6
    assert proc.stdout.count("checkpoint:") == 1  # only rank 0 reports
    # the process group was left completely: no gloo thread runs into interpreter exit
    for rank in (0, 1):
        assert f"rank {rank} gloo threads after the run: []" in proc.stdout, proc.stdout
