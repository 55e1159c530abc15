"""The C kernel of the summed gating matrix (``plstm_core/ops/csrc/grid_gating.c``): the
matrix against the PyTorch form it replaces, and the grid mix it serves (inference, no
autograd) against the float64 loop reference, on random projections (random gate logits, not
the zero init), modes P / D / U, odd, non-square and degenerate grids, several grids per call."""

from __future__ import annotations

import shutil

import pytest
import torch

from plstm_core.ops import grid_gating_native as native
from plstm_core.ops.grid_gating_native import native_gating_available, native_summed_gating
from plstm_core.ops.grid_mix import GridMixLayout, grid_mix_reference
from plstm_core.ops.grid_mix_gates import grid_gates
from plstm_core.ops.grid_mix_summed import grid_mix_summed, padded_columns, summed_gating
from tests.plstm_core.test_layers import assert_close_rel

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)
SIZES = [(1, 1), (1, 6), (7, 1), (5, 7), (13, 3), (6, 10), (12, 12)]


def _projection(layout: GridMixLayout, X: int, Y: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, X, Y, layout.width, generator=g, dtype=torch.float64).to(dtype)


def _native_matrix(z: torch.Tensor, layout: GridMixLayout) -> torch.Tensor:
    B, X, Y, _ = z.shape
    g, direct = grid_gates(z, layout, z.dtype, X)
    out = torch.empty(B * layout.num_heads, X * Y, X * Y, dtype=z.dtype)
    native_summed_gating(g.packed.contiguous(), direct.reshape(-1, X, Y).contiguous(), out)
    return out


def _torch_matrix(z: torch.Tensor, layout: GridMixLayout) -> torch.Tensor:
    B, X, Y, _ = z.shape
    merged = layout.mode != "D"
    g, direct = grid_gates(z, layout, z.dtype, padded_columns(X) if merged else X, x_frames=merged)
    G = summed_gating(g, direct, layout.mode)[:, :X, :, :X]
    return G.reshape(B * layout.num_heads, X * Y, X * Y)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("mode", ["P", "D", "U"])
def test_native_matrix_equals_the_pytorch_form(mode: str, size: tuple, dtype) -> None:
    layout = GridMixLayout(num_heads=2, qk_head_dim=3, v_head_dim=4, mode=mode)
    z = _projection(layout, *size, seed=size[0] * 17 + size[1], dtype=dtype)
    with torch.no_grad():
        got, expected = _native_matrix(z, layout), _torch_matrix(z, layout)
    assert_close_rel(got, expected, 1e-12 if dtype == torch.float64 else 1e-5, f"{mode} {size}")


@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("mode", ["P", "D", "U"])
def test_inference_mix_through_the_kernel_matches_the_loop_reference(mode, size) -> None:
    layout = GridMixLayout(num_heads=2, qk_head_dim=3, v_head_dim=4, mode=mode)
    z = _projection(layout, *size, seed=size[0] * 7 + size[1] + len(mode))
    ref = grid_mix_reference(z, layout, method="recurrent")
    with torch.inference_mode():
        assert native_gating_available(z.dtype, z.device)
        h = grid_mix_summed(z, layout)
    assert_close_rel(h, ref, 1e-10, f"{mode} {size}")


@pytest.mark.parametrize("context", ["inference_mode", "no_grad", "grad"])
def test_kernel_serves_exactly_the_calls_without_autograd(context: str, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(
        "plstm_core.ops.grid_mix_summed.native_summed_gating",
        lambda *args: calls.append(args) or native_summed_gating(*args),
    )
    layout = GridMixLayout(num_heads=2, qk_head_dim=3, v_head_dim=4, mode="P")
    z = _projection(layout, 4, 5, seed=3, dtype=torch.float32)
    if context == "grad":
        grid_mix_summed(z.requires_grad_(True), layout)
    else:
        with getattr(torch, context)():
            grid_mix_summed(z, layout)
    assert len(calls) == (0 if context == "grad" else 1)


def test_disabled_kernel_leaves_the_pytorch_form(monkeypatch) -> None:
    layout = GridMixLayout(num_heads=2, qk_head_dim=3, v_head_dim=4, mode="D")
    z = _projection(layout, 6, 5, seed=8, dtype=torch.float32)
    with torch.inference_mode():
        native_h = grid_mix_summed(z, layout).clone()
        monkeypatch.setenv("PLSTM_NATIVE_KERNELS", "0")
        assert not native_gating_available(z.dtype, z.device)
        torch_h = grid_mix_summed(z, layout)
    assert_close_rel(native_h, torch_h, 1e-5, "native vs PyTorch form")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.int64])
def test_other_dtypes_are_not_served(dtype: torch.dtype) -> None:
    with torch.no_grad():
        assert not native_gating_available(dtype, torch.device("cpu"))


def test_non_contiguous_arguments_are_refused() -> None:
    packed = torch.rand(6, 2, 2, 2, 3, 4)
    direct, out = torch.rand(2, 4, 3).transpose(1, 2), torch.empty(2, 12, 12)
    with pytest.raises(ValueError, match="contiguous"):
        native_summed_gating(packed, direct, out)


@pytest.mark.parametrize(
    "direct_shape, out_shape", [((2, 3, 5), (2, 12, 12)), ((2, 3, 4), (2, 12, 11))]
)
def test_mismatched_shapes_are_refused(direct_shape, out_shape) -> None:
    packed = torch.rand(6, 2, 2, 2, 3, 4)
    with pytest.raises(ValueError, match=r"\[P,X,Y\]"):
        native_summed_gating(packed, torch.rand(direct_shape), torch.empty(out_shape))


def test_mixed_dtypes_are_refused() -> None:
    packed = torch.rand(6, 1, 2, 2, 2, 2)
    with pytest.raises(ValueError, match="one dtype"):
        native_summed_gating(packed, torch.rand(1, 2, 2, dtype=torch.float64), torch.empty(1, 4, 4))


def test_kernel_overwrites_every_entry_of_a_reused_buffer() -> None:
    layout = GridMixLayout(num_heads=1, qk_head_dim=2, v_head_dim=2, mode="P")
    z = _projection(layout, 4, 4, seed=11, dtype=torch.float32)
    g, direct = grid_gates(z, layout, z.dtype, 4)
    out = torch.full((3, 16, 16), float("nan"))
    native_summed_gating(g.packed.contiguous(), direct.reshape(3, 4, 4).contiguous(), out)
    assert torch.isfinite(out).all()
    assert_close_rel(out, _torch_matrix(z, layout), 1e-5, "reused buffer")


def test_unbuilt_kernel_is_reported(monkeypatch) -> None:
    monkeypatch.setattr(native, "native_function", lambda *args: None)
    packed = torch.rand(6, 1, 2, 2, 2, 2)
    with pytest.raises(RuntimeError, match="not available"):
        native_summed_gating(packed, torch.rand(1, 2, 2), torch.empty(1, 4, 4))
