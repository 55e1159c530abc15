"""Build a loaded model version's :class:`~app.serving.cost_profile.CostProfile` at warm-up.

For every inference path the model is timed on the serving device: at the training size, at
half its side (images: half the patch grid; graphs: a chain half as long), at sizes of twice the
side until a run takes :data:`CALIBRATION_MIN_S` (below that, fixed costs and noise hide how the
time grows), on a batch of four (or two) of the last size and on the next larger size, so that
the fit separates the fixed cost of a call from the terms that grow with the batch and with the
input (the quadratic gating matrix of the parallel form, the sequential steps of the recurrent
and chunkwise forms). A size is skipped when its predicted memory is over
:data:`CALIBRATION_MAX_BYTES` (or the budget), when its predicted time is over both
:data:`CALIBRATION_MAX_S` and the time of the size it grows from, or once the path has used
max(:data:`CALIBRATION_BUDGET_S`, :data:`BUDGET_FACTOR` × the training size's run) of wall
time: a busy machine makes every run slow and noisy, and the start-up must stay bounded all the
same.

Each size but the training size (which the warm-up ran) runs once untimed (the first call at a
new shape builds shape-dependent indices and kernels), then until its two fastest runs agree
within :data:`AGREEMENT` (at most :data:`MAX_RUNS` runs; one run when it takes longer than
:data:`CALIBRATION_MAX_S`), and the fastest run counts, so a busy moment of the machine does
not inflate the constants. On the CPU the sizes run on one torch thread (on a machine busier
than its cores a multi-threaded op waits for its slowest thread, and timings swing by orders of
magnitude); then one size of the first path (the one nearest 2 × :data:`CALIBRATION_MIN_S`)
runs again on all threads, and every constant of every path is scaled by that ratio: faster on
an idle machine with many cores, slower (by an order of magnitude on a 2-core machine shared
with other work) where threads wait for each other, which is then how the server will run. One
ratio for all paths keeps their order, which ``path=auto`` follows, the one-thread one.
On a GPU the peak of allocated memory is measured too, and
``memory_scale`` rises above 1 where it exceeds the formula.

The per-call memory budget is ``PLSTM_MAX_REQUEST_MEMORY_MB`` when set, else
:func:`default_memory_budget`: a quarter of the memory available on the CPU, half of the free
memory of a GPU (measured when the version is loaded).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from app.serving import backends
from app.serving.cost_formulas import (
    FAMILIES,
    Architecture,
    GraphBatch,
    ImageBatch,
    Size,
    formula,
    grid_forms_on,
)
from app.serving.cost_profile import CostProfile, fit_coefficients
from models.capabilities import capabilities_of
from models.input_spec import native_image_size
from models.molecule_features import MolGraph

if TYPE_CHECKING:
    from app.serving.repository import ModelEntry

logger = logging.getLogger(__name__)

GraphSpec = tuple[int, int]
"""A calibration graph input: (graphs, nodes per chain)."""

CALIBRATION_MIN_S = 0.01
"""Sizes grow until a run takes this long."""
CALIBRATION_MAX_S = 1.0
"""Longest predicted run of one calibration size."""
CALIBRATION_BUDGET_S = 0.5
BUDGET_FACTOR = 6.0
"""A path's calibration starts no further size after max(CALIBRATION_BUDGET_S, BUDGET_FACTOR ×
the training size's run) of wall time."""
CALIBRATION_MAX_BYTES = 1 << 30
"""Largest predicted memory of one calibration size."""
MAX_RUNS = 2
AGREEMENT = 0.2
CPU_BUDGET_FRACTION = 0.25
GPU_BUDGET_FRACTION = 0.5
GRAPH_NODES = 6
"""Nodes of the chain graph the graph calibration starts from."""


def model_family(model: torch.nn.Module | None) -> str | None:
    """The :data:`app.serving.cost_formulas.FAMILIES` entry ``model``'s class declares
    (:mod:`models.capabilities`); None if it declares none or one without formulas."""
    capabilities = capabilities_of(model)
    if capabilities is None or capabilities.family not in FAMILIES:
        return None
    return capabilities.family


def available_memory() -> int:
    """Bytes of memory available to new allocations on this machine (MemAvailable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_memory_budget(device: torch.device) -> float:
    """Bytes one model call may use when no budget is configured (module docstring)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free * GPU_BUDGET_FRACTION
    return available_memory() * CPU_BUDGET_FRACTION


def _dtype_bytes(model: torch.nn.Module) -> int:
    param = next(model.parameters(), None)
    return 4 if param is None or param.dtype.itemsize < 4 else param.dtype.itemsize


