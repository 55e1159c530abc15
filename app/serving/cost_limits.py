"""The cost limits of one request, checked before it is queued, and the choice of ``path=auto``.

A request is refused with 413 when it has more tokens than ``PLSTM_MAX_TOKENS`` (patches of one
image, or atoms of all graphs of a request), or when on its path its predicted peak memory is
over the model's per-call memory budget or its predicted time is over the time left to its
deadline (:mod:`app.serving.deadlines`). The message names the size, the prediction, the limit and
what would fit, e.g. ``image of 96x96 patches needs ~4.43 GB on path parallel, over the per-request
memory budget of 1 GB (PLSTM_MAX_REQUEST_MEMORY_MB): use path=chunkwise or resize=model``.

``path=auto`` takes the path with the smallest predicted time among those that fit, except that
the conventional choice of :func:`app.serving.backends.resolve_path` (parallel for small images,
chunkwise for large ones, ONNX where it applies) is kept while it fits and is predicted within
:data:`AUTO_MARGIN` times or :data:`AUTO_MIN_GAIN_S` seconds of the fastest: timings of small
inputs are mostly fixed costs and noise, and a choice that flips between runs helps nobody; and
it is kept for inputs larger than the sizes both paths were timed at, where the predictions are
extrapolations (on a CPU the parallel form's time grows faster than its operation count once
its gating matrices leave the caches: predicted 1.1 s, measured 5.1 s at 64x64 patches,
docs/benchmarks/auto_path_cpu2.md).
Without timings (warm-up off): the conventional choice, unless it does not fit the memory
budget, then the first fitting path of :data:`UNTIMED_ORDER`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.errors import ApiError
from app.serving import backends
from app.serving.cost_formulas import ImageBatch, Size
from app.serving.cost_profile import CostProfile, Estimate, format_bytes, format_seconds

if TYPE_CHECKING:
    from app.serving.repository import ModelEntry

STATUS = 413
UNTIMED_ORDER = ("onnx", "chunkwise", "parallel", "recurrent")
"""Preference among the fitting paths when their times are unknown: chunkwise bounds memory
and stays fast; the recurrent form is the slowest."""
AUTO_MARGIN = 2.0
"""How many times slower than the fastest fitting path the conventional choice may be predicted
and still be taken by ``path=auto``."""
AUTO_MIN_GAIN_S = 0.05
"""... or how many seconds slower."""
MEMORY_LIMIT = "PLSTM_MAX_REQUEST_MEMORY_MB"
DEADLINE_LIMIT = "PLSTM_REQUEST_TIMEOUT_S / X-Request-Timeout"


class CostLimitExceeded(ApiError):
    """A request over a cost limit (413)."""

    def __init__(self, message: str) -> None:
        super().__init__(STATUS, message)


def _grid(size: Size) -> tuple[int, int] | None:
    return (size.x, size.y) if isinstance(size, ImageBatch) else None


def _over(profile: CostProfile, path: str, estimate: Estimate, remaining_s: float) -> str | None:
    """Why ``estimate`` on ``path`` does not fit (None when it does)."""
    if estimate.bytes > profile.memory_budget:
        return (
            f"needs ~{format_bytes(estimate.bytes)} on path {path}, over the per-request memory "
            f"budget of {format_bytes(profile.memory_budget)} ({MEMORY_LIMIT})"
        )
    if estimate.seconds is not None and estimate.seconds > remaining_s:
        return (
            f"needs ~{format_seconds(estimate.seconds)} on path {path}, over the "
            f"{format_seconds(remaining_s)} left to the request's deadline ({DEADLINE_LIMIT})"
        )
    return None


def _advice(paths: list[str], smaller: str) -> str:
    """The advice ``use path=... or <smaller>``: up to two of ``paths``, in the order of
    :data:`UNTIMED_ORDER` (not by predicted time, which differs from one calibration to the
    next: the same request gets the same answer from every process)."""
    ordered = sorted(paths, key=lambda p: UNTIMED_ORDER.index(p) if p in UNTIMED_ORDER else 9)
    options = [f"path={p}" for p in ordered[:2]] + ([smaller] if smaller else [])
    return "use " + " or ".join(options) if options else "send a smaller input"


def _usable(entry: ModelEntry, size: Size) -> list[str]:
    """The explicit paths that can run ``size`` (ONNX image exports take one resolution)."""
    grid = _grid(size)
    exported = backends.onnx_image_size(entry)
    usable = []
    for path in backends.model_paths(entry):
        if path == "onnx" and grid is not None and exported is not None:
            patch = int(entry.config["patch_size"])
            if (grid[0] * patch, grid[1] * patch) != tuple(exported):
                continue
        usable.append(path)
    return usable


def check_tokens(size: Size, max_tokens: int, smaller: str) -> None:
    """413 when ``size`` has more tokens than ``max_tokens`` (``PLSTM_MAX_TOKENS``)."""
    if size.tokens > max_tokens:
        unit = "tokens" if isinstance(size, ImageBatch) else "atoms"
        raise CostLimitExceeded(
            f"{size.describe()} ({size.tokens} {unit}) is over PLSTM_MAX_TOKENS = {max_tokens}: "
            + _advice([], smaller)
        )


def choose_path(
    entry: ModelEntry,
    path: str,
    size: Size,
    *,
    remaining_s: float,
    max_tokens: int,
    smaller: str,
) -> str:
    """The explicit path to run ``size`` (one queued item: one image, or a request's graphs) on
    for the requested ``path`` (possibly ``auto``). ValueError for an unknown or unavailable
    path (as :func:`app.serving.backends.resolve_path`); :class:`CostLimitExceeded` over a limit;
    ``smaller`` is the advice for a smaller input (e.g. ``"resize=model"``)."""
    check_tokens(size, max_tokens, smaller)
    grid = _grid(size)
    profile = entry.cost
    if path != "auto":
        chosen = backends.resolve_path(entry, path, size.tokens, size=_pixels(entry, grid))
        if profile is None:
            return chosen
        problem = _over(profile, chosen, profile.estimate(chosen, size), remaining_s)
        if problem is None:
            return chosen
        fitting = _fitting(profile, _usable(entry, size), size, remaining_s)
        others = [p for p in fitting if p != chosen]
        raise CostLimitExceeded(f"{size.describe()} {problem}: {_advice(others, smaller)}")
    if profile is None:
        return backends.resolve_path(entry, "auto", size.tokens, size=_pixels(entry, grid))
    usable = _usable(entry, size)
    fitting = _fitting(profile, usable, size, remaining_s)
    if not fitting:
        problems = [_over(profile, p, profile.estimate(p, size), remaining_s) for p in usable]
        raise CostLimitExceeded(
            f"{size.describe()} fits no inference path: it "
            + "; it ".join(p for p in problems if p)
            + ": "
            + _advice([], smaller)
        )
    legacy = backends.resolve_path(entry, "auto", size.tokens, size=_pixels(entry, grid))
    if legacy not in fitting:
        return fitting[0]
    if not profile.timed:
        return legacy
    fastest = profile.estimate(fitting[0], size).seconds or 0.0
    legacy_s = profile.estimate(legacy, size).seconds or 0.0
    keep = legacy_s <= AUTO_MARGIN * fastest or legacy_s - fastest <= AUTO_MIN_GAIN_S
    measured = all(profile.measured_range(p, size) for p in (legacy, fitting[0]))
    return legacy if keep or not measured else fitting[0]


def _pixels(entry: ModelEntry, grid: tuple[int, int] | None) -> tuple[int, int] | None:
    if grid is None:
        return None
    patch = int(entry.config["patch_size"])
    return grid[0] * patch, grid[1] * patch


def _rank(path: str, estimate: Estimate) -> tuple[float, float, float]:
    """Fastest first when timed, else in :data:`UNTIMED_ORDER`; then least memory."""
    seconds = estimate.seconds if estimate.seconds is not None else 0.0
    order = UNTIMED_ORDER.index(path) if path in UNTIMED_ORDER else len(UNTIMED_ORDER)
    return seconds, order, estimate.bytes


def _fitting(profile: CostProfile, paths: list[str], size: Size, remaining_s: float) -> list[str]:
    """The ``paths`` within every limit, best first (:func:`_rank`)."""
    estimates = {p: profile.estimate(p, size) for p in paths}
    ok = [p for p in paths if _over(profile, p, estimates[p], remaining_s) is None]
    return sorted(ok, key=lambda p: _rank(p, estimates[p]))
