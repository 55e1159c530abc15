"""The summed gating matrix of a grid layer's four orientations, computed by a C kernel
(``csrc/grid_gating.c``, built by :mod:`plstm_core.ops.native`), for calls without autograd.

Same matrix as :func:`plstm_core.ops.grid_mix_summed.summed_gating` (paper eq. 7, A.7
multi-directional form; G[n, n'] target n, source n', stored node order, Σ_o Direct_o on the
diagonal), by a different route: per orientation ONE sweep over the grid in its frame order
that carries, for every source, the weight of the paths arriving at the current node over
its x edge and over its y edge, and adds mark × their sum to the node's row of G. The PyTorch
forms issue a few hundred small operations per layer for the same matrix (about 0.5-0.9 ms
at 12×12 tokens on a 2-core CPU, against about 60 µs here).

Time O(P·N²) (about N²/4 source-target pairs per orientation, P = B·H, N = X·Y), memory
O(P·N²) for G plus O(Y·N) of working rows; single-threaded.
"""

from __future__ import annotations

import ctypes

import torch

from plstm_core.ops.native import native_function

_FUNCTIONS = {torch.float32: "summed_gating_f32", torch.float64: "summed_gating_f64"}


def _kernel(dtype: torch.dtype):
    if dtype not in _FUNCTIONS:
        return None
    argtypes = [ctypes.c_long] * 3 + [ctypes.c_void_p] * 3
    return native_function("grid_gating", _FUNCTIONS[dtype], argtypes)


def native_gating_available(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether :func:`native_summed_gating` serves tensors of ``dtype`` on ``device``: float32
    or float64 on the CPU, no gradient recorded, and the kernel built (see
    :mod:`plstm_core.ops.native`)."""
    return device.type == "cpu" and not torch.is_grad_enabled() and _kernel(dtype) is not None


def native_summed_gating(packed: torch.Tensor, direct: torch.Tensor, out: torch.Tensor) -> None:
    """Write G ``[P,N,N]`` into ``out`` from the gates ``packed`` ``[6,P,2,2,X,Y]`` (entries in
    the order of ``grid_mix_gates.ENTRIES``, per orientation (fx, fy), stored node order) and
    ``direct`` ``[P,X,Y]`` (summed over the orientations); all contiguous, one dtype.

    Call only where :func:`native_gating_available` is true."""
    _, P, _, _, X, Y = packed.shape
    N = X * Y
    if not (packed.is_contiguous() and direct.is_contiguous() and out.is_contiguous()):
        raise ValueError("packed, direct and out must be contiguous")
    if direct.shape != (P, X, Y) or out.shape != (P, N, N):
        raise ValueError(
            f"direct must be [P,X,Y] = {[P, X, Y]} and out [P,N,N] = {[P, N, N]}, got "
            f"{list(direct.shape)} and {list(out.shape)}"
        )
    if len({packed.dtype, direct.dtype, out.dtype}) != 1:
        raise ValueError("packed, direct and out must have one dtype")
    kernel = _kernel(packed.dtype)
    if kernel is None:
        raise RuntimeError("the native gating kernel is not available")
    if kernel(P, X, Y, packed.data_ptr(), direct.data_ptr(), out.data_ptr()) != 0:
        raise MemoryError(f"the native gating kernel could not allocate {Y + 1}×{N} rows")
