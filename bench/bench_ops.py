"""GPU benchmark of the pLSTM ops ``plstm_2d`` and ``plstm_dag`` (every method), SDPA as yardstick.

Run from the repository root::

    python bench/bench_ops.py            # full run on CUDA (an H100 takes a few minutes)
    python bench/bench_ops.py --quick    # tiny sizes on the CPU, a smoke test in seconds

What one invocation does, in order:

1. Correctness: every method of ``plstm_2d`` and ``plstm_dag`` (and the four-orientation fused
   form when ``grid_gating_matrix`` exists) on a small random instance against the float64 loop
   references, in float32 (output and the gradients of every input, tolerance 1e-4 relative to
   the reference's max magnitude) and in bf16 (output, tolerance 2e-2). Aborts if one fails.
2. ``plstm_2d``: grids 12², 14², 24², 32², 64², 128² with B = 64, H = 3, K = V = 64, bf16 inputs
   and P-mode gates; forward time (no autograd graph) and forward+backward time (median of
   repeats timed with CUDA events, after warm-up), and the peak memory of each (raw
   ``max_memory_allocated`` and the increment over what was allocated before the call, which
   is the inputs). ``scaled_dot_product_attention`` on ``[B,H,X·Y,64]`` as a yardstick, and the
   fused four-orientation form (four gating matrices summed, one contraction) when available.
   Out-of-memory configurations are recorded as ``OOM``; configurations whose gating matrix
   alone would exceed the card are ``skipped``; once one configuration of a method takes longer
   than ``--budget-s`` the method's larger grids are skipped.
3. ``plstm_dag``: 256 random molecule-like DAGs (20-60 nodes; a random spanning tree of degree
   ≤ 4 plus ~10 % extra edges, oriented along a random order), H = 4, K = V = 32, float32 and
   bf16: ``recurrent`` vs ``parallel`` forward and forward+backward time, peak memory, speed-up.
4. A summary: device, torch version, command line, date and the three performance targets.

Markdown tables go to stdout and ``<out>/bench_ops.md``; every number goes to
``<out>/bench_ops.json``. ``<out>`` is ``--out``, else ``$OUT``, else ``./bench_out``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(_ROOT))

from plstm_core.ops import dag as dag_ops  # noqa: E402
from plstm_core.ops import grid as grid_ops  # noqa: E402
from plstm_core.ops.contraction import gated_linear_attention  # noqa: E402
from plstm_core.ops.dag import plstm_dag  # noqa: E402
from plstm_core.ops.dag_naive import plstm_dag_naive  # noqa: E402
from plstm_core.ops.dag_structure import build_line_index  # noqa: E402
from plstm_core.ops.grid import plstm_2d  # noqa: E402
from plstm_core.ops.grid_naive import plstm_2d_naive  # noqa: E402

GRID_METHODS = ("parallel", "chunkwise", "recurrent")
DAG_METHODS = ("recurrent", "parallel")
GAMMA = 0.99
TOL_FP32 = 1e-4
TOL_BF16 = 2e-2
MIB = 2**20


@dataclass
class Config:
    """Sizes and knobs of one benchmark run."""

    device: torch.device
    grids: tuple[int, ...]
    batch: int
    heads: int
    dim: int
    chunk_size: int
    dag_graphs: int
    dag_nodes: tuple[int, int]
    dag_heads: int
    dag_dim: int
    warmup: int
    max_repeats: int
    target_s: float
    budget_s: float
    seed: int
    quick: bool
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Measurement helpers
# ----------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time of one call in ms: CUDA events on a GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text
    )


def measure(fn: Callable[[], Any], cfg: Config) -> dict[str, Any]:
    """Time ``fn`` (median over repeats after warm-up) and record its peak memory.

    The first call is a warm-up; if it alone took more than a quarter of the budget it is the
    only sample. The number of repeats aims at ``cfg.target_s`` of timing per measurement.
    Peak memory is taken on one extra call after a reset of the peak statistics:
    ``peak_mib`` is the raw peak, ``incr_mib`` the peak minus what was allocated just before
    the call (the inputs, and whatever else was alive).
    Returns a dict with status "ok", "OOM" or "error".
    """
    device = cfg.device
    t_start = time.perf_counter()
    out: dict[str, Any] = {"status": "ok"}
    try:
        first = _time_once(fn, device)
        samples = [first]
        if first / 1e3 <= cfg.budget_s / 4:
            est = first
            for _ in range(cfg.warmup - 1):  # the last warm-up call estimates the time
                est = _time_once(fn, device)
            est = max(est, 1e-3)
            left_s = cfg.budget_s / 2 - (time.perf_counter() - t_start)
            repeats = int(min(cfg.target_s, max(left_s, 0.0)) * 1e3 / est)
            repeats = max(3, min(cfg.max_repeats, repeats))
            samples = [_time_once(fn, device) for _ in range(repeats)]
        out["ms"] = statistics.median(samples)
        out["ms_min"] = min(samples)
        out["repeats"] = len(samples)
        out["samples_ms"] = samples
        if device.type == "cuda":
            _free_memory(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            fn()
            _sync(device)
            peak = torch.cuda.max_memory_allocated(device)
            out["base_mib"] = base / MIB
            out["peak_mib"] = peak / MIB
            out["incr_mib"] = (peak - base) / MIB
    except Exception as exc:  # recorded in the table; the benchmark goes on
        out = {"status": "OOM" if _is_oom(exc) else "error", "message": str(exc)[:300]}
    _free_memory(device)
    out["wall_s"] = time.perf_counter() - t_start
    return out


def measure_graphed(fn: Callable[[], Any], cfg: Config) -> dict[str, Any]:
    """Capture one call of ``fn`` in a CUDA graph and time its replays with :func:`measure`.

    This removes the per-kernel launch and Python overhead, as a deployed model captured
    with CUDA graphs (``torch.compile(mode="reduce-overhead")``) runs. Ops that synchronise
    with the host cannot be captured: status "not capturable".
    """
    if cfg.device.type != "cuda":
        return {"status": "n/a"}
    graph = None
    try:
        side = torch.cuda.Stream(cfg.device)
        side.wait_stream(torch.cuda.current_stream(cfg.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream(cfg.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except Exception as exc:
        if graph is not None:
            graph.reset()
        del graph
        _free_memory(cfg.device)
        status = "OOM" if _is_oom(exc) else "not capturable"
        return {"status": status, "message": str(exc)[:300]}
    out = measure(graph.replay, cfg)
    out.pop("peak_mib", None)  # a replay allocates nothing: the graph's pool holds it all
    out.pop("incr_mib", None)
    graph.reset()  # give the graph's private memory pool back
    del graph
    _free_memory(cfg.device)
    return out


def _tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _zero_grads(tensors: dict[str, torch.Tensor]) -> None:
    for t in tensors.values():
        t.grad = None


def _rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a − ref| / max |ref| in float64 (NaN/inf give inf)."""
    a64 = a.detach().to("cpu", torch.float64)
    r64 = ref.detach().to("cpu", torch.float64)
    if not torch.isfinite(a64).all():
        return math.inf
    scale = r64.abs().max().item()
    return (a64 - r64).abs().max().item() / max(scale, 1e-300)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def grid_inputs(
    B: int,
    H: int,
    X: int,
    Y: int,
    K: int,
    V: int,
    *,
    gen: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
    requires_grad: bool,
    signed_transitions: bool = False,
) -> dict[str, torch.Tensor]:
    """Random inputs of ``plstm_2d`` with gates drawn as in a real layer.

    q, k ``[B,H,X,Y,K]`` (q scaled by K^-1/2), v ``[B,H,X,Y,V]``; source, mark ``[B,H,X,Y,2]``
    and direct ``[B,H,X,Y]`` = sigmoid(randn); transition ``[B,H,X,Y,2,2]`` in P-mode:
    transition[..., i, 0] = γα, transition[..., i, 1] = γ(1−α), α = sigmoid(randn), γ = 0.99.
    With ``signed_transitions`` the P-mode entries get random signs (|·| keeps P-mode's bound),
    which the correctness checks use to exercise negative transitions.
    """

    draw = torch.float64 if dtype == torch.float64 else torch.float32

    def randn(*shape: int) -> torch.Tensor:  # drawn where ``gen`` lives (the GPU for big grids)
        return torch.randn(*shape, generator=gen, dtype=draw, device=gen.device)

    alpha = torch.sigmoid(randn(B, H, X, Y, 1))
    row = torch.cat([GAMMA * alpha, GAMMA * (1.0 - alpha)], dim=-1)  # [B,H,X,Y,out]
    transition = row[..., None, :].expand(B, H, X, Y, 2, 2).clone()
    if signed_transitions:
        transition = transition * torch.sign(randn(B, H, X, Y, 2, 2))
    raw = {
        "q": randn(B, H, X, Y, K) * K**-0.5,
        "k": randn(B, H, X, Y, K),
        "v": randn(B, H, X, Y, V),
        "source": torch.sigmoid(randn(B, H, X, Y, 2)),
        "transition": transition,
        "mark": torch.sigmoid(randn(B, H, X, Y, 2)),
        "direct": torch.sigmoid(randn(B, H, X, Y)),
    }
    return {
        n: t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for n, t in raw.items()
    }


