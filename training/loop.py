"""The training loop: AdamW + warmup/cosine per step, bf16 autocast on CUDA, gradient clipping,
validation every epoch, best checkpoint on the validation score, a final evaluation of the best
weights on the test sets, metrics streamed to ``metrics.jsonl`` / a PNG / Prometheus, resumable
states, and DistributedDataParallel under torchrun.

Run directory (written by rank 0 only)::

    run.json         what was run (experiment + options), for ``--resume``
    metrics.jsonl    one JSON object per line: "step" rows (every ``log_every`` steps),
                     "epoch" rows, and a final "final" row with the test results
    curves.png       loss / accuracy (or RMSE) / lr per epoch, rewritten each epoch
    best/            the best checkpoint (models.checkpoint format) + curves.png
    last/            the resumable state: model.safetensors, optimizer.safetensors and
                     state.json (epoch, step, schedule, best score, history; no pickle)

Determinism: the training order is a pure function of (seed, epoch) (see
:class:`training.distributed.EpochShardSampler`) and the global torch RNG (dropout, drop path)
is re-seeded from (seed, step, rank) before every step, so a run resumed from ``last/``
reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from models.checkpoint import save_checkpoint, unwrap_model
from training.cuda_graph import GraphedTraining
from training.distributed import (
    DistEnv,
    EpochShardSampler,
    all_reduce_sums,
    broadcast_buffers,
    shard_indices,
)
from training.monitor import MetricsLog, TrainingMetrics, plot_curves
from training.schedule import (
    WarmupCosineSchedule,
    build_optimizer,
    flatten_optimizer_state,
    unflatten_optimizer_state,
)

TASKS = ("classification", "regression")
INPUT_KINDS = ("image", "graph")
EXPORT_DTYPES = {"fp32": None, "bf16": torch.bfloat16}
STATE_VERSION = 1
RUN_FILE = "run.json"
METRICS_LOG = "metrics.jsonl"
CURVES_FILE = "curves.png"
BEST_DIR = "best"
LAST_DIR = "last"


@dataclass
class RunSpec:
    """What to train (built by :mod:`training.experiments`).

    ``model`` is a registered model (``model_name`` rebuilds it from ``model.config``);
    image data sets yield ``(image [C,X,Y], label)``, graph data sets
    :class:`~training.data.molecules.GraphSample` (batched by ``collate_fn``);
    ``test_sets`` are evaluated with the best weights at the end (e.g. test, extrapolation);
    ``data_info[split]`` is added to that split's metrics.json entry (e.g. resolution).
    """

    experiment: str
    model: nn.Module
    model_name: str
    input_kind: str
    task: str
    labels: list[str]
    dataset: str
    train_set: Dataset
    val_set: Dataset
    test_sets: dict[str, Dataset] = field(default_factory=dict)
    collate_fn: Callable[[list[Any]], Any] | None = None
    input_spec: Any = None
    preprocessing: Any = None
    data_info: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for name, data in (("train_set", self.train_set), ("val_set", self.val_set)):
            if len(data) == 0:
                raise ValueError(f"{name} of {self.experiment!r} is empty")


@dataclass
class TrainConfig:
    """Optimisation and run settings. ``batch_size`` is global (split over the processes);
    ``warmup_steps`` (when set) replaces ``warmup_epochs``; ``max_steps`` stops early without
    changing the schedule (which always spans ``epochs``); ``amp`` None = bf16 autocast on
    CUDA only; ``cuda_graph`` None = CUDA graphs for image runs on one GPU
    (:class:`training.cuda_graph.GraphedTraining`); ``grad_clip`` None or 0 = off;
    ``log_every`` 0 = epoch rows only; ``patience`` N stops after N finished epochs without a
    better validation score (the schedule still spans ``epochs``), None = run every epoch."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None
    min_lr_factor: float = 1e-3
    grad_clip: float | None = 1.0
    seed: int = 0
    max_steps: int | None = None
    amp: bool | None = None
    cuda_graph: bool | None = None
    workers: int = 0
    log_every: int = 0
    export_dtype: str = "fp32"
    eval_batch_size: int | None = None
    progress: bool | None = None
    patience: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("workers", "log_every", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps}")
        if self.grad_clip is not None and not (
            math.isfinite(self.grad_clip) and self.grad_clip >= 0
        ):
            raise ValueError(f"grad_clip must be >= 0, got {self.grad_clip}")
        if self.export_dtype not in EXPORT_DTYPES:
            raise ValueError(
                f"export_dtype must be one of {list(EXPORT_DTYPES)}, got {self.export_dtype!r}"
            )
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be positive, got {self.eval_batch_size}")
        patience = self.patience
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
        ):
            raise ValueError(f"patience must be a positive integer, got {self.patience!r}")


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    best_score: float
    best_epoch: int
    best_dir: Path
    metrics: dict[str, Any]
    """The best checkpoint's metrics.json content."""
    steps: int
    epochs_completed: int
    weights_sha256: str
    """:func:`state_dict_sha256` of the final (last-step) weights."""


