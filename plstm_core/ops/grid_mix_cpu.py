"""The four-orientation mix of a pLSTM grid layer on the CPU: which fast form serves a method.

Same function as :func:`plstm_core.ops.grid_mix.grid_mix_reference` (z ``[B,X,Y,F]`` →
``[B,X,Y,H,V]``, float32 for bf16/fp16 z, equal to every method of the reference):

- ``"parallel"``, ``"fused"`` → :func:`~plstm_core.ops.grid_mix_summed.grid_mix_summed`, the
  multi-directional form (paper A.7): one summed gating matrix (built by a C kernel when no
  gradient is recorded, :mod:`~plstm_core.ops.grid_gating_native`), one contraction;
  quadratic in the number of tokens, the fastest for small grids;
- ``"recurrent"``, ``"chunkwise"`` → without autograd the recurrent form in a C kernel
  (:func:`~plstm_core.ops.grid_recurrent_native.grid_mix_recurrent_native`), with autograd
  (or without a C compiler) :func:`~plstm_core.ops.grid_mix_tiles.grid_mix_tiles`, the
  chunkwise form (paper A.7) with 4×4 tiles and a wavefront over tile anti-diagonals; both
  linear in the number of tokens, the fastest for large grids. ``chunk_size`` is not used
  (the tile side that suits the CPU is fixed, see ``grid_mix_tiles.TILE``). Grids of at most
  :data:`NATIVE_SMALL_GRID` (C kernel) or :data:`SMALL_GRID` (tiles) tokens take the summed
  form instead, which is faster there; its N×N matrix is then bounded (≤ 10 MB per grid and
  head), so memory stays linear in N.

:func:`grid_mix_cpu_supported` says whether these serve a call: CPU tensors, not while
``torch.jit`` traces or ``torch.onnx`` exports (the exported graph keeps the reference's ops),
and not with ``PLSTM_FUSED_LAYER=0``, which restores the reference (the four orientations of
``plstm_2d`` on flipped copies) on every device.
"""

from __future__ import annotations

import os

import torch

from plstm_core.ops.grid_mix import GridMixLayout, check_projection
from plstm_core.ops.grid_mix_summed import grid_mix_summed
from plstm_core.ops.grid_mix_tiles import grid_mix_tiles
from plstm_core.ops.grid_recurrent_native import (
    grid_mix_recurrent_native,
    native_recurrent_available,
)

QUADRATIC_METHODS = ("parallel", "fused")
LINEAR_METHODS = ("recurrent", "chunkwise")
SMALL_GRID = 1600
"""Tokens (40×40) up to which the linear methods take the summed form when the tiles would
serve them: on a 2-core EPYC it is faster than the tiled wavefront up to about 40×40 tokens for
mode D, 36×36 for mode P (``docs/benchmarks/vision_cpu.md``)."""
NATIVE_SMALL_GRID = 1024
"""Tokens (32×32) up to which the linear methods take the summed form when the recurrent C
kernel would serve them: on a 2-core EPYC the two are even at about 32×32 tokens
(``docs/benchmarks/vision.md``)."""


def grid_mix_cpu_supported(z: torch.Tensor) -> bool:
    """Whether :func:`grid_mix_cpu` serves z: a CPU tensor outside tracing / ONNX export and
    without ``PLSTM_FUSED_LAYER=0``."""
    if not isinstance(z, torch.Tensor) or z.device.type != "cpu":
        return False
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    return os.environ.get("PLSTM_FUSED_LAYER") != "0"


def grid_mix_cpu(z: torch.Tensor, layout: GridMixLayout, method: str) -> torch.Tensor:
    """Σ over the four orientations of ``plstm_2d`` from z ``[B,X,Y,F]``, computed by the CPU
    form that serves ``method`` (see the module docstring); returns ``[B,X,Y,H,V]``."""
    check_projection(z, layout)
    if method in QUADRATIC_METHODS:
        return grid_mix_summed(z, layout)
    if method not in LINEAR_METHODS:
        methods = list(QUADRATIC_METHODS + LINEAR_METHODS)
        raise ValueError(f"method must be one of {methods}, got {method!r}")
    tokens = z.shape[1] * z.shape[2]
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    if native_recurrent_available(dtype, z.device):
        if tokens <= NATIVE_SMALL_GRID:
            return grid_mix_summed(z, layout)
        return grid_mix_recurrent_native(z, layout)
    return grid_mix_summed(z, layout) if tokens <= SMALL_GRID else grid_mix_tiles(z, layout)