def random_molecule_dags(
    num_graphs: int, nodes: tuple[int, int], gen: torch.Generator
) -> tuple[torch.Tensor, int]:
    """A disjoint union of random molecule-like DAGs; returns (edge_index ``[2,E]``, N).

    Each graph: n nodes uniform in ``nodes`` (inclusive); a random spanning tree in which every
    new atom binds to a random earlier atom of degree < 4; then about 10 % extra edges (rings)
    between distinct non-adjacent atoms of degree < 4; every edge oriented from the lower to the
    higher rank of a random order, so fan-in and fan-out above one occur.
    """

    def randint(lo: int, hi: int) -> int:  # lo <= r < hi
        return int(torch.randint(lo, hi, (1,), generator=gen).item())

    src: list[int] = []
    dst: list[int] = []
    offset = 0
    for _ in range(num_graphs):
        n = randint(nodes[0], nodes[1] + 1)
        degree = [0] * n
        pairs: set[tuple[int, int]] = set()
        for i in range(1, n):
            candidates = [j for j in range(i) if degree[j] < 4]
            j = candidates[randint(0, len(candidates))]
            pairs.add((j, i))
            degree[i] += 1
            degree[j] += 1
        extra = max(1, round(0.1 * (n - 1)))
        for _attempt in range(50 * extra):
            if extra == 0:
                break
            a, b = randint(0, n), randint(0, n)
            a, b = min(a, b), max(a, b)
            if a == b or (a, b) in pairs or degree[a] >= 4 or degree[b] >= 4:
                continue
            pairs.add((a, b))
            degree[a] += 1
            degree[b] += 1
            extra -= 1
        rank = torch.randperm(n, generator=gen).tolist()
        for a, b in sorted(pairs):
            s, t = (a, b) if rank[a] < rank[b] else (b, a)
            src.append(s + offset)
            dst.append(t + offset)
        offset += n
    return torch.tensor([src, dst], dtype=torch.long), offset


