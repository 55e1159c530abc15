"""The tiled (chunkwise) form of the grid layer's mix on a GPU (where ``bench/grid_tiles_gpu.py``
times it; the layer uses it on the CPU only) against the float64 loop reference: outputs and the
gradient of z, every tile side of that benchmark. Needs CUDA (on the CPU:
``test_grid_mix_cpu.py``)."""

from __future__ import annotations

import pytest
import torch

from plstm_core.ops import grid_mix_tiles
from plstm_core.ops.grid_mix import GridMixLayout, grid_mix_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double().cpu() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("tile", [4, 16])
@pytest.mark.parametrize("size", [(1, 9), (13, 3), (16, 16), (37, 21)], ids=str)
@pytest.mark.parametrize("mode", ["P", "D", "U"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_tiled_mix_matches_loop_reference(tile, size, mode, dtype):
    X, Y = size
    layout = GridMixLayout(num_heads=2, qk_head_dim=8, v_head_dim=12, mode=mode)
    g = torch.Generator().manual_seed(X * 37 + Y)
    z64 = torch.randn(2, X, Y, layout.width, generator=g, dtype=torch.float64)
    z64 = z64.to(dtype).double().requires_grad_()
    ref = grid_mix_reference(z64, layout, method="recurrent")
    cotangent = torch.randn(ref.shape, generator=g, dtype=ref.dtype)
    (ref * cotangent).sum().backward()
    z = z64.detach().to("cuda", dtype).requires_grad_()
    h = grid_mix_tiles.grid_mix_tiles(z, layout, tile)
    (h.double() * cotangent.cuda()).sum().backward()
    assert h.dtype == torch.float32 and h.shape == (2, X, Y, 2, 12)
    assert rel_err(h, ref) <= TOL[dtype]
    assert rel_err(z.grad, z64.grad) <= TOL[dtype]


def test_inference_mode_matches_the_reference():
    """Without autograd the wavefront writes into reused buffers."""
    layout = GridMixLayout(num_heads=2, qk_head_dim=8, v_head_dim=12, mode="D")
    z64 = torch.randn(3, 40, 33, layout.width, generator=torch.Generator().manual_seed(2))
    z64 = z64.double()
    ref = grid_mix_reference(z64, layout, method="recurrent")
    with torch.inference_mode():
        first = grid_mix_tiles.grid_mix_tiles(z64.float().cuda(), layout, 16)
        second = grid_mix_tiles.grid_mix_tiles(z64.float().cuda(), layout, 16)
    assert rel_err(first, ref) <= TOL[torch.float32]
    assert torch.equal(first, second)
