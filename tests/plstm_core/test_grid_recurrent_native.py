"""The recurrent C kernel of the grid layer's four-orientation mix
(``plstm_core/ops/csrc/grid_recurrent.c``) against the float64 loop reference, on random
projections (random gate logits, not the zero init), modes P / D / U, odd, non-square and
degenerate grids, several images and any number of threads; and the CPU dispatch that serves
the linear methods with it."""

from __future__ import annotations

import shutil

import pytest
import torch

from plstm_core.layers import PLSTMGridLayer
from plstm_core.ops import grid_mix_cpu as dispatch
from plstm_core.ops.grid_mix import GridMixLayout, grid_mix_reference
from plstm_core.ops.grid_recurrent_native import (
    grid_mix_recurrent_native,
    native_recurrent_available,
)
from tests.plstm_core.test_layers import assert_close_rel

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)
SIZES = [(1, 1), (1, 6), (7, 1), (5, 7), (13, 3), (6, 10), (12, 12)]
TOL = {torch.float32: 1e-5, torch.float64: 1e-11}


def _projection(layout: GridMixLayout, X: int, Y: int, seed: int, batch: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, X, Y, layout.width, generator=g, dtype=torch.float64)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("mode", ["P", "D", "U"])
def test_kernel_matches_the_loop_reference(mode: str, size: tuple, dtype) -> None:
    layout = GridMixLayout(num_heads=2, qk_head_dim=3, v_head_dim=4, mode=mode)
    z = _projection(layout, *size, seed=size[0] * 13 + size[1] + len(mode))
    ref = grid_mix_reference(z, layout, method="recurrent")
    with torch.inference_mode():
        h = grid_mix_recurrent_native(z.to(dtype), layout)
    assert h.dtype == dtype and h.shape == ref.shape
    assert_close_rel(h, ref, TOL[dtype], f"{mode} {size} {dtype}")


@pytest.mark.parametrize("count", [1, 2, 5, 64])
def test_any_number_of_threads_gives_the_same_result(count: int, threads) -> None:
    layout = GridMixLayout(num_heads=3, qk_head_dim=4, v_head_dim=5, mode="P")
    z = _projection(layout, 6, 7, seed=21, batch=2)
    ref = grid_mix_reference(z, layout, method="recurrent")
    threads(count)
    with torch.inference_mode():
        h = grid_mix_recurrent_native(z, layout)
    assert_close_rel(h, ref, TOL[torch.float64], f"{count} threads")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_projection_computes_in_float32(dtype: torch.dtype) -> None:
    layout = GridMixLayout(num_heads=2, qk_head_dim=3, v_head_dim=4, mode="D")
    z = _projection(layout, 5, 6, seed=2).to(dtype)
    ref = grid_mix_reference(z.double(), layout, method="recurrent")
    with torch.inference_mode():
        h = grid_mix_recurrent_native(z, layout)
    assert h.dtype == torch.float32
    assert_close_rel(h, ref, TOL[torch.float32], f"{dtype} projection")


def test_autograd_calls_are_refused() -> None:
    layout = GridMixLayout(num_heads=1, qk_head_dim=2, v_head_dim=2, mode="P")
    assert not native_recurrent_available(torch.float32, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="without autograd"):
        grid_mix_recurrent_native(torch.rand(1, 2, 2, layout.width), layout)


def test_bad_projection_is_rejected() -> None:
    layout = GridMixLayout(num_heads=1, qk_head_dim=2, v_head_dim=2, mode="P")
    with torch.inference_mode(), pytest.raises(ValueError, match=r"\[B,X,Y,F\]"):
        grid_mix_recurrent_native(torch.rand(1, 2, 2, layout.width + 1), layout)


@pytest.mark.parametrize(
    "grad, size, form",
    [
        (False, (32, 32), "summed"),
        (False, (33, 32), "native"),
        (False, (1, 1025), "native"),
        (True, (33, 32), "summed"),
        (True, (41, 40), "tiles"),
    ],
)
def test_linear_methods_pick_their_form(grad: bool, size: tuple, form: str, monkeypatch) -> None:
    picked = []
    for name, attr in (
        ("summed", "grid_mix_summed"),
        ("tiles", "grid_mix_tiles"),
        ("native", "grid_mix_recurrent_native"),
    ):
        monkeypatch.setattr(dispatch, attr, lambda z, lay, n=name: picked.append(n))
    layout = GridMixLayout(1, 1, 1, "P")
    with torch.set_grad_enabled(grad):
        dispatch.grid_mix_cpu(torch.zeros(1, *size, layout.width), layout, "recurrent")
    assert picked == [form]


@pytest.mark.parametrize("method", ["recurrent", "chunkwise"])
def test_layer_on_a_large_grid_matches_the_reference_layer(method: str, monkeypatch) -> None:
    torch.manual_seed(3)
    layer = PLSTMGridLayer(8, 2, mode="P", method=method).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(1, 33, 34, 8, dtype=torch.float64)
    with torch.inference_mode():
        h = layer(x)
    monkeypatch.setenv("PLSTM_FUSED_LAYER", "0")  # four plstm_2d calls of that method
    with torch.no_grad():
        ref = layer(x)
    assert_close_rel(h, ref, 1e-9, f"{method} layer at 33×34")