def dag_inputs(
    edge_index: torch.Tensor,
    line_index: torch.Tensor,
    num_nodes: int,
    H: int,
    K: int,
    V: int,
    *,
    gen: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
    requires_grad: bool,
    signed_transitions: bool = False,
) -> dict[str, torch.Tensor]:
    """Random inputs of ``plstm_dag``: q, k ``[N,H,K]``, v ``[N,H,V]``, direct ``[N,H]``,
    source / mark ``[E,H]`` = sigmoid(randn), transition ``[L,H]`` in P-mode: γ·w normalised so
    that the outgoing transitions of each incoming edge sum to γ (w = sigmoid(randn)).
    """
    E = edge_index.shape[1]
    L = line_index.shape[1]

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    w = torch.sigmoid(randn(L, H))
    total = torch.zeros(E, H, dtype=torch.float64).index_add_(0, line_index[0], w)
    transition = GAMMA * w / total[line_index[0]]
    if signed_transitions:
        transition = transition * torch.sign(randn(L, H))
    raw = {
        "q": randn(num_nodes, H, K) * K**-0.5,
        "k": randn(num_nodes, H, K),
        "v": randn(num_nodes, H, V),
        "source": torch.sigmoid(randn(E, H)),
        "transition": transition,
        "mark": torch.sigmoid(randn(E, H)),
        "direct": torch.sigmoid(randn(num_nodes, H)),
    }
    return {
        n: t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for n, t in raw.items()
    }


# ----------------------------------------------------------------------------------------------
# The fused four-orientation form (optional: needs grid_gating_matrix)
# ----------------------------------------------------------------------------------------------

ORIENTATIONS = ((False, False), (True, False), (False, True), (True, True))


def _flip(t: torch.Tensor, fx: bool, fy: bool) -> torch.Tensor:
    dims = [d for d, f in ((2, fx), (3, fy)) if f]
    return t.flip(dims) if dims else t


def fused_four_orientations(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
) -> torch.Tensor:
    """Σ over the four grid orientations of ``plstm_2d`` as one contraction (paper A.7).

    Each orientation is the op on inputs flipped along X and/or Y; its gating matrix
    ``[B,H,N,N]`` is mapped back to the original node order and the four are summed before one
    ``gated_linear_attention``. Shapes as ``plstm_2d``; returns ``[B,H,X,Y,V]`` in float32.
    Cost: four gating constructions plus O(B·H·N²·(K+V)) for the contraction, O(B·H·N²)
    memory (N = X·Y).
    """
    B, H, X, Y, K = q.shape
    V = v.shape[-1]
    N = X * Y
    total: torch.Tensor | None = None
    for fx, fy in ORIENTATIONS:
        g = grid_ops.grid_gating_matrix(
            _flip(source, fx, fy),
            _flip(transition, fx, fy),
            _flip(mark, fx, fy),
            _flip(direct, fx, fy),
        ).float()
        if fx or fy:
            g = g.reshape(B, H, X, Y, X, Y)
            dims = [d for d, f in ((2, fx), (3, fy), (4, fx), (5, fy)) if f]
            g = g.flip(dims).reshape(B, H, N, N)
        total = g if total is None else total + g
    assert total is not None
    h = gated_linear_attention(
        q.float().reshape(B, H, N, K),
        k.float().reshape(B, H, N, K),
        v.float().reshape(B, H, N, V),
        total,
    )
    return h.reshape(B, H, X, Y, V)


