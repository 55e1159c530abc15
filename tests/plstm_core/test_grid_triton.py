"""The fused Triton forward of plstm_2d(method="parallel") on a GPU, against the loop reference."""

from __future__ import annotations

import pytest
import torch

from plstm_core.ops import grid_triton
from plstm_core.ops.grid import plstm_2d
from plstm_core.ops.grid_naive import plstm_2d_naive
from tests.plstm_core.test_grid import NAMES, random_inputs, rel_err, value_and_grads

pytestmark = pytest.mark.skipif(
    grid_triton.triton is None or not torch.cuda.is_available(), reason="needs CUDA and Triton"
)


@pytest.mark.parametrize(
    "size", [(1, 1), (1, 9), (5, 7), (13, 3), (14, 14), (16, 16), (24, 20), (31, 17)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fused_kernel_matches_loop_reference(size, dtype):
    X, Y = size
    tensors, cotangent = random_inputs(X * 31 + Y, 2, 3, X, Y, 24, 40)
    ref, ref_grads = value_and_grads(plstm_2d_naive, tensors, cotangent)
    inputs = [t.to("cuda", dtype) for t in tensors]
    assert grid_triton.triton_supported(inputs[0], inputs[2])
    h, grads = value_and_grads(lambda *a: plstm_2d(*a, method="parallel"), inputs, cotangent.cuda())
    tol, grad_tol = (1e-4, 1e-4) if dtype == torch.float32 else (1e-2, 3e-2)
    assert h.dtype == dtype
    assert rel_err(h.cpu(), ref) <= tol
    for name, grad, ref_grad in zip(NAMES, grads, ref_grads, strict=True):
        assert rel_err(grad.cpu(), ref_grad) <= grad_tol, name


def test_large_grids_fall_back_to_pytorch():
    q = torch.zeros(1, 1, 33, 17, 8, device="cuda")
    assert not grid_triton.triton_supported(q, q)
    assert not grid_triton.triton_supported(q[:, :, :4, :4].double(), q[:, :, :4, :4].double())
