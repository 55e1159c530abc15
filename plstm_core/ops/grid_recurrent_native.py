"""The four-orientation mix of a pLSTM grid layer in the recurrent form, computed by a C kernel
(``csrc/grid_recurrent.c``, built by :mod:`plstm_core.ops.native`), for calls without autograd.

Same function as :func:`plstm_core.ops.grid_mix.grid_mix_reference` (z ``[B,X,Y,F]`` →
``[B,X,Y,H,V]``): paper eq. 5-6 on each orientation's DAG cover of the grid (A.7), the cell
states ``[K,V]`` carried along the edges, one sweep per grid, head and orientation over the
nodes in that orientation's frame order, with only one column of states alive. The PyTorch
linear-cost form (:mod:`plstm_core.ops.grid_mix_tiles`) takes hundreds of small operations
per wavefront step; on one layer at 48×49 tokens (2-core CPU) this kernel is about 5× faster
than it and 2.5× faster than the summed quadratic form (``docs/benchmarks/vision.md``).

Time O(B·H·4·X·Y·K·V), memory O(4·B·X·Y·H·V) for the per-orientation outputs plus
O(threads·Y·K·V) of states: linear in the number of tokens. The sweeps run on
``torch.get_num_threads()`` POSIX threads.
"""

from __future__ import annotations

import ctypes

import torch

from plstm_core.ops.grid_mix import GridMixLayout, check_projection
from plstm_core.ops.grid_mix_gates import grid_gates
from plstm_core.ops.native import native_function

_FUNCTIONS = {torch.float32: "grid_recurrent_f32", torch.float64: "grid_recurrent_f64"}
_SCALARS = {torch.float32: ctypes.c_float, torch.float64: ctypes.c_double}


def _kernel(dtype: torch.dtype):
    if dtype not in _FUNCTIONS:
        return None
    argtypes = (
        [ctypes.c_long] * 6
        + [ctypes.c_void_p]
        + [ctypes.c_long] * 4
        + [_SCALARS[dtype]]
        + [ctypes.c_void_p] * 3
        + [ctypes.c_int]
    )
    return native_function("grid_recurrent", _FUNCTIONS[dtype], argtypes)


def native_recurrent_available(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether :func:`grid_mix_recurrent_native` serves a projection computed in ``dtype``
    (float32 or float64) on ``device`` (the CPU), with no gradient recorded and the kernel
    built."""
    return device.type == "cpu" and not torch.is_grad_enabled() and _kernel(dtype) is not None


def grid_mix_recurrent_native(z: torch.Tensor, layout: GridMixLayout) -> torch.Tensor:
    """Σ over the four orientations of ``plstm_2d`` (recurrent form) from the projection z
    ``[B,X,Y,F]`` (:class:`GridMixLayout`); returns ``[B,X,Y,H,V]`` (float32 for bf16/fp16 z,
    else z's dtype). Call only where :func:`native_recurrent_available` holds."""
    check_projection(z, layout)
    B, X, Y, F = z.shape
    H, K, V = layout.num_heads, layout.qk_head_dim, layout.v_head_dim
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    kernel = _kernel(dtype)
    if kernel is None or torch.is_grad_enabled():
        raise RuntimeError("the native recurrent kernel serves CPU calls without autograd only")
    g, direct = grid_gates(z, layout, dtype, X)
    packed = g.packed.contiguous()
    direct = direct.reshape(B * H, X, Y).contiguous()
    zc = z.to(dtype).contiguous()
    out = zc.new_empty(4, B, X * Y, H, V)
    failed = kernel(
        B, X, Y, H, K, V,
        zc.data_ptr(), F, 0, layout.k_offset, layout.v_offset, layout.key_scale,
        packed.data_ptr(), direct.data_ptr(), out.data_ptr(),
        torch.get_num_threads(),
    )  # fmt: skip
    if failed:
        raise MemoryError(f"the native recurrent kernel could not allocate {Y + 1}×{K}×{V} states")
    return out.sum(0).view(B, X, Y, H, V)