def fused_reference(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ over the four orientations of the float64 loop reference (what the fused form computes)."""
    total = None
    for fx, fy in ORIENTATIONS:
        flipped = {n: _flip(t, fx, fy) for n, t in inputs.items()}
        h = _flip(plstm_2d_naive(**flipped), fx, fy)
        total = h if total is None else total + h
    assert total is not None
    return total


def has_fused() -> bool:
    return hasattr(grid_ops, "grid_gating_matrix")


# ----------------------------------------------------------------------------------------------
# 1. Correctness
# ----------------------------------------------------------------------------------------------


def _check_case(
    name: str,
    method: str,
    fast: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    ref: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    raw: dict[str, torch.Tensor],
    device: torch.device,
    gen: torch.Generator,
) -> list[dict[str, Any]]:
    """float32 forward + gradients of every input, and bf16 forward, against float64 ``ref``."""
    rows: list[dict[str, Any]] = []
    ref_in = {n: t.detach().clone().requires_grad_(True) for n, t in raw.items()}
    h_ref = ref(ref_in)
    w = torch.randn(h_ref.shape, generator=gen, dtype=torch.float64)
    (h_ref * w).sum().backward()

    fp32 = {n: t.detach().to(device, torch.float32).requires_grad_(True) for n, t in raw.items()}
    h = fast(fp32)
    (h * w.to(device, h.dtype)).sum().backward()
    grad_err = max(_rel_err(fp32[n].grad, ref_in[n].grad) for n in raw)  # type: ignore[arg-type]
    err = _rel_err(h, h_ref)
    rows.append(
        {
            "op": name,
            "method": method,
            "dtype": "float32",
            "rel_err": err,
            "grad_rel_err": grad_err,
            "tol": TOL_FP32,
            "ok": err <= TOL_FP32 and grad_err <= TOL_FP32,
        }
    )

    # bf16: the reference sees the same bf16-rounded inputs, in float64
    bf = {n: t.detach().to(device, torch.bfloat16) for n, t in raw.items()}
    with torch.no_grad():
        h_bf = fast(bf)
        h_ref_bf = ref({n: t.to("cpu", torch.float64) for n, t in bf.items()})
    err_bf = _rel_err(h_bf, h_ref_bf)
    rows.append(
        {
            "op": name,
            "method": method,
            "dtype": "bfloat16",
            "rel_err": err_bf,
            "grad_rel_err": None,
            "tol": TOL_BF16,
            "ok": err_bf <= TOL_BF16,
        }
    )
    return rows


def correctness(cfg: Config) -> list[dict[str, Any]]:
    """Every method on a small instance against the float64 loop references."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    cs = cfg.chunk_size
    # a grid that is not a multiple of the chunk size along either axis: partial chunks both ways
    X, Y = cs + 3, cs + 5
    raw = grid_inputs(
        2,
        2,
        X,
        Y,
        8,
        6,
        gen=gen,
        dtype=torch.float64,
        device=torch.device("cpu"),
        requires_grad=False,
        signed_transitions=True,
    )
    rows: list[dict[str, Any]] = []

    def naive2d(t: dict[str, torch.Tensor]) -> torch.Tensor:
        return plstm_2d_naive(**t)

    for method in GRID_METHODS:

        def fast2d(t: dict[str, torch.Tensor], method: str = method) -> torch.Tensor:
            return plstm_2d(**t, method=method, chunk_size=cs)

        label = f"chunkwise (chunk {cs})" if method == "chunkwise" else method
        rows += _check_case(f"plstm_2d {X}x{Y}", label, fast2d, naive2d, raw, cfg.device, gen)

    if has_fused():
        small = grid_inputs(
            2,
            2,
            5,
            7,
            8,
            6,
            gen=gen,
            dtype=torch.float64,
            device=torch.device("cpu"),
            requires_grad=False,
            signed_transitions=True,
        )
        rows += _check_case(
            "fused 4-orientation 5x7",
            "gating matrices + contraction",
            lambda t: fused_four_orientations(**t),
            fused_reference,
            small,
            cfg.device,
            gen,
        )

    edge_index, n_nodes = random_molecule_dags(5, (4, 12), gen)
    line_index = build_line_index(edge_index, num_nodes=n_nodes)
    draw = dag_inputs(
        edge_index,
        line_index,
        n_nodes,
        2,
        8,
        6,
        gen=gen,
        dtype=torch.float64,
        device=torch.device("cpu"),
        requires_grad=False,
        signed_transitions=True,
    )
    ei_dev, li_dev = edge_index.to(cfg.device), line_index.to(cfg.device)

    def naive_dag(t: dict[str, torch.Tensor]) -> torch.Tensor:
        return plstm_dag_naive(**t, edge_index=edge_index, line_index=line_index)

    for method in DAG_METHODS:

        def fast_dag(t: dict[str, torch.Tensor], method: str = method) -> torch.Tensor:
            return plstm_dag(**t, edge_index=ei_dev, line_index=li_dev, method=method)

        rows += _check_case(
            f"plstm_dag {n_nodes} nodes", method, fast_dag, naive_dag, draw, cfg.device, gen
        )
    return rows


# ----------------------------------------------------------------------------------------------
# 2. plstm_2d, SDPA and the fused form
# ----------------------------------------------------------------------------------------------


def _fwd_and_bwd(
    op: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    inputs: dict[str, torch.Tensor],
    cotangent: torch.Tensor,
    cfg: Config,
) -> dict[str, Any]:
    """Measure ``op`` forward (under no_grad) and forward+backward (random cotangent)."""

    def fwd() -> torch.Tensor:
        with torch.no_grad():
            return op(inputs)

    def fwd_bwd() -> None:
        h = op(inputs)
        h.backward(cotangent.to(h.dtype))
        _zero_grads(inputs)  # the grads count in the peak, and are gone before the next call

    def fwd_bwd_static() -> None:  # for graph capture: grads land in the captured buffers
        h = op(inputs)
        grads = torch.autograd.grad(h, list(inputs.values()), cotangent.to(h.dtype))
        del grads

    result: dict[str, Any] = {"inputs_mib": _tensor_bytes(inputs) / MIB}
    result["fwd"] = measure(fwd, cfg)
    result["fwd_bwd"] = measure(fwd_bwd, cfg)
    _zero_grads(inputs)
    if cfg.device.type == "cuda" and result["fwd"]["status"] == "ok":
        result["fwd_graph"] = measure_graphed(fwd, cfg)
        if result["fwd_bwd"]["status"] == "ok":
            result["fwd_bwd_graph"] = measure_graphed(fwd_bwd_static, cfg)
    return result


def _card_bytes(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    return int(torch.cuda.get_device_properties(device).total_memory)


def bench_grid(cfg: Config) -> list[dict[str, Any]]:
    """Time every ``plstm_2d`` method, SDPA and the fused form over the grid sizes."""
    B, H, D = cfg.batch, cfg.heads, cfg.dim
    card = _card_bytes(cfg.device)
    rows: list[dict[str, Any]] = []
    over_budget: dict[str, int] = {}  # method -> grid side at which the budget ran out
    methods: list[str] = ["sdpa", *GRID_METHODS]
    if has_fused():
        methods.append("fused4")
    for method in methods:
        for side in cfg.grids:
            N = side * side
            row: dict[str, Any] = {"method": method, "X": side, "Y": side, "N": N}
            gating_bytes = B * H * N * N * 4  # one fp32 gating matrix [B,H,N,N]
            row["gating_matrix_mib"] = gating_bytes / MIB
            if method in over_budget:
                row["status"] = f"skipped (time: {over_budget[method]}² took > {cfg.budget_s:g} s)"
                rows.append(row)
                continue
            if method in ("parallel", "fused4") and card is not None and gating_bytes > card:
                row["status"] = (
                    f"skipped (gating matrix alone {gating_bytes / 2**30:.0f} GiB"
                    f" > card {card / 2**30:.0f} GiB)"
                )
                rows.append(row)
                continue
            gen = torch.Generator(device=cfg.device).manual_seed(cfg.seed + side)
            t0 = time.perf_counter()
            try:
                if method == "sdpa":
                    inputs = {
                        n: torch.randn(B, H, N, D, generator=gen, device=cfg.device)
                        .to(torch.bfloat16)
                        .requires_grad_(True)
                        for n in ("q", "k", "v")
                    }

                    def op(t: dict[str, torch.Tensor]) -> torch.Tensor:
                        return F.scaled_dot_product_attention(t["q"], t["k"], t["v"])

                    cot_shape: tuple[int, ...] = (B, H, N, D)
                else:
                    inputs = grid_inputs(
                        B,
                        H,
                        side,
                        side,
                        D,
                        D,
                        gen=gen,
                        dtype=torch.bfloat16,
                        device=cfg.device,
                        requires_grad=True,
                    )
                    if method == "fused4":

                        def op(t: dict[str, torch.Tensor]) -> torch.Tensor:
                            return fused_four_orientations(**t)
                    else:

                        def op(t: dict[str, torch.Tensor], method: str = method) -> torch.Tensor:
                            return plstm_2d(**t, method=method, chunk_size=cfg.chunk_size)

                    cot_shape = (B, H, side, side, D)
                cot = torch.randn(cot_shape, generator=gen, device=cfg.device).to(torch.bfloat16)
                row.update(_fwd_and_bwd(op, inputs, cot, cfg))
                row["status"] = "ok"
                del inputs, cot
            except Exception as exc:  # allocation of the inputs themselves
                row["status"] = "OOM" if _is_oom(exc) else "error"
                row["message"] = str(exc)[:300]
            _free_memory(cfg.device)
            row["wall_s"] = time.perf_counter() - t0
            for part in ("fwd", "fwd_bwd"):
                if part in row and row[part]["status"] != "ok":
                    row["status"] = f"{part}: {row[part]['status']}"
            rows.append(row)
            print(f"  2d {method:>9} {side:>3}²: {_short(row)}", flush=True)
            timed_s = sum(row[p]["wall_s"] for p in ("fwd", "fwd_bwd") if p in row)
            if timed_s > cfg.budget_s:
                over_budget[method] = side
    return rows


# ----------------------------------------------------------------------------------------------
# 3. plstm_dag
# ----------------------------------------------------------------------------------------------


def bench_dag(cfg: Config) -> dict[str, Any]:
    """recurrent vs parallel ``plstm_dag`` on a batch of random molecule-like DAGs."""
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    edge_index, n_nodes = random_molecule_dags(cfg.dag_graphs, cfg.dag_nodes, gen)
    line_index = build_line_index(edge_index, num_nodes=n_nodes)
    indeg = torch.bincount(edge_index[1], minlength=n_nodes)
    outdeg = torch.bincount(edge_index[0], minlength=n_nodes)
    info = {
        "graphs": cfg.dag_graphs,
        "nodes_per_graph": list(cfg.dag_nodes),
        "N": n_nodes,
        "E": int(edge_index.shape[1]),
        "L": int(line_index.shape[1]),
        "max_in_degree": int(indeg.max()),
        "max_out_degree": int(outdeg.max()),
        "nodes_with_fan_in_gt1": int((indeg > 1).sum()),
        "nodes_with_fan_out_gt1": int((outdeg > 1).sum()),
        "H": cfg.dag_heads,
        "K": cfg.dag_dim,
        "V": cfg.dag_dim,
    }
    ei, li = edge_index.to(cfg.device), line_index.to(cfg.device)
    # prepare_dag (if the op offers it) does the index bookkeeping once per graph structure, as
    # a model with several layers on one batch would; rows "(plan)" time the op given the plan
    plans: dict[str, Any] = {}
    if hasattr(dag_ops, "prepare_dag"):
        for method in DAG_METHODS:
            t0 = time.perf_counter()
            plans[method] = dag_ops.prepare_dag(ei, li, n_nodes, method=method)
            _sync(cfg.device)
            info[f"prepare_ms_{method}"] = (time.perf_counter() - t0) * 1e3
    rows: list[dict[str, Any]] = []
    for dtype in (torch.float32, torch.bfloat16):
        for method in DAG_METHODS:
            for with_plan in (False, True) if plans else (False,):
                row: dict[str, Any] = {
                    "method": method,
                    "plan": with_plan,
                    "dtype": str(dtype).removeprefix("torch."),
                }
                t0 = time.perf_counter()
                try:
                    inputs = dag_inputs(
                        edge_index,
                        line_index,
                        n_nodes,
                        cfg.dag_heads,
                        cfg.dag_dim,
                        cfg.dag_dim,
                        gen=torch.Generator().manual_seed(cfg.seed + 11),
                        dtype=dtype,
                        device=cfg.device,
                        requires_grad=True,
                    )
                    cot = torch.randn(
                        n_nodes,
                        cfg.dag_heads,
                        cfg.dag_dim,
                        generator=torch.Generator().manual_seed(3),
                    ).to(cfg.device, dtype)
                    extra = {"plan": plans[method]} if with_plan else {}

                    def op(
                        t: dict[str, torch.Tensor], method: str = method, extra: dict = extra
                    ) -> torch.Tensor:
                        return plstm_dag(**t, edge_index=ei, line_index=li, method=method, **extra)

                    row.update(_fwd_and_bwd(op, inputs, cot, cfg))
                    row["status"] = "ok"
                    for part in ("fwd", "fwd_bwd"):
                        if row[part]["status"] != "ok":
                            row["status"] = f"{part}: {row[part]['status']}"
                    del inputs, cot
                except Exception as exc:
                    row["status"] = "OOM" if _is_oom(exc) else "error"
                    row["message"] = str(exc)[:300]
                _free_memory(cfg.device)
                row["wall_s"] = time.perf_counter() - t0
                rows.append(row)
                label = method + (" (plan)" if with_plan else "")
                print(f"  dag {label:>16} {row['dtype']}: {_short(row)}", flush=True)
    for dtype in ("float32", "bfloat16"):
        for with_plan in (False, True):
            by = {r["method"]: r for r in rows if r["dtype"] == dtype and r["plan"] == with_plan}
            suffix = "_plan" if with_plan else ""
            for part in ("fwd", "fwd_bwd", "fwd_graph", "fwd_bwd_graph"):
                rec, par = _ms(by.get("recurrent"), part), _ms(by.get("parallel"), part)
                info[f"speedup{suffix}_{part}_{dtype}"] = rec / par if rec and par else None
    return {"info": info, "rows": rows}


# ----------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------


def _ms(row: dict[str, Any] | None, part: str) -> float | None:
    if row is None or part not in row or row[part].get("status") != "ok":
        return None
    return float(row[part]["ms"])


def _mem(row: dict[str, Any] | None, part: str, key: str) -> float | None:
    if row is None or part not in row:
        return None
    value = row[part].get(key)
    return None if value is None else float(value)


def _short_status(status: str) -> str:
    """'skipped (why)' -> 'skipped'; 'fwd_bwd: OOM' -> 'OOM'; the table's note says why."""
    return status.split(" (")[0].split(":")[-1].strip()


def _cell_ms(row: dict[str, Any], part: str) -> str:
    if part not in row and part.endswith("_graph"):
        return "-"
    if part not in row:
        return _short_status(row.get("status", "-"))
    m = row[part]
    if m["status"] != "ok":
        return m["status"]
    return f"{m['ms']:.3f}" + (" (1 run)" if m["repeats"] == 1 else "")


def _cell_mem(row: dict[str, Any], part: str) -> str:
    if part not in row:
        return _short_status(row.get("status", "-"))
    m = row[part]
    if m["status"] != "ok":
        return m["status"]
    if "peak_mib" not in m:
        return "n/a"
    return f"{m['peak_mib']:.0f} / {m['incr_mib']:.0f}"


def _note(row: dict[str, Any]) -> str:
    """Why a row (or one of its parts) did not run: empty for rows that ran."""
    notes = []
    if "fwd" not in row and row.get("status", "ok") != "ok":
        notes.append(row["status"] + (f": {row['message'][:80]}" if "message" in row else ""))
    parts = (("fwd", "fwd"), ("fwd_bwd", "fwd+bwd"), ("fwd_graph", "graph fwd"))
    for part, label in (*parts, ("fwd_bwd_graph", "graph fwd+bwd")):
        m = row.get(part)
        if m and m["status"] != "ok":
            notes.append(
                f"{label} {m['status']}"
                + (f": {m['message'][:80]}" if m["status"] == "error" else "")
            )
    return "; ".join(notes)


def _short(row: dict[str, Any]) -> str:
    if "fwd" not in row:
        return str(row.get("status"))
    unit = {p: " ms" if row[p]["status"] == "ok" else "" for p in ("fwd", "fwd_bwd")}
    return (
        f"fwd {_cell_ms(row, 'fwd')}{unit['fwd']}, "
        f"fwd+bwd {_cell_ms(row, 'fwd_bwd')}{unit['fwd_bwd']}"
    )


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


METHOD_LABEL = {
    "sdpa": "SDPA (yardstick)",
    "parallel": "parallel",
    "chunkwise": "chunkwise",
    "recurrent": "recurrent",
    "fused4": "fused 4-orientation",
}


def correctness_table(rows: list[dict[str, Any]]) -> str:
    body = [
        [
            r["op"],
            r["method"],
            r["dtype"],
            f"{r['rel_err']:.2e}",
            "-" if r["grad_rel_err"] is None else f"{r['grad_rel_err']:.2e}",
            f"{r['tol']:.0e}",
            "ok" if r["ok"] else "FAIL",
        ]
        for r in rows
    ]
    return md_table(
        ["op", "method", "dtype", "max rel. err (h)", "max rel. err (grads)", "tol", "check"],
        body,
    )


def grid_table(rows: list[dict[str, Any]], cfg: Config) -> str:
    body = []
    for r in rows:
        body.append(
            [
                METHOD_LABEL[r["method"]],
                f"{r['X']}x{r['Y']}",
                str(r["N"]),
                _cell_ms(r, "fwd"),
                _cell_ms(r, "fwd_bwd"),
                _cell_ms(r, "fwd_graph"),
                _cell_ms(r, "fwd_bwd_graph"),
                _cell_mem(r, "fwd"),
                _cell_mem(r, "fwd_bwd"),
                _note(r),
            ]
        )
    title = (
        f"plstm_2d, B={cfg.batch} H={cfg.heads} K=V={cfg.dim}, bf16 inputs, P-mode gates, "
        f"chunk_size={cfg.chunk_size}; times are medians in ms; memory is MiB "
        "'raw peak / increment over the inputs'"
    )
    table = md_table(
        [
            "method",
            "grid",
            "N",
            "fwd ms",
            "fwd+bwd ms",
            "fwd ms (graph)",
            "fwd+bwd ms (graph)",
            "fwd mem MiB",
            "fwd+bwd mem MiB",
            "note",
        ],
        body,
    )
    return f"{title}\n\n{table}"


def dag_table(dag: dict[str, Any]) -> str:
    info = dag["info"]
    body = []
    for r in dag["rows"]:
        suffix = "_plan" if r["plan"] else ""
        sp_f = info.get(f"speedup{suffix}_fwd_{r['dtype']}")
        sp_b = info.get(f"speedup{suffix}_fwd_bwd_{r['dtype']}")
        body.append(
            [
                r["method"] + (" (plan)" if r["plan"] else ""),
                r["dtype"],
                _cell_ms(r, "fwd"),
                _cell_ms(r, "fwd_bwd"),
                _cell_ms(r, "fwd_graph"),
                _cell_ms(r, "fwd_bwd_graph"),
                _cell_mem(r, "fwd"),
                _cell_mem(r, "fwd_bwd"),
                f"{_fmt(sp_f)} / {_fmt(sp_b)}" if r["method"] == "parallel" else "",
                _note(r),
            ]
        )
    title = (
        f"plstm_dag, {info['graphs']} random molecule-like DAGs ({info['nodes_per_graph'][0]}-"
        f"{info['nodes_per_graph'][1]} nodes): N={info['N']} E={info['E']} L={info['L']}, "
        f"max fan-in {info['max_in_degree']}, max fan-out {info['max_out_degree']}, "
        f"H={info['H']} K=V={info['K']}; times are medians in ms (each call does the index "
        "bookkeeping; '(plan)': given a prepare_dag plan"
    )
    if "prepare_ms_parallel" in info:
        title += (
            f", prepare_dag took {info['prepare_ms_recurrent']:.1f} ms (recurrent) and "
            f"{info['prepare_ms_parallel']:.1f} ms (parallel) once"
        )
    title += "); memory is MiB 'raw peak / increment over the inputs'"
    table = md_table(
        [
            "method",
            "dtype",
            "fwd ms",
            "fwd+bwd ms",
            "fwd ms (graph)",
            "fwd+bwd ms (graph)",
            "fwd mem MiB",
            "fwd+bwd mem MiB",
            "speed-up fwd / fwd+bwd",
            "note",
        ],
        body,
    )
    return f"{title}\n\n{table}"


def targets(grid_rows: list[dict[str, Any]], dag: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """The three performance targets with their measured values."""
    by = {(r["method"], r["X"]): r for r in grid_rows}
    out: dict[str, Any] = {}
    # (a) 2D parallel forward at 14² within 3x of SDPA forward
    side = 14 if 14 in cfg.grids else cfg.grids[0]
    par, sdpa = _ms(by.get(("parallel", side)), "fwd"), _ms(by.get(("sdpa", side)), "fwd")
    ratio = par / sdpa if par and sdpa else None
    par_g = _ms(by.get(("parallel", side)), "fwd_graph")
    sdpa_g = _ms(by.get(("sdpa", side)), "fwd_graph")
    out["a"] = {
        "grid": side,
        "parallel_fwd_ms": par,
        "sdpa_fwd_ms": sdpa,
        "ratio": ratio,
        "parallel_fwd_graph_ms": par_g,
        "sdpa_fwd_graph_ms": sdpa_g,
        "ratio_graph": par_g / sdpa_g if par_g and sdpa_g else None,
        "target": "ratio <= 3",
        "met": None if ratio is None else ratio <= 3.0,
    }
    # (b) chunkwise memory per token roughly constant up to 128²
    per_token: dict[str, dict[int, float | None]] = {"fwd": {}, "fwd_bwd": {}}
    for s in cfg.grids:
        r = by.get(("chunkwise", s))
        for part in per_token:
            incr = _mem(r, part, "incr_mib")
            per_token[part][s] = None if incr is None else incr * MIB / (s * s)
    # linear growth = memory a + b·N: bytes per token must not grow with N (they fall
    # towards b while the fixed part a is amortised); a quadratic path's would grow ∝ N
    growth = {}
    for part, values in per_token.items():
        big = [v for s, v in sorted(values.items()) if s >= 24]
        ok = len(big) >= 2 and None not in big and big[0] > 0
        growth[part] = max(big[1:]) / big[0] if ok else None  # type: ignore[operator]
    b_met: bool | None = None
    if all(v is not None for v in growth.values()):
        b_met = all(v <= 1.25 for v in growth.values())  # type: ignore[operator]
    out["b"] = {
        "bytes_per_token": per_token,
        "max_growth_over_24": growth,
        "target": "bytes / (X·Y) of the increment at no grid above 24² exceed 1.25x that at 24²",
        "met": b_met,
    }
    # (c) DAG parallel >= 10x faster than recurrent (forward+backward)
    info = dag["info"]
    c = {dt: info.get(f"speedup_fwd_bwd_{dt}") for dt in ("float32", "bfloat16")}
    c_plan = {dt: info.get(f"speedup_plan_fwd_bwd_{dt}") for dt in ("float32", "bfloat16")}
    c_graph = {dt: info.get(f"speedup_plan_fwd_bwd_graph_{dt}") for dt in ("float32", "bfloat16")}
    out["c"] = {
        "speedup_fwd_bwd": c,
        "speedup_fwd_bwd_with_plan": c_plan,
        "speedup_fwd_bwd_with_plan_graph": c_graph,
        "target": "speed-up >= 10 (fwd+bwd, plain calls)",
        "met": None if None in c.values() else all(v >= 10.0 for v in c.values()),  # type: ignore[operator]
    }
    return out


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("MET" if met else "NOT MET")


def targets_text(t: dict[str, Any], cfg: Config) -> str:
    a, b, c = t["a"], t["b"], t["c"]
    lines = [
        f"(a) plstm_2d parallel fwd at {a['grid']}²: {_fmt(a['parallel_fwd_ms'])} ms vs SDPA "
        f"{_fmt(a['sdpa_fwd_ms'])} ms -> ratio {_fmt(a['ratio'])} (target <= 3): "
        f"{_verdict(a['met'])}",
        f"    under CUDA-graph replay: {_fmt(a['parallel_fwd_graph_ms'])} ms vs SDPA "
        f"{_fmt(a['sdpa_fwd_graph_ms'])} ms -> ratio {_fmt(a['ratio_graph'])}",
        "(b) chunkwise memory increment per token (KiB / (X·Y), all B·H):",
    ]
    for part, label in (("fwd", "fwd"), ("fwd_bwd", "fwd+bwd")):
        cells = ", ".join(
            f"{s}²: {_fmt(None if v is None else v / 1024, '.0f')}"
            for s, v in b["bytes_per_token"][part].items()
        )
        lines.append(
            f"    {label:>7}: {cells}  (largest / value at 24²: "
            f"{_fmt(b['max_growth_over_24'][part])})"
        )
    lines.append(f"    linear growth (per-token memory does not grow): {_verdict(b['met'])}")
    sp, spp = c["speedup_fwd_bwd"], c["speedup_fwd_bwd_with_plan"]
    lines.append(
        f"(c) plstm_dag parallel vs recurrent fwd+bwd speed-up: float32 {_fmt(sp['float32'])}, "
        f"bf16 {_fmt(sp['bfloat16'])} (target >= 10): {_verdict(c['met'])}"
    )
    if any(v is not None for v in spp.values()):
        lines.append(
            f"    given a prepare_dag plan: float32 {_fmt(spp['float32'])}, "
            f"bf16 {_fmt(spp['bfloat16'])}"
        )
    spg = c["speedup_fwd_bwd_with_plan_graph"]
    if any(v is not None for v in spg.values()):
        lines.append(
            f"    given a plan, under CUDA-graph replay: float32 {_fmt(spg['float32'])}, "
            f"bf16 {_fmt(spg['bfloat16'])}"
        )
    if cfg.quick:
        lines.append("(--quick: tiny CPU sizes; the targets are meant for the full CUDA run)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark plstm_2d / plstm_dag (every method) against SDPA; check first.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes on the CPU (grids 4², 6²; B=2; 8 DAGs): a smoke test",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $OUT if set, else ./bench_out)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="chunk_size of the chunkwise method (default 16; 2 with --quick)",
    )
    p.add_argument(
        "--device", default=None, help="torch device (default cuda, or cpu with --quick)"
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=20.0,
        help="a method's larger grids are skipped once one config takes longer",
    )
    p.add_argument(
        "--parts",
        default="grid,dag",
        help="comma-separated parts to time after the checks: grid, dag (default both)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_config(args: argparse.Namespace) -> Config:
    device = torch.device(args.device or ("cpu" if args.quick else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available: use --quick (CPU) or --device cpu")
    chunk = args.chunk_size or (2 if args.quick else 16)
    if args.quick:
        return Config(
            device=device,
            grids=(4, 6),
            batch=2,
            heads=3,
            dim=8,
            chunk_size=chunk,
            dag_graphs=8,
            dag_nodes=(5, 12),
            dag_heads=4,
            dag_dim=8,
            warmup=1,
            max_repeats=3,
            target_s=0.05,
            budget_s=args.budget_s,
            seed=args.seed,
            quick=True,
        )
    return Config(
        device=device,
        grids=(12, 14, 24, 32, 64, 128),
        batch=64,
        heads=3,
        dim=64,
        chunk_size=chunk,
        dag_graphs=256,
        dag_nodes=(20, 60),
        dag_heads=4,
        dag_dim=32,
        warmup=3,
        max_repeats=50,
        target_s=1.0,
        budget_s=args.budget_s,
        seed=args.seed,
        quick=False,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = make_config(args)
    out_dir = args.out or Path(os.environ.get("OUT") or "bench_out")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.UTC)
    cpu_name = platform.processor() or platform.machine()
    device_name = (
        torch.cuda.get_device_name(cfg.device)
        if cfg.device.type == "cuda"
        else f"CPU ({cpu_name}, {torch.get_num_threads()} threads)"
    )
    command = (
        " ".join([Path(sys.executable).name, *sys.argv])
        if argv is None
        else ("bench_ops.py " + " ".join(argv))
    )
    print(f"pLSTM op benchmark on {device_name}, torch {torch.__version__}", flush=True)

    print("\n## 1. Correctness against the float64 loop references\n", flush=True)
    checks = correctness(cfg)
    check_md = correctness_table(checks)
    print(check_md, flush=True)
    meta = {
        "device": device_name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "command": command,
        "date_utc": started.isoformat(),
        "config": {
            k: (str(v) if isinstance(v, torch.device) else v) for k, v in cfg.__dict__.items()
        },
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "fused_available": has_fused(),
    }
    results: dict[str, Any] = {"meta": meta, "correctness": checks}
    if not all(r["ok"] for r in checks):
        (out_dir / "bench_ops.json").write_text(json.dumps(results, indent=2, default=str))
        (out_dir / "bench_ops.md").write_text(check_md + "\n")
        print("\nABORTED: a method disagrees with the loop reference (see the table)", flush=True)
        return 1

    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"grid", "dag"}:
        raise SystemExit(f"--parts must name grid and/or dag, got {args.parts!r}")
    grid_rows: list[dict[str, Any]] = []
    grid_md = "(not run: --parts)"
    if "grid" in parts:
        print("\n## 2. plstm_2d vs SDPA\n", flush=True)
        grid_rows = bench_grid(cfg)
        grid_md = grid_table(grid_rows, cfg)
        print("\n" + grid_md, flush=True)

    dag: dict[str, Any] = {"info": {}, "rows": []}
    dag_md = "(not run: --parts)"
    if "dag" in parts:
        print("\n## 3. plstm_dag: recurrent vs parallel\n", flush=True)
        dag = bench_dag(cfg)
        dag_md = dag_table(dag)
        print("\n" + dag_md, flush=True)

    tg = targets(grid_rows, dag, cfg)
    results.update({"grid2d": grid_rows, "dag": dag, "targets": tg})
    results["meta"]["wall_s"] = (_dt.datetime.now(_dt.UTC) - started).total_seconds()
    versions = (
        f"{torch.__version__} (CUDA {torch.version.cuda}), python {platform.python_version()}"
    )
    summary = "\n".join(
        [
            f"device: {device_name}",
            f"torch: {versions}",
            f"command: {command}",
            f"date (UTC): {started:%Y-%m-%d %H:%M}, took {results['meta']['wall_s']:.0f} s",
            targets_text(tg, cfg),
        ]
    )
    print("\n## Summary\n\n" + summary, flush=True)
    md = "\n\n".join(
        [
            "# pLSTM op benchmark",
            "## 1. Correctness",
            check_md,
            "## 2. plstm_2d",
            grid_md,
            "## 3. plstm_dag",
            dag_md,
            "## Summary",
            "```\n" + summary + "\n```",
        ]
    )
    (out_dir / "bench_ops.md").write_text(md + "\n")
    (out_dir / "bench_ops.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {out_dir / 'bench_ops.md'} and {out_dir / 'bench_ops.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
