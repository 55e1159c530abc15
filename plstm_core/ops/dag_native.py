"""pLSTM on a batch of DAGs in the recurrent form, computed by a C kernel
(``csrc/dag_recurrent.c``, built by :mod:`plstm_core.ops.native`), for calls without autograd.

Same function as :func:`plstm_core.ops.dag.plstm_dag` (paper eq. 5-6; every method of it gives
the same result)::

    C[e] = Σ_{l=(e'→e)} T[l] · C[e'] + S[e] · k[src(e)] ⊗ v[src(e)]
    h[n] = q[n] · Σ_{e into n} M[e] · C[e] + D[n] · (q[n]·k[n]) · v[n]

:func:`prepare_dag_native` validates the structure (indices, line edges that meet at a node,
no cycle) and orders the edges topologically in C, O(N + E + L); :func:`plstm_dag_native`
computes every edge's state once in that order, O(H·(E + L)·K·V) time and O(threads·E·K·V)
memory, the heads on ``torch.get_num_threads()`` POSIX threads (one for small graphs). The
PyTorch methods issue a few hundred small operations per layer for a small molecule (their
index bookkeeping alone ~450 per graph batch), which this replaces by two calls
(``docs/benchmarks/predict_latency_cpu2.md``).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from plstm_core.ops.dag_structure import check_dag_indices
from plstm_core.ops.native import native_function
from plstm_core.ops.validation import compute_dtype, output_dtype

_FUNCTIONS = {torch.float32: "dag_recurrent_f32", torch.float64: "dag_recurrent_f64"}
THREADED_WORK = 1 << 20
"""State multiply-adds, H·(E + L)·K·V, from which the heads are shared by several threads:
below it starting threads costs more than it saves (a small molecule is ~10⁴)."""
_RANGE, _CYCLE, _MEMORY = 1, 2, 3


@dataclass(frozen=True, eq=False)
class NativeDagPlan:
    """A DAG batch ordered for :func:`plstm_dag_native`: ``order`` ``[E]`` (edges in a
    topological order), ``lines`` ``[L]`` (line edge ids grouped by their outgoing edge,
    ``offsets`` ``[E+1]`` into it); int64 CPU tensors."""

    num_nodes: int
    edge_index: torch.Tensor
    line_index: torch.Tensor
    order: torch.Tensor
    offsets: torch.Tensor
    lines: torch.Tensor


def _plan_function():
    return native_function("dag_recurrent", "dag_plan", [ctypes.c_long] * 3 + [ctypes.c_void_p] * 8)


def _kernel(dtype: torch.dtype):
    argtypes = [ctypes.c_long] * 5 + [ctypes.c_void_p] * 14 + [ctypes.c_int]
    return native_function("dag_recurrent", _FUNCTIONS[dtype], argtypes)


def native_dag_available(device: torch.device) -> bool:
    """Whether :func:`prepare_dag_native` and :func:`plstm_dag_native` serve a call on
    ``device``: the CPU, no gradient recorded, not while tracing or exporting to ONNX, and the
    kernel built (see :mod:`plstm_core.ops.native`)."""
    if device.type != "cpu" or torch.is_grad_enabled():
        return False
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    return _plan_function() is not None


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def prepare_dag_native(
    edge_index: torch.Tensor, line_index: torch.Tensor, num_nodes: int
) -> NativeDagPlan:
    """Validate a batch of DAGs (``ValueError`` as :func:`plstm_core.ops.dag.prepare_dag`) and
    order its edges for :func:`plstm_dag_native`. O(N + E + L)."""
    check_dag_indices(edge_index, line_index, num_nodes)
    dag_plan = _plan_function()
    if dag_plan is None:
        raise RuntimeError("the native DAG kernel is not available")
    edges = edge_index.contiguous()
    lines_in, lines_out = line_index[0].contiguous(), line_index[1].contiguous()
    E, L = edges.shape[1], line_index.shape[1]
    order = torch.empty(E, dtype=torch.long)
    offsets = torch.empty(E + 1, dtype=torch.long)
    lines = torch.empty(L, dtype=torch.long)
    bad = torch.zeros(2, dtype=torch.long)
    status = dag_plan(
        num_nodes, E, L, _ptr(edges[0]), _ptr(edges[1]), _ptr(lines_in), _ptr(lines_out),
        _ptr(order), _ptr(offsets), _ptr(lines), _ptr(bad),
    )  # fmt: skip
    if status == _CYCLE:
        left, node = bad.tolist()
        raise ValueError(
            f"edge_index contains a cycle: {left} of {num_nodes} nodes lie on or behind a "
            f"cycle (e.g. node {node}); pLSTM needs a DAG"
        )
    if status == _MEMORY:
        raise MemoryError(f"the native DAG plan could not allocate {num_nodes} nodes")
    if status != 0:  # indices were checked above: a range error here is a bug
        raise RuntimeError(f"the native DAG plan refused index {int(bad[0])} (status {status})")
    return NativeDagPlan(num_nodes, edge_index, line_index, order, offsets, lines)


def plstm_dag_native(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    source: torch.Tensor,
    transition: torch.Tensor,
    mark: torch.Tensor,
    direct: torch.Tensor,
    plan: NativeDagPlan,
) -> torch.Tensor:
    """:func:`plstm_core.ops.dag.plstm_dag` on the structure of ``plan``: q, k ``[N,H,K]``
    (k scaled), v ``[N,H,V]``, source, mark ``[E,H]``, transition ``[L,H]``, direct ``[N,H]``
    → h ``[N,H,V]`` in the inputs' promoted dtype (computed in float64 if any input is float64,
    else float32). Call only where :func:`native_dag_available` holds."""
    N, H, K = q.shape
    V = v.shape[2]
    E, L = plan.edge_index.shape[1], plan.line_index.shape[1]
    expected = {
        "q": (q, (N, H, K)),
        "k": (k, (N, H, K)),
        "v": (v, (N, H, V)),
        "source": (source, (E, H)),
        "transition": (transition, (L, H)),
        "mark": (mark, (E, H)),
        "direct": (direct, (N, H)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {list(shape)}, got {list(tensor.shape)}")
    if plan.num_nodes != N:
        raise ValueError(f"plan was prepared for {plan.num_nodes} nodes, got {N}")
    inputs = (q, k, v, source, transition, mark, direct)
    dtype = compute_dtype(*inputs)
    kernel = _kernel(dtype)
    if kernel is None or torch.is_grad_enabled():
        raise RuntimeError("the native DAG kernel serves CPU calls without autograd only")
    q_, k_, v_, s_, t_, m_, d_ = (x.to(dtype).contiguous() for x in inputs)
    h = q_.new_empty(N, H, V)
    # named, so that every array lives until the kernel returns
    edges, line_in = plan.edge_index.contiguous(), plan.line_index[0].contiguous()
    failed = kernel(
        N, E, H, K, V, _ptr(edges[0]), _ptr(edges[1]), _ptr(plan.order), _ptr(plan.offsets),
        _ptr(plan.lines), _ptr(line_in),
        _ptr(q_), _ptr(k_), _ptr(v_), _ptr(s_), _ptr(t_), _ptr(m_), _ptr(d_), _ptr(h),
        torch.get_num_threads() if H * (E + L) * K * V >= THREADED_WORK else 1,
    )  # fmt: skip
    if failed:
        raise MemoryError(f"the native DAG kernel could not allocate {E}×{K}×{V} states")
    return h.to(output_dtype(*inputs))
