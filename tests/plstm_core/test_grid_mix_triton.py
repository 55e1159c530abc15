"""The fused Triton grid layer (one kernel for the four orientations, gates from the logits)
against the float64 loop reference: outputs and the gradient of z, then a whole layer's outputs
and the gradients of all its parameters, on random inputs and random gate weights.

Needs CUDA and Triton (CPU: the same kernels run in Triton's interpreter with
``TRITON_INTERPRET=1 python bench/triton_interpret_check.py --grid-mix``)."""

from __future__ import annotations

import copy

import pytest
import torch

from plstm_core.layers import PLSTMGridLayer
from plstm_core.ops import grid_mix_triton
from plstm_core.ops.grid_mix import GridMixLayout, grid_mix_reference
from tests.plstm_core.test_layers import assert_grads_close, randomize

pytestmark = pytest.mark.skipif(
    grid_mix_triton.triton is None or not torch.cuda.is_available(), reason="needs CUDA and Triton"
)
TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double().cpu() - ref).abs().max() / ref.abs().max()).item()


def _random_projection(layout: GridMixLayout, B: int, X: int, Y: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, X, Y, layout.width, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (5, 7), (13, 3), (12, 12), (14, 14), (31, 17)])
@pytest.mark.parametrize("mode", ["P", "D", "U"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fused_mix_matches_loop_reference(size, mode, dtype):
    X, Y = size
    layout = GridMixLayout(num_heads=3, qk_head_dim=24, v_head_dim=40, mode=mode)
    z64 = _random_projection(layout, 2, X, Y, X * 37 + Y).to(dtype).double().requires_grad_()
    ref = grid_mix_reference(z64, layout, method="recurrent")
    cotangent = torch.randn(ref.shape, generator=torch.Generator().manual_seed(X), dtype=ref.dtype)
    (ref * cotangent).sum().backward()
    z = z64.detach().to("cuda", dtype).requires_grad_()
    assert grid_mix_triton.grid_mix_supported(z, layout)
    h = grid_mix_triton.grid_mix_fused(z, layout)
    (h.double() * cotangent.cuda()).sum().backward()
    assert h.dtype == torch.float32 and h.shape == (2, X, Y, 3, 40)
    assert rel_err(h, ref) <= TOL[dtype]
    assert z.grad.dtype == dtype
    assert rel_err(z.grad, z64.grad) <= TOL[dtype]


def test_scratch_cap_splits_the_backward():
    layout = GridMixLayout(num_heads=2, qk_head_dim=16, v_head_dim=8, mode="P")
    z64 = _random_projection(layout, 3, 9, 6, 5).requires_grad_()
    ref = grid_mix_reference(z64, layout, method="recurrent")
    ref.sum().backward()
    z = z64.detach().float().cuda().requires_grad_()
    launch = grid_mix_triton.Launch(scratch_bytes=1)
    grid_mix_triton.grid_mix_fused(z, layout, launch).sum().backward()
    assert rel_err(z.grad, z64.grad) <= TOL[torch.float32]


def test_flag_restores_the_separate_orientations(monkeypatch):
    layout = GridMixLayout(1, 4, 4, "P")
    z = torch.zeros(1, 2, 2, layout.width, device="cuda")
    assert grid_mix_triton.grid_mix_supported(z, layout)
    monkeypatch.setenv("PLSTM_FUSED_LAYER", "0")
    assert not grid_mix_triton.grid_mix_supported(z, layout)


LAYER_TOL = {torch.float32: 1e-3, torch.bfloat16: 5e-2}


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_layer_outputs_and_parameter_gradients(mode, dtype):
    """A whole layer with random weights (gate weights included): the fused kernel against the
    recurrent form in float64 on the same (dtype-rounded) weights and input; outputs and the
    gradients of x and of every parameter."""
    g = torch.Generator().manual_seed(7)
    layer = PLSTMGridLayer(96, 3, mode=mode, method="parallel").to(dtype)
    randomize(layer, g)
    ref_layer = copy.deepcopy(layer).double()
    ref_layer.method = "recurrent"
    x64 = torch.randn(2, 12, 12, 96, generator=g).to(dtype).double()
    w = torch.randn(2, 12, 12, 96, generator=g, dtype=torch.float64)
    x_ref = x64.clone().requires_grad_()
    ref_out = ref_layer(x_ref)
    (ref_out * w).sum().backward()
    layer = layer.cuda()
    x = x64.to("cuda", dtype).requires_grad_()
    out = layer(x)
    (out.double() * w.cuda()).sum().backward()
    assert out.dtype == dtype
    assert rel_err(out, ref_out.detach()) <= LAYER_TOL[dtype]
    grads = {"x": x.grad.cpu(), **{n: p.grad.cpu() for n, p in layer.named_parameters()}}
    ref_grads = {"x": x_ref.grad, **{n: p.grad for n, p in ref_layer.named_parameters()}}
    assert_grads_close(grads, ref_grads, LAYER_TOL[dtype], f"{mode} {dtype}", global_scale=True)
