"""A model version's cost profile: predicted time and peak memory of a model call on each path.

Memory comes from the formulas of :mod:`app.serving.cost_formulas` (times ``memory_scale``, raised
at warm-up where a GPU measured more than predicted). Time is ``Σ_term coefficient · term`` with
the terms of the same formulas and one coefficient per term and path, fitted to timings of a
few sizes measured at warm-up on the serving device (:mod:`app.serving.cost_calibration`,
:func:`fit_coefficients`); without warm-up a profile has no coefficients and predicts memory
only. A profile travels as JSON (:meth:`CostProfile.to_meta`) in the engine's ``HELLO``, so
the HTTP workers of ``plstm serve --workers N`` check costs exactly as the engine would.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.serving.cost_formulas import Architecture, Size, Terms, formula


@dataclass(frozen=True)
class Estimate:
    """Predicted ``seconds`` (None when the path's time was not calibrated) and peak ``bytes``
    of one model call."""

    seconds: float | None
    bytes: float


@dataclass
class CostProfile:
    """Costs of one model version on its ``paths``. ``memory_budget``: bytes one model call may
    use on its device; ``coefficients[path][term]``: seconds per unit of each time term;
    ``timed_tokens[path]``: the most tokens (``Size.tokens``) of a size timed for the fit,
    beyond which a prediction is an extrapolation."""

    arch: Architecture
    paths: tuple[str, ...]
    memory_budget: float
    coefficients: dict[str, dict[str, float]] = field(default_factory=dict)
    memory_scale: float = 1.0
    device: str = "cpu"
    timed_tokens: dict[str, int] = field(default_factory=dict)

    @property
    def timed(self) -> bool:
        """Whether every path's time is calibrated."""
        return all(p in self.coefficients for p in self.paths)

    def estimate(self, path: str, size: Size) -> Estimate:
        """Time and memory of one call of ``size`` on ``path``; ValueError for a path the
        model has no formula for."""
        f = formula(self.arch.family, path, self.arch.grid_forms)
        memory = f.memory(self.arch, size) * self.memory_scale
        coefficients = self.coefficients.get(path)
        if coefficients is None:
            return Estimate(None, memory)
        terms = f.terms(self.arch, size)
        return Estimate(sum(c * terms.get(t, 0.0) for t, c in coefficients.items()), memory)

    def fits(self, path: str, size: Size) -> bool:
        """Whether a call of ``size`` on ``path`` stays within the memory budget."""
        return self.estimate(path, size).bytes <= self.memory_budget

    def measured_range(self, path: str, size: Size) -> bool:
        """Whether ``size`` is within the sizes timed for ``path`` (no extrapolation)."""
        return size.tokens <= self.timed_tokens.get(path, 0)

    def to_meta(self) -> dict[str, Any]:
        return {
            "arch": self.arch.to_meta(),
            "paths": list(self.paths),
            "memory_budget": self.memory_budget,
            "coefficients": self.coefficients,
            "memory_scale": self.memory_scale,
            "device": self.device,
            "timed_tokens": self.timed_tokens,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> CostProfile:
        return cls(
            arch=Architecture.from_meta(meta["arch"]),
            paths=tuple(meta["paths"]),
            memory_budget=float(meta["memory_budget"]),
            coefficients={p: dict(c) for p, c in meta["coefficients"].items()},
            memory_scale=float(meta["memory_scale"]),
            device=str(meta["device"]),
            timed_tokens={p: int(n) for p, n in meta.get("timed_tokens", {}).items()},
        )

    def describe(self) -> str:
        """One line per path for the start-up log."""
        lines = [f"memory budget {format_bytes(self.memory_budget)} per call on {self.device}"]
        for path in self.paths:
            c = self.coefficients.get(path)
            fitted = ", ".join(f"{t} {v:.3g}" for t, v in c.items()) if c else "not timed"
            lines.append(f"{path}: {fitted}")
        return "; ".join(lines)


def fit_coefficients(points: Sequence[tuple[Terms, float]]) -> dict[str, float]:
    """Non-negative seconds per unit of each term such that ``Σ c·terms ≈ seconds`` for every
    measured point, in the least-squares sense of relative errors. Tries every subset of at
    most ``len(points)`` terms and keeps the best whose coefficients are all non-negative
    (terms left out get 0). ValueError without points."""
    if not points:
        raise ValueError("no timings to fit")
    names = sorted({t for terms, _ in points for t in terms})
    rows = np.array([[terms.get(t, 0.0) for t in names] for terms, _ in points], dtype=float)
    seconds = np.array([s for _, s in points], dtype=float)
    weights = 1.0 / np.maximum(seconds, 1e-9)  # relative errors: small sizes count as much
    best: tuple[float, dict[str, float]] | None = None
    for count in range(1, min(len(names), len(points)) + 1):
        for subset in itertools.combinations(range(len(names)), count):
            columns = rows[:, subset]
            scale = np.maximum(np.abs(columns).max(axis=0), 1e-30)
            a = columns / scale * weights[:, None]
            solution, *_ = np.linalg.lstsq(a, seconds * weights, rcond=None)
            if (solution < 0).any():
                continue
            residual = float(np.sum((a @ solution - seconds * weights) ** 2))
            if best is None or residual < best[0] * (1 - 1e-9):
                coefficients = {names[i]: 0.0 for i in range(len(names))}
                for i, value in zip(subset, solution / scale, strict=True):
                    coefficients[names[i]] = float(value)
                best = (residual, coefficients)
    assert best is not None  # a single term always has a non-negative fit
    return best[1]


def format_bytes(n: float) -> str:
    """``n`` bytes for people: '512 MB', '14 GB'."""
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{n:.0f} bytes"


def format_seconds(s: float) -> str:
    return f"{s:.2g} s" if s < 10 else f"{s:.0f} s"