def state_dict_sha256(model: nn.Module) -> str:
    """sha256 over the (unwrapped) model's state dict: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(unwrap_model(model).state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)


def _json_dump(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


class _Sums:
    """Running sums of a loss / quality over samples (kept on the device: no sync per step)."""

    def __init__(self, device: torch.device) -> None:
        self.values = torch.zeros(3, dtype=torch.float64, device=device)

    def add(self, loss_sum: torch.Tensor, quality_sum: torch.Tensor, count: int) -> None:
        self.values[0] += loss_sum.detach().double()
        self.values[1] += quality_sum.detach().double()
        self.values[2] += count

    def load(self, values: list[float]) -> None:
        self.values = torch.tensor(values, dtype=torch.float64, device=self.values.device)

    def local(self) -> list[float]:
        return self.values.tolist()

    def reduced(self, device: torch.device) -> list[float]:
        return all_reduce_sums(self.local(), device)


class Trainer:
    """Trains ``spec.model`` with ``config`` into the run directory ``out_dir``.

    ``env`` is the process's place in a torchrun job (a single process by default; the caller
    joins the process group first, see :func:`training.distributed.init_distributed`);
    ``metrics`` optional Prometheus gauges (rank 0), ``run_config`` the JSON description of
    the run written to run.json; ``weights_hash_file`` (optional, every rank) receives
    :func:`state_dict_sha256` of the final weights.
    """

    def __init__(
        self,
        spec: RunSpec,
        config: TrainConfig,
        out_dir: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        env: DistEnv | None = None,
        metrics: TrainingMetrics | None = None,
        run_config: Mapping[str, Any] | None = None,
        weights_hash_file: str | os.PathLike | None = None,
    ) -> None:
        self.spec = spec
        self.config = config
        self.out_dir = Path(out_dir)
        self.device = torch.device(device)
        self.env = env or DistEnv()
        self.metrics = metrics if self.env.is_main else None
        self.run_config = dict(run_config or {})
        self.weights_hash_file = None if weights_hash_file is None else Path(weights_hash_file)
        self.amp = self.device.type == "cuda" if config.amp is None else config.amp
        self.model = unwrap_model(spec.model).to(self.device)
        if self.env.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model: nn.Module = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids
            )
        else:
            self.train_model = self.model
        use_graph = config.cuda_graph
        if use_graph is None:
            use_graph = (
                self.device.type == "cuda"
                and not self.env.is_distributed
                and spec.input_kind == "image"
            )
        if use_graph and (self.device.type != "cuda" or self.env.is_distributed):
            raise ValueError("cuda_graph needs a CUDA device and a single process")
        self.forward: Callable[..., torch.Tensor] = (
            GraphedTraining(self.model, amp=self.amp) if use_graph else self.train_model
        )
        if config.batch_size % self.env.world_size:
            raise ValueError(
                f"batch size {config.batch_size} is not divisible by the "
                f"{self.env.world_size} processes"
            )
        self.local_batch = config.batch_size // self.env.world_size
        self.sampler = EpochShardSampler(
            len(spec.train_set),
            seed=config.seed,
            rank=self.env.rank,
            world_size=self.env.world_size,
        )
        # A lone last sample would stop BatchNorm layers in training mode: it is skipped.
        shard = self.sampler.shard_size
        self.drop_last = shard > 1 and shard % self.local_batch == 1
        self.steps_per_epoch = (
            shard // self.local_batch if self.drop_last else -(-shard // self.local_batch)
        )
        total = config.epochs * self.steps_per_epoch
        warmup = (
            config.warmup_steps
            if config.warmup_steps is not None
            else round(config.warmup_epochs * self.steps_per_epoch)
        )
        self.optimizer = build_optimizer(self.model, config.lr, config.weight_decay)
        self.schedule = WarmupCosineSchedule(
            self.optimizer, min(warmup, total), total, config.min_lr_factor
        )
        self.step = 0
        self.epoch = 0
        self.batches_done = 0
        self.best_score = -math.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_metrics: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.elapsed_before = 0.0
        self.log = MetricsLog(self.out_dir / METRICS_LOG) if self.env.is_main else None
        self._train_loader: DataLoader | None = None
        self._resumed_sums = [0.0, 0.0, 0.0]
        self.closed = False

    # ------------------------------------------------------------------------------------------
    # Batches, loss, evaluation
    # ------------------------------------------------------------------------------------------

    def _loader(
        self,
        dataset: Dataset,
        sampler: Any,
        batch_size: int,
        persistent: bool = False,
        drop_last: bool = False,
    ) -> DataLoader:
        workers = self.config.workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=self.spec.collate_fn,
            pin_memory=self.device.type == "cuda",
            persistent_workers=persistent and workers > 0,
            drop_last=drop_last,
        )

    def _unpack(self, batch: Any) -> tuple[tuple[Any, ...], torch.Tensor, int]:
        """A loader batch → (model inputs on the device, targets, batch size)."""
        dev, nb = self.device, self.device.type == "cuda"
        if self.spec.input_kind == "image":
            images, labels = batch
            labels = torch.as_tensor(labels)
            return (images.to(dev, non_blocking=nb),), labels.to(dev, non_blocking=nb), len(labels)
        inputs = (
            batch.x.to(dev, non_blocking=nb),
            batch.edge_index.to(dev, non_blocking=nb),
            batch.batch.to(dev, non_blocking=nb),
            batch.num_graphs,
            batch.edge_attr.to(dev, non_blocking=nb),
        )
        if self.spec.task == "regression":
            if batch.targets is None:
                raise ValueError(f"{self.spec.dataset}: regression needs targets on every sample")
            targets = batch.targets
        else:
            targets = batch.labels
        return inputs, targets.to(dev, non_blocking=nb), batch.num_graphs

    def _loss(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean loss, loss sum, quality sum): correct predictions for classification,
        squared error for regression."""
        outputs = outputs.float()
        if self.spec.task == "classification":
            loss_sum = F.cross_entropy(outputs, targets, reduction="sum")
            quality = (outputs.argmax(-1) == targets).sum()
        else:
            if outputs.dim() != 2 or outputs.shape[1] != 1:
                raise ValueError(f"regression needs outputs [B,1], got {tuple(outputs.shape)}")
            loss_sum = F.mse_loss(outputs[:, 0], targets.float(), reduction="sum")
            quality = loss_sum.detach()
        return loss_sum / targets.shape[0], loss_sum, quality

    def _summary(self, sums: list[float], prefix: str) -> dict[str, float | int | None]:
        loss_sum, quality_sum, count = sums
        if count == 0:
            return {f"{prefix}_loss": None}
        out: dict[str, float | int | None] = {f"{prefix}_loss": loss_sum / count}
        if self.spec.task == "classification":
            out[f"{prefix}_accuracy"] = quality_sum / count
        else:
            out[f"{prefix}_rmse"] = math.sqrt(quality_sum / count)
        return out

    def score(self, summary: Mapping[str, Any], prefix: str = "val") -> float:
        """The model-selection score of a summary: accuracy, or −RMSE for regression."""
        if self.spec.task == "classification":
            return float(summary[f"{prefix}_accuracy"])
        return -float(summary[f"{prefix}_rmse"])

    @torch.no_grad()
    def evaluate(self, dataset: Dataset, prefix: str = "val") -> dict[str, Any]:
        """Mean loss and accuracy (or RMSE) of the current weights on ``dataset`` (sharded
        over the ranks, sums reduced); keys ``{prefix}_loss``, ``{prefix}_accuracy`` |
        ``{prefix}_rmse``, ``{prefix}_samples``."""
        was_training = self.model.training
        broadcast_buffers(self.model)  # every rank evaluates the same model
        self.model.eval()
        sums = _Sums(self.device)
        subset = Subset(dataset, shard_indices(len(dataset), self.env))
        batch_size = self.config.eval_batch_size or self.local_batch
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            for batch in self._loader(subset, None, batch_size):
                inputs, targets, n = self._unpack(batch)
                _, loss_sum, quality = self._loss(self.model(*inputs), targets)
                sums.add(loss_sum, quality, n)
        self.model.train(was_training)
        reduced = sums.reduced(self.device)
        return {**self._summary(reduced, prefix), f"{prefix}_samples": int(reduced[2])}

    # ------------------------------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------------------------------

    def _progress(self, loader: DataLoader, epoch: int) -> Any:
        enabled = self.config.progress
        if enabled is None:
            enabled = sys.stderr.isatty()
        return tqdm(
            loader,
            total=len(loader),
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not (enabled and self.env.is_main),
            dynamic_ncols=True,
            leave=False,
        )

    def _gpu_memory(self) -> dict[str, Any]:
        if self.device.type != "cuda":
            return {"gpu_memory_bytes": None}
        return {
            "gpu_memory_bytes": int(torch.cuda.max_memory_allocated(self.device)),
            "device": str(self.device),
        }

    def _emit(self, row: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(row)
        if self.metrics is not None:
            self.metrics.update(row)

    def _train_epoch(self, epoch: int, sums: _Sums, start_time: float) -> tuple[bool, int]:
        """Run the rest of ``epoch``: (False when ``max_steps`` stopped it early, samples seen
        by this process)."""
        cfg = self.config
        self.sampler.set_epoch(epoch)
        self.sampler.set_start(min(self.batches_done * self.local_batch, self.sampler.shard_size))
        if self._train_loader is None:  # one loader: its workers persist across epochs
            self._train_loader = self._loader(
                self.spec.train_set,
                self.sampler,
                self.local_batch,
                persistent=True,
                drop_last=self.drop_last,
            )
        loader = self._train_loader
        self.train_model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        window_start, window_samples = time.perf_counter(), 0
        bar = self._progress(loader, epoch)
        seen = 0
        for batch in bar:
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                return False, seen
            torch.manual_seed(_step_seed(cfg.seed, self.step, self.env.rank))
            inputs, targets, n = self._unpack(batch)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                outputs = self.forward(*inputs)
            loss, loss_sum, quality = self._loss(outputs, targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            self.optimizer.step()
            self.schedule.step()
            self.step += 1
            self.batches_done += 1
            sums.add(loss_sum, quality, n)
            seen += n
            window_samples += n
            if self.metrics is not None:
                self.metrics.steps_total.inc()
                self.metrics.step.set(self.step)
                self.metrics.learning_rate.set(self.schedule.get_last_lr()[0])
            if cfg.log_every and self.step % cfg.log_every == 0:
                now = time.perf_counter()
                rate = window_samples * self.env.world_size / max(now - window_start, 1e-9)
                row = {
                    "event": "step",
                    "epoch": epoch + self.batches_done / self.steps_per_epoch,
                    "step": self.step,
                    "lr": self.schedule.get_last_lr()[0],
                    **self._summary(sums.reduced(self.device), "train"),
                    "samples_per_second": rate,
                    "elapsed_s": self.elapsed_before + now - start_time,
                    **self._gpu_memory(),
                }
                self._emit(row)
                bar.set_postfix(loss=f"{row['train_loss']:.4f}", lr=f"{row['lr']:.2e}")
                window_start, window_samples = now, 0
        return True, seen

    def fit(self, resume: bool = False) -> TrainResult:
        """Train (continuing from ``out_dir/last`` when ``resume``), then evaluate the best
        weights on ``spec.test_sets`` and write the final checkpoint metrics."""
        if self.closed:
            raise RuntimeError("the trainer is closed")
        cfg = self.config
        if self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not resume and (self.out_dir / LAST_DIR).exists():
                raise ValueError(
                    f"{self.out_dir} already holds a run; resume it or choose another directory"
                )
            if not resume and self.log is not None:
                self.log.path.unlink(missing_ok=True)
            _json_dump(self.out_dir / RUN_FILE, self.run_config)
        if resume:
            self.load_state(self.out_dir / LAST_DIR)
        sums = _Sums(self.device)
        if resume and self.batches_done and self.env.is_main:
            sums.load(self._resumed_sums)  # global sums: held by rank 0 alone
        start_time = time.perf_counter()
        stopped = False
        while self.epoch < cfg.epochs and not stopped:
            epoch = self.epoch
            train_start = time.perf_counter()
            completed, local_samples = self._train_epoch(epoch, sums, start_time)
            train_time = time.perf_counter() - train_start
            stopped = not completed or (cfg.max_steps is not None and self.step >= cfg.max_steps)
            finished_epoch = self.batches_done >= self.steps_per_epoch
            epoch_sums = sums.reduced(self.device)
            train_summary = self._summary(epoch_sums, "train")
            samples = local_samples * self.env.world_size  # every rank gets equal batches
            val = self.evaluate(self.spec.val_set, "val")
            row = {
                "event": "epoch",
                "epoch": epoch + 1
                if finished_epoch
                else epoch + self.batches_done / self.steps_per_epoch,
                "step": self.step,
                "lr": self.schedule.get_last_lr()[0],
                **train_summary,
                **val,
                "samples_per_second": samples / max(train_time, 1e-9),
                "elapsed_s": self.elapsed_before + time.perf_counter() - start_time,
                **self._gpu_memory(),
            }
            score = self.score(val)
            if score > self.best_score:
                self.best_score, self.best_epoch = score, epoch
                self._keep_best(val)
            row["best"] = self.best_score
            self.history.append(row)
            self._emit(row)
            if finished_epoch:
                self.epoch += 1
                self.batches_done = 0
                sums = _Sums(self.device)
                epoch_sums = [0.0, 0.0, 0.0]
                stopped = stopped or self._plateaued()
            if self.env.is_main:
                self._plot()
                elapsed = self.elapsed_before + time.perf_counter() - start_time
                self.save_state(self.out_dir / LAST_DIR, epoch_sums, elapsed)
        self.elapsed_before += time.perf_counter() - start_time
        return self._finish()

    def _plateaued(self) -> bool:
        """True when ``patience`` finished epochs have passed since the best validation score
        (the same on every rank: the score is computed from reduced sums)."""
        patience = self.config.patience
        return patience is not None and self.epoch - (self.best_epoch + 1) >= patience

    def close(self) -> None:
        """Let go of the DistributedDataParallel wrapper (it holds the process group), CUDA
        graphs and the training loader's worker processes; call it when training is over, before
        :func:`training.distributed.cleanup_distributed`. The trainer cannot train afterwards;
        ``model`` stays usable."""
        self.closed = True
        self.train_model = self.forward = self.model
        self._train_loader = None

    # ------------------------------------------------------------------------------------------
    # Best checkpoint and the final evaluation
    # ------------------------------------------------------------------------------------------

    def _result_entry(self, split: str, summary: Mapping[str, Any], prefix: str) -> dict:
        entry = {
            "dataset": self.spec.dataset,
            "split": split,
            "seed": self.config.seed,
            "loss": summary[f"{prefix}_loss"],
            "num_samples": summary[f"{prefix}_samples"],
        }
        key = "accuracy" if self.spec.task == "classification" else "rmse"
        entry[key] = summary[f"{prefix}_{key}"]
        return {**entry, **self.spec.data_info.get(split, {})}

    def _exported(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CPU copy of ``state`` as the checkpoint will hold it (rounded to bf16 if exported so,
        kept in the model's dtype)."""
        cast = EXPORT_DTYPES[self.config.export_dtype]
        out = {}
        for key, t in state.items():
            t = t.detach().to("cpu", copy=True)
            if cast is not None and t.is_floating_point():
                t = t.to(cast).to(state[key].dtype)
            out[key] = t
        return out

    def _keep_best(self, val: Mapping[str, Any]) -> None:
        self.best_state = self._exported(self.model.state_dict())
        validation = self._result_entry("val", val, "val")
        validation.update({"epoch": self.best_epoch + 1, "step": self.step})
        self.best_metrics = {"validation": validation}
        if self.env.is_main:
            self._save_best()

    def _save_best(self) -> Path:
        """Save ``self.model`` as the best checkpoint: called right after the validation that
        made its weights the best, and at the end with the best weights loaded back."""
        directory = self.out_dir / BEST_DIR
        save_checkpoint(
            self.model,
            directory,
            name=self.spec.model_name,
            labels=self.spec.labels,
            metrics=self.best_metrics,
            input_spec=self.spec.input_spec,
            preprocessing=self.spec.preprocessing,
            dtype=EXPORT_DTYPES[self.config.export_dtype],
            extra={
                "experiment": self.spec.experiment,
                "task": self.spec.task,
                "epoch": self.best_epoch + 1,
                "train_config": asdict(self.config),
                "run": self.run_config,
            },
        )
        if (self.out_dir / CURVES_FILE).exists():
            shutil.copyfile(self.out_dir / CURVES_FILE, directory / CURVES_FILE)
        return directory

    def _finish(self) -> TrainResult:
        broadcast_buffers(self.model)
        final_sha = state_dict_sha256(self.model)
        if self.weights_hash_file is not None:
            self.weights_hash_file.parent.mkdir(parents=True, exist_ok=True)
            self.weights_hash_file.write_text(final_sha + "\n")
        if self.best_state is None:
            raise ValueError("no epoch was evaluated: nothing to export")
        self.model.load_state_dict(self.best_state)
        if self.config.export_dtype != "fp32":  # the stored weights are rounded: re-measure
            val = self.evaluate(self.spec.val_set, "val")
            self.best_metrics["validation"].update(self._result_entry("val", val, "val"))
        final: dict[str, Any] = {
            "event": "final",
            "step": self.step,
            "best_epoch": self.best_epoch + 1,
            "epochs_completed": self.epoch,
        }
        for name, dataset in self.spec.test_sets.items():
            summary = self.evaluate(dataset, name)
            self.best_metrics[name] = self._result_entry(name, summary, name)
            final.update(summary)
        if self.env.is_main:
            self._plot()
            self._save_best()
            self._emit({**final, "best": self.best_score})
        return TrainResult(
            best_score=self.best_score,
            best_epoch=self.best_epoch + 1,
            best_dir=self.out_dir / BEST_DIR,
            metrics=self.best_metrics,
            steps=self.step,
            epochs_completed=self.epoch,
            weights_sha256=final_sha,
        )

    def _plot(self) -> None:
        rows = [r for r in self.history if r.get("event") == "epoch"]
        if rows:
            title = f"{self.spec.experiment} ({self.spec.model_name}, seed {self.config.seed})"
            plot_curves(rows, self.out_dir / CURVES_FILE, title=title)

    # ------------------------------------------------------------------------------------------
    # Resumable state (safetensors + JSON)
    # ------------------------------------------------------------------------------------------

    def save_state(self, directory: Path, epoch_sums: list[float], elapsed: float) -> None:
        """Write the resumable state to ``directory`` (replaced as a whole); ``epoch_sums``
        are the loss / quality / sample sums of the current epoch over all ranks."""
        tmp = directory.with_name(f".{directory.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model_state = {
            k: v.detach().to("cpu").contiguous() for k, v in self.model.state_dict().items()
        }
        save_file(model_state, str(tmp / "model.safetensors"))
        opt_tensors, opt_doc = flatten_optimizer_state(self.optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        state = {
            "version": STATE_VERSION,
            "experiment": self.spec.experiment,
            "model_name": self.spec.model_name,
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.env.world_size,
            "seed": self.config.seed,
            "best_score": None if self.best_score == -math.inf else self.best_score,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "epoch_sums": list(epoch_sums),
            "elapsed_s": elapsed,
            "schedule": self.schedule.state_dict(),
            "optimizer": opt_doc,
            "history": self.history,
            "config": asdict(self.config),
        }
        _json_dump(tmp / "state.json", state)
        old = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)

    def load_state(self, directory: Path) -> None:
        """Continue from a state written by :meth:`save_state` (and the best checkpoint)."""
        path = directory / "state.json"
        if not path.is_file():
            raise ValueError(f"{directory}: no resumable state (state.json missing)")
        state = json.loads(path.read_text())
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{path}: unsupported state version {state.get('version')!r}")
        for key, mine in (
            ("experiment", self.spec.experiment),
            ("model_name", self.spec.model_name),
            ("steps_per_epoch", self.steps_per_epoch),
        ):
            if state[key] != mine:
                raise ValueError(f"{path}: {key} is {state[key]!r}, this run has {mine!r}")
        if state["batches_done"] and state["world_size"] != self.env.world_size:
            raise ValueError(
                f"{path}: saved inside an epoch with {state['world_size']} processes; "
                f"resume it with the same number (now {self.env.world_size})"
            )
        self.model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
        opt = unflatten_optimizer_state(
            load_file(str(directory / "optimizer.safetensors")), state["optimizer"]
        )
        self.optimizer.load_state_dict(opt)
        self.schedule.load_state_dict(state["schedule"])
        self.epoch = state["epoch"]
        self.batches_done = state["batches_done"]
        self.step = state["step"]
        self.best_score = -math.inf if state["best_score"] is None else state["best_score"]
        self.best_epoch = state["best_epoch"]
        self.best_metrics = state["best_metrics"]
        self.history = state["history"]
        self.elapsed_before = state["elapsed_s"]
        self._resumed_sums = state["epoch_sums"]
        best_weights = self.out_dir / BEST_DIR / "model.safetensors"
        if self.best_epoch >= 0:
            if not best_weights.is_file():
                raise ValueError(
                    f"{best_weights}: the best checkpoint of the resumed run is missing"
                )
            model_state = self.model.state_dict()
            self.best_state = {
                k: v.to(model_state[k].dtype) for k, v in load_file(str(best_weights)).items()
            }