def _image_grid(entry: ModelEntry, path: str) -> tuple[int, int]:
    """Patch grid the calibration starts from: the ONNX export's, else the training size."""
    patch = int(entry.config["patch_size"])
    if path == "onnx":
        size = backends.onnx_image_size(entry)
        if size is not None:
            return size[0] // patch, size[1] // patch
    height, width = native_image_size(entry.input_spec, entry.config)
    return height // patch, width // patch


@dataclass(frozen=True)
class Ladder:
    """Calibration inputs of one path: the ``first`` (training size), and from any input the
    next ``larger`` one, a ``smaller`` one (None: none smaller) and ``times(size, k)``: k of it
    in one call."""

    first: Any
    larger: Callable[[Any], Any]
    smaller: Callable[[Any], Any | None]
    times: Callable[[Any, int], Any]


def _image_ladder(entry: ModelEntry, path: str) -> Ladder:
    gx, gy = _image_grid(entry, path)
    first = ImageBatch(1, gx, gy)
    times = lambda s, k: replace(s, batch=k * s.batch)  # noqa: E731
    if path == "onnx" and backends.onnx_image_size(entry) is not None:  # fixed resolution
        return Ladder(first, lambda s: times(s, 2), lambda s: None, times)
    return Ladder(
        first,
        lambda s: ImageBatch(1, 2 * s.x, 2 * s.y),
        lambda s: ImageBatch(1, max(1, s.x // 2), max(1, s.y // 2)) if s.x * s.y > 1 else None,
        times,
    )


def _chain(nodes: int, entry: ModelEntry, gen: torch.Generator) -> MolGraph:
    features = int(entry.config["num_node_features"])
    edge_features = int(entry.config.get("num_edge_features", 0))
    edge_index = torch.stack([torch.arange(nodes - 1), torch.arange(1, nodes)])
    x = torch.rand(nodes, features, generator=gen)
    return MolGraph(x, edge_index, torch.rand(nodes - 1, edge_features, generator=gen))


def _graph_ladder() -> Ladder:
    """Chains of (graphs, nodes per graph)."""
    return Ladder(
        (1, GRAPH_NODES),
        lambda s: (1, 2 * s[1]),
        lambda s: (1, s[1] // 2) if s[1] >= 4 else None,
        lambda s, k: (k * s[0], s[1]),
    )


def _runner(entry: ModelEntry, path: str, size: Size | GraphSpec) -> tuple[Size, Callable]:
    """The cost size of a calibration input and a function running it on ``path``."""
    gen = torch.Generator().manual_seed(0)
    if isinstance(size, ImageBatch):
        patch = int(entry.config["patch_size"])
        chans = int(entry.config.get("in_chans", 3))
        images = torch.rand(size.batch, chans, size.x * patch, size.y * patch, generator=gen)
        return size, lambda: backends.run_images(entry, images, path)
    count, nodes = size
    graphs = [_chain(nodes, entry, gen) for _ in range(count)]
    return GraphBatch.of(graphs), lambda: backends.run_graphs(entry, graphs, path)


def _timed(run: Callable, device: torch.device, new_shape: bool) -> tuple[float, int | None]:
    """The fastest run in seconds (module docstring), and on a GPU the peak of memory
    allocated beyond what was allocated before (bytes)."""
    if new_shape:
        run()  # the first call at a new shape is slower: not timed
    times: list[float] = []
    peak = None
    while len(times) < MAX_RUNS:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        run()  # the backends return CPU tensors: the device is done when this returns
        times.append(time.perf_counter() - start)
        if device.type == "cuda":
            peak = max(peak or 0, torch.cuda.max_memory_allocated(device) - before)
        fastest = sorted(times)[:2]
        if times[-1] > CALIBRATION_MAX_S or (
            len(fastest) == 2 and fastest[1] <= (1 + AGREEMENT) * fastest[0]
        ):
            break
    return min(times), peak


def _calibrate_path(
    profile: CostProfile, entry: ModelEntry, path: str
) -> tuple[float, tuple[Callable, float]]:
    """Fit ``profile.coefficients[path]`` (module docstring) on one torch thread; returns the
    largest measured / predicted memory, and the run nearest 2 × :data:`CALIBRATION_MIN_S`
    with its seconds (for :func:`_thread_ratio`)."""
    f = formula(profile.arch.family, path, profile.arch.grid_forms)
    cap = min(profile.memory_budget, CALIBRATION_MAX_BYTES)
    ladder = _image_ladder(entry, path) if entry.kind == "image" else _graph_ladder()
    points: list[tuple[dict[str, float], float]] = []
    memory_ratio = 0.0
    started = time.perf_counter()

    def measure(candidate: Any, reference: tuple[dict[str, float], float] | None) -> float | None:
        """Seconds of ``candidate`` if it is affordable (judged from the ``reference`` point
        it grows from), else None."""
        nonlocal memory_ratio
        if candidate is None:
            return None
        size, run = _runner(entry, path, candidate)
        terms = f.terms(profile.arch, size)
        if reference is not None:
            budget = max(CALIBRATION_BUDGET_S, BUDGET_FACTOR * points[0][1])
            if time.perf_counter() - started > budget or f.memory(profile.arch, size) > cap:
                return None
            ref_terms, ref_s = reference
            growth = max(
                [terms[t] / ref_terms[t] for t in terms if t != "call" and ref_terms[t] > 0]
                or [1.0]
            )
            if ref_s * growth > max(CALIBRATION_MAX_S, ref_s):
                return None
        seconds, peak = _timed(run, entry.device, new_shape=reference is not None)
        points.append((terms, seconds))
        profile.timed_tokens[path] = max(profile.timed_tokens.get(path, 0), size.tokens)
        runs.append(run)
        if peak is not None:
            memory_ratio = max(memory_ratio, peak / f.memory(profile.arch, size))
        return seconds

    runs: list[Callable] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _climb(ladder, measure, points)
    finally:
        torch.set_num_threads(threads)
    profile.coefficients[path] = fit_coefficients(points)
    chosen = min(range(len(points)), key=lambda i: abs(points[i][1] - 2 * CALIBRATION_MIN_S))
    return memory_ratio, (runs[chosen], points[chosen][1])


def _thread_ratio(entry: ModelEntry, run: Callable, one_thread_s: float) -> float:
    """How many times longer ``run`` takes on all torch threads than on one (on the CPU)."""
    if entry.device.type != "cpu" or torch.get_num_threads() == 1:
        return 1.0
    all_threads, _ = _timed(run, entry.device, new_shape=False)
    return all_threads / one_thread_s


def _climb(ladder: Ladder, measure: Callable, points: list) -> None:
    """Measure the sizes of ``ladder`` in the order of the module docstring."""
    measure(ladder.first, None)
    base = points[0]
    measure(ladder.smaller(ladder.first), base)  # cheap: with the first, how time grows
    size, last = ladder.first, base
    while last[1] < CALIBRATION_MIN_S and measure(ladder.larger(size), last) is not None:
        size, last = ladder.larger(size), points[-1]
    if measure(ladder.times(size, 4), last) is None:
        measure(ladder.times(size, 2), last)
    measure(ladder.larger(size), last)


def build_cost_profile(
    entry: ModelEntry, memory_budget_mb: float | None, *, calibrate: bool
) -> CostProfile | None:
    """The cost profile of the loaded ``entry`` (None when its model family has no formulas);
    with ``calibrate`` every path is timed (module docstring). A path whose calibration fails
    stays untimed (logged)."""
    family = model_family(entry.model)
    if family is None or entry.model is None:
        return None
    budget = (
        memory_budget_mb * 2**20
        if memory_budget_mb is not None
        else default_memory_budget(entry.device)
    )
    profile = CostProfile(
        arch=Architecture.from_config(
            family, entry.config, _dtype_bytes(entry.model), grid_forms_on(entry.device)
        ),
        paths=backends.model_paths(entry),
        memory_budget=budget,
        device=str(entry.device),
    )
    if not calibrate:
        return profile
    memory_ratio = 0.0
    reference: tuple[Callable, float] | None = None
    for path in profile.paths:
        try:
            path_ratio, candidate = _calibrate_path(profile, entry, path)
        except (ValueError, RuntimeError) as exc:
            profile.coefficients.pop(path, None)
            logger.warning(
                "model %s version %d: path %s not timed: %s", entry.name, entry.version, path, exc
            )
            continue
        memory_ratio = max(memory_ratio, path_ratio)
        reference = reference or candidate
    if reference is not None:  # one ratio for every path: their order stays the one-thread one
        ratio = _thread_ratio(entry, *reference)
        for path, coefficients in profile.coefficients.items():
            profile.coefficients[path] = {t: c * ratio for t, c in coefficients.items()}
    profile.memory_scale = max(1.0, memory_ratio)
    logger.info("model %s version %d costs: %s", entry.name, entry.version, profile.describe())
    return profile
