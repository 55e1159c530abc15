"""The fused Triton backward of plstm_2d(method="parallel") against the float64 loop reference.

The kernel tests need CUDA and Triton (CPU runs: ``bench/triton_interpret_check.py`` drives the
same kernel in Triton's interpreter); the flag test runs everywhere.
"""

from __future__ import annotations

import pytest
import torch

from plstm_core.ops import grid_triton
from plstm_core.ops.grid import plstm_2d
from plstm_core.ops.grid_naive import plstm_2d_naive
from plstm_core.ops.grid_triton_bwd import grid_parallel_backward
from tests.plstm_core.test_grid import NAMES, random_inputs, rel_err, value_and_grads

needs_cuda = pytest.mark.skipif(
    grid_triton.triton is None or not torch.cuda.is_available(), reason="needs CUDA and Triton"
)
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def test_flag_selects_the_fused_backward(monkeypatch):
    monkeypatch.delenv("PLSTM_TRITON_BACKWARD", raising=False)
    monkeypatch.delenv("PLSTM_DISABLE_TRITON", raising=False)
    assert grid_triton.triton_backward_enabled()  # the default
    monkeypatch.setenv("PLSTM_TRITON_BACKWARD", "0")
    assert not grid_triton.triton_backward_enabled()
    monkeypatch.setenv("PLSTM_TRITON_BACKWARD", "1")
    monkeypatch.setenv("PLSTM_DISABLE_TRITON", "1")
    assert not grid_triton.triton_backward_enabled()


def _d_mode(tensors, seed):
    """Exact zeros: the cross transition 0→1 everywhere, t11 at about a third of the nodes."""
    g = torch.Generator().manual_seed(seed)
    t = tensors[4].clone()
    t[..., 0, 1] = 0.0
    t[..., 1, 1] *= torch.rand(t.shape[:-2], generator=g, dtype=t.dtype) > 1 / 3
    return [*tensors[:4], t, *tensors[5:]]


@needs_cuda
@pytest.mark.parametrize("size", [(1, 1), (1, 9), (5, 7), (13, 3), (12, 12), (16, 16), (31, 17)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fused_backward_matches_loop_reference(size, dtype):
    X, Y = size
    tensors, cotangent = random_inputs(X * 37 + Y, 2, 3, X, Y, 24, 40)
    if X * Y % 2:
        tensors = _d_mode(tensors, X + Y)
    inputs = [t.to(dtype) for t in tensors]
    _, ref_grads = value_and_grads(plstm_2d_naive, [t.double() for t in inputs], cotangent)
    grads = grid_parallel_backward(*(t.cuda() for t in inputs), cotangent.float().cuda())
    for name, grad, ref_grad, x in zip(NAMES, grads, ref_grads, inputs, strict=True):
        assert grad.dtype == dtype and grad.shape == x.shape, name
        assert rel_err(grad.cpu(), ref_grad) <= TOL[dtype], name


@needs_cuda
def test_scratch_cap_splits_the_launch():
    tensors, cotangent = random_inputs(5, 3, 2, 9, 6, 16, 8)
    _, ref_grads = value_and_grads(plstm_2d_naive, tensors, cotangent)
    cuda = [t.float().cuda() for t in tensors]
    grads = grid_parallel_backward(*cuda, cotangent.float().cuda(), scratch_bytes=1)
    for name, grad, ref_grad in zip(NAMES, grads, ref_grads, strict=True):
        assert rel_err(grad.cpu(), ref_grad) <= TOL[torch.float32], name


@needs_cuda
def test_plstm_2d_backward_behind_the_flag(monkeypatch):
    monkeypatch.setenv("PLSTM_TRITON_BACKWARD", "1")
    monkeypatch.delenv("PLSTM_DISABLE_TRITON", raising=False)
    tensors, cotangent = random_inputs(11, 2, 3, 12, 12, 64, 64)
    _, ref_grads = value_and_grads(plstm_2d_naive, tensors, cotangent)
    wanted = (True, True, False, True, True, False, True)
    leaves = [t.float().cuda().requires_grad_(w) for t, w in zip(tensors, wanted, strict=True)]
    h = plstm_2d(*leaves, method="parallel")
    (h.double() * cotangent.cuda()).sum().backward()
    for name, x, ref_grad, w in zip(NAMES, leaves, ref_grads, wanted, strict=True):
        if w:
            assert rel_err(x.grad.cpu(), ref_grad) <= TOL[torch.float32], name
        else:
            assert x.grad is None, name
