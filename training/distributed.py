"""torchrun / DistributedDataParallel helpers: the process's place in the job, process group
set-up, deterministic sharded epoch order, and cross-rank sums.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` in
the environment) :func:`init_distributed` joins the process group (nccl on CUDA, gloo on CPU);
without those variables everything runs as a single process and the helpers are no-ops.
"""

from __future__ import annotations

import gc
import importlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: ``rank`` of ``world_size`` processes, GPU ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files, shows progress and serves metrics."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None


def detect_dist_env() -> DistEnv:
    """The torchrun variables ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (single process when
    unset); ValueError when they are inconsistent."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(
            f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world_size}, "
            f"LOCAL_RANK={local_rank}"
        )
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank)


def init_distributed(device: torch.device) -> DistEnv:
    """Join the torchrun process group if there is one (nccl for CUDA devices, else gloo) and
    return this process's :class:`DistEnv`. On CUDA the caller should use
    ``cuda:<local_rank>`` (see :func:`process_device`)."""
    env = detect_dist_env()
    if env.is_distributed and not dist.is_initialized():
        # torch.distributed.nn binds ``group.WORLD`` as default arguments when it is imported.
        # Imported after the group exists (DistributedDataParallel imports it through
        # torch._dynamo), it keeps the group and its gloo threads alive past
        # destroy_process_group until interpreter exit, where a gloo thread releasing the last
        # tensor of a finished collective aborts the process (SIGABRT, "terminate called
        # without an active exception"). Imported before, it binds None.
        importlib.import_module("torch.distributed.nn")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group(backend, device_id=device)
        else:
            dist.init_process_group(backend)
    return env


def process_device(requested: str, env: DistEnv) -> torch.device:
    """The device of this process for ``--device`` auto | cpu | cuda | cuda:N: with several
    processes on CUDA, ``cuda:<local_rank>``."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise ValueError(f"not a torch device: {requested!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device type {device.type!r} (cpu, cuda)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available")
        if env.is_distributed:
            return torch.device("cuda", env.local_rank)
        if device.index is None:
            return torch.device("cuda", torch.cuda.current_device())
    return device


def cleanup_distributed() -> None:
    """Leave the process group (if one was joined) and stop its threads.

    Drop every DistributedDataParallel wrapper first (:meth:`training.loop.Trainer.close`):
    then the group's last reference goes here, its gloo threads are joined with the GIL
    released, and none is left running at interpreter exit (a gloo thread that releases a
    tensor there aborts the process). A group released last by a wrapper is destroyed with the
    GIL held, which deadlocks with a gloo thread waiting for it."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()  # wrappers caught in reference cycles let go of the group now
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics): each rank updates them
    from its own batches, and DDP only syncs them at the next training forward."""
    if dist.is_available() and dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def all_reduce_sums(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64; the values unchanged when
    single-process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of ``range(num_samples)`` that is a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


class EpochShardSampler(Sampler[int]):
    """DistributedSampler-style training order: per epoch a (seed, epoch) permutation of the
    data set, padded by wrapping around to a multiple of ``world_size``, rank r taking the
    positions r, r + world_size, ... Call :meth:`set_epoch` before each epoch;
    :meth:`set_start` skips the first items of the shard (resuming inside an epoch).
    Without shuffling the order is 0..n−1."""

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"the training set is empty (num_samples={num_samples})")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    @property
    def shard_size(self) -> int:
        """Items per rank and epoch (all ranks get the same number)."""
        return -(-self.num_samples // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start = 0

    def set_start(self, start: int) -> None:
        if not 0 <= start <= self.shard_size:
            raise ValueError(f"start {start} is not in [0, {self.shard_size}]")
        self.start = start

    def indices(self) -> list[int]:
        """This rank's items of the current epoch, from ``start`` on."""
        if self.shuffle:
            order = epoch_permutation(self.num_samples, self.seed, self.epoch)
        else:
            order = np.arange(self.num_samples)
        order = np.resize(order, self.shard_size * self.world_size)  # wraps around
        return order[self.rank :: self.world_size][self.start :].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return self.shard_size - self.start


def shard_indices(num_samples: int, env: DistEnv) -> list[int]:
    """Evaluation sharding without padding: rank r gets r, r + world_size, ... (every item is
    evaluated exactly once over all ranks)."""
    return list(range(env.rank, num_samples, env.world_size))
