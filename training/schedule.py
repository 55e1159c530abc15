"""AdamW with a per-step linear-warmup + cosine-decay learning rate (paper D.2 / D.4), and the
optimizer state as plain tensors + JSON (for resumable training states without pickle).

Schedule (step s = index of the optimizer step about to be taken, 0-based; W warmup steps;
S total steps; f = ``min_factor``):

- s < W: ``lr = peak · (s + 1) / W`` (linear from near zero, so the first step already moves);
- W ≤ s: ``lr = peak · (f + (1 − f) · ½ (1 + cos(π p)))`` with ``p = (s − W) / (S − W − 1)``
  clamped to [0, 1], i.e. the peak at step W and ``f · peak`` at the last step (paper: 0.001).
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from torch import nn

DEFAULT_MIN_FACTOR = 1e-3


def _check_number(name: str, value: Any, minimum: float, *, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return float(value)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices / conv kernels (dim ≥ 2), none on biases, norm
    scales, position embeddings of dim < 2 and other vectors. Frozen parameters are skipped."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [
        {"params": params, "weight_decay": wd}
        for params, wd in ((decay, weight_decay), (no_decay, 0.0))
        if params
    ]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return groups


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups` of ``model`` with peak learning rate ``lr``; the
    fused (one-kernel) implementation when every parameter is on a CUDA device."""
    lr = _check_number("lr", lr, 0.0, strict=True)
    weight_decay = _check_number("weight_decay", weight_decay, 0.0)
    groups = parameter_groups(model, weight_decay)
    fused = all(p.is_cuda for g in groups for p in g["params"]) or None
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


def warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, min_factor: float = DEFAULT_MIN_FACTOR
) -> float:
    """The multiplier of the peak learning rate at optimizer step ``step`` (see module doc)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = total_steps - warmup_steps - 1
    progress = 1.0 if span <= 0 else min(1.0, max(0.0, (step - warmup_steps) / span))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineSchedule:
    """Sets the learning rate of every param group of ``optimizer`` from its peak (the group's
    ``lr`` at construction) before each step: call :meth:`step` after ``optimizer.step()``.

    The state (:meth:`state_dict`) is plain JSON.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        total_steps: int,
        min_factor: float = DEFAULT_MIN_FACTOR,
    ) -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        if (
            isinstance(warmup_steps, bool)
            or not isinstance(warmup_steps, int)
            or not 0 <= warmup_steps <= total_steps
        ):
            raise ValueError(
                f"warmup_steps must be an integer in [0, total_steps={total_steps}], "
                f"got {warmup_steps!r}"
            )
        if not 0.0 <= _check_number("min_factor", min_factor, 0.0) <= 1.0:
            raise ValueError(f"min_factor must be in [0, 1], got {min_factor}")
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_factor = float(min_factor)
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def factor(self, step: int | None = None) -> float:
        """The learning-rate multiplier at ``step`` (default: the next step)."""
        step = self.last_step if step is None else step
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps, self.min_factor)

    def _apply(self) -> None:
        factor = self.factor()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def step(self) -> None:
        """Advance to the next optimizer step and set its learning rate."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The learning rates the next optimizer step will use, one per param group."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self.last_step,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "min_factor": self.min_factor,
            "base_lrs": list(self.base_lrs),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("last_step", "warmup_steps", "total_steps", "min_factor", "base_lrs"):
            if key not in state:
                raise ValueError(f"scheduler state lacks {key!r}")
        if len(state["base_lrs"]) != len(self.base_lrs):
            raise ValueError(
                f"scheduler state has {len(state['base_lrs'])} param groups, "
                f"the optimizer {len(self.base_lrs)}"
            )
        self.last_step = int(state["last_step"])
        self.warmup_steps = int(state["warmup_steps"])
        self.total_steps = int(state["total_steps"])
        self.min_factor = float(state["min_factor"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self._apply()


def _json_value(value: Any, where: str) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_json_value(v, where) for v in value]}
    if isinstance(value, list):
        return [_json_value(v, where) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: non-finite value {value}")
        return value
    raise ValueError(f"{where}: cannot store a {type(value).__name__} as JSON")


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__tuple__"}:
        return tuple(_from_json(v) for v in value["__tuple__"])
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def flatten_optimizer_state(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` as (tensors named ``state.<param id>.<key>``, JSON document
    with the param groups and the non-tensor per-parameter values). Tensors are CPU copies."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state_dict["state"].items():
        for key, value in entries.items():
            if "." in key:
                raise ValueError(f"optimizer state key {key!r} contains a dot")
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = _json_value(value, f"state {pid}.{key}")
    groups = [
        {k: _json_value(v, f"param_groups[{i}].{k}") for k, v in group.items()}
        for i, group in enumerate(state_dict["param_groups"])
    ]
    document = {"param_groups": groups, "scalars": scalars}
    json.dumps(document, allow_nan=False)
    return tensors, document


def unflatten_optimizer_state(
    tensors: dict[str, torch.Tensor], document: dict[str, Any]
) -> dict[str, Any]:
    """The inverse of :func:`flatten_optimizer_state`: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        parts = name.split(".")
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
            raise ValueError(f"unexpected optimizer tensor name {name!r}")
        state.setdefault(int(parts[1]), {})[parts[2]] = tensor
    for pid, entries in document.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update({k: _from_json(v) for k, v in entries.items()})
    groups = [{k: _from_json(v) for k, v in group.items()} for group in document["param_groups"]]
    return {"state": state, "param_groups": groups}
