"""The CPU forms of the grid layer's four-orientation mix (summed gating matrix, tiled wavefront)
against the float64 loop reference: outputs and the gradient of z, on random projections (random
gate logits, not the zero init), modes P / D / U, odd, non-square and degenerate grids."""

from __future__ import annotations

import itertools

import pytest
import torch

from plstm_core.layers import PLSTMGridLayer
from plstm_core.ops.grid_mix import GridMixLayout, grid_mix_reference
from plstm_core.ops.grid_mix_cpu import grid_mix_cpu, grid_mix_cpu_supported
from plstm_core.ops.grid_mix_summed import grid_mix_summed, padded_columns, path_products
from plstm_core.ops.grid_mix_tiles import grid_mix_tiles
from tests.plstm_core.test_layers import assert_close_rel

FORMS = {"summed": grid_mix_summed, "tiles": grid_mix_tiles}
SIZES = [(1, 1), (1, 6), (7, 1), (5, 7), (13, 3), (6, 10), (12, 12)]
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def _projection(layout: GridMixLayout, X: int, Y: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, X, Y, layout.width, generator=g, dtype=torch.float64)


def _reference(z: torch.Tensor, layout: GridMixLayout, w: torch.Tensor):
    z = z.detach().clone().requires_grad_(True)
    h = grid_mix_reference(z, layout, method="recurrent")
    (dz,) = torch.autograd.grad((h * w).sum(), z)
    return h.detach(), dz


def _check_against_reference(form: str, mode: str, size: tuple, dtype: torch.dtype) -> None:
    X, Y = size
    layout = GridMixLayout(num_heads=2, qk_head_dim=3, v_head_dim=4, mode=mode)
    z64 = _projection(layout, X, Y, seed=X * 31 + Y + len(mode))
    w = torch.randn(2, X, Y, 2, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ref, ref_dz = _reference(z64, layout, w)
    z = z64.to(dtype).requires_grad_(True)
    h = FORMS[form](z, layout)
    assert h.dtype == dtype and h.shape == (2, X, Y, 2, 4)
    assert_close_rel(h, ref, TOL[dtype], f"{form} {mode} output")
    (dz,) = torch.autograd.grad((h * w.to(dtype)).sum(), z)
    # every part of z (q, k, v, each gate's logits) against its own largest gradient
    bounds = [0, layout.k_offset, layout.v_offset, layout.source_offset, layout.mark_offset]
    bounds += [layout.direct_offset, layout.transition_offset, layout.width]
    for start, stop in itertools.pairwise(bounds):
        part, ref_part = dz[..., start:stop], ref_dz[..., start:stop]
        scale = ref_part.abs().max().item() or ref_dz.abs().max().item()
        assert_close_rel(part, ref_part, TOL[dtype], f"{form} {mode} dz[{start}:{stop}]", scale)


@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("mode", ["P", "D", "U"])
@pytest.mark.parametrize("form", list(FORMS))
def test_cpu_form_matches_loop_reference_float64(form: str, mode: str, size: tuple) -> None:
    _check_against_reference(form, mode, size, torch.float64)


@pytest.mark.parametrize("size", [(1, 6), (5, 7), (12, 12)], ids=str)
@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("form", list(FORMS))
def test_cpu_form_matches_loop_reference_float32(form: str, mode: str, size: tuple) -> None:
    _check_against_reference(form, mode, size, torch.float32)


@pytest.mark.parametrize("tile", [2, 8, 16])
def test_tiles_of_other_sides_match_the_reference(tile: int) -> None:
    """Grids of more than one tile each way (16: the GPU's tile side)."""
    layout = GridMixLayout(num_heads=2, qk_head_dim=3, v_head_dim=4, mode="P")
    z = _projection(layout, 2 * tile + 5, tile + 3, seed=3)
    ref = grid_mix_reference(z, layout, method="recurrent")
    assert_close_rel(grid_mix_tiles(z, layout, tile), ref, 1e-10, f"tile {tile}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("form", list(FORMS))
def test_half_precision_projection_computes_in_float32(form: str, dtype: torch.dtype) -> None:
    layout = GridMixLayout(num_heads=2, qk_head_dim=4, v_head_dim=4, mode="P")
    z = _projection(layout, 6, 5, seed=8).to(dtype)
    h = FORMS[form](z, layout)
    ref = grid_mix_reference(z.double(), layout, method="recurrent")
    assert h.dtype == torch.float32
    assert_close_rel(h, ref, 1e-5, f"{form} {dtype}")


@pytest.mark.parametrize("method", ["parallel", "fused", "recurrent", "chunkwise"])
def test_layer_on_cpu_is_served_by_the_cpu_forms(method: str, monkeypatch) -> None:
    layer = PLSTMGridLayer(8, 2, mode="D", qk_dim=4, method=method)
    x = torch.randn(1, 5, 6, 8, generator=torch.Generator().manual_seed(1))
    calls = []
    from plstm_core.layers import grid_layer

    def spy(z, layout, m):
        calls.append(m)
        return grid_mix_cpu(z, layout, m)

    monkeypatch.setattr(grid_layer, "grid_mix_cpu", spy)
    out = layer(x)
    assert calls == [method]
    monkeypatch.setenv("PLSTM_FUSED_LAYER", "0")  # the reference path, same result
    assert_close_rel(out, layer(x), 1e-4, method)
    assert calls == [method]


def test_cpu_forms_step_aside_for_tracing_and_when_disabled(monkeypatch) -> None:
    z = torch.zeros(1, 2, 2, 3)
    assert grid_mix_cpu_supported(z)
    monkeypatch.setenv("PLSTM_FUSED_LAYER", "0")
    assert not grid_mix_cpu_supported(z)
    monkeypatch.delenv("PLSTM_FUSED_LAYER")
    seen = []

    def probe(t: torch.Tensor) -> torch.Tensor:
        seen.append(grid_mix_cpu_supported(t))
        return t * 2

    with pytest.warns(DeprecationWarning):  # torch.onnx's TorchScript exporter still traces
        torch.jit.trace(probe, z, check_trace=False)
    assert seen == [False]


def test_unknown_method_and_bad_projection_are_rejected() -> None:
    layout = GridMixLayout(2, 4, 4, "P")
    with pytest.raises(ValueError, match="method"):
        grid_mix_cpu(torch.zeros(1, 2, 2, layout.width), layout, "sideways")
    with pytest.raises(ValueError, match="F = "):
        grid_mix_cpu(torch.zeros(1, 2, 2, layout.width + 1), layout, "parallel")


@pytest.mark.parametrize("X", range(1, 50))
def test_padded_columns_is_the_smallest_merge_friendly_size(X: int) -> None:
    def friendly(n: int) -> bool:
        while n % 2 == 0:
            n //= 2
        return n in (1, 3)

    X2 = padded_columns(X)
    assert X2 >= X and friendly(X2)
    assert not any(friendly(m) for m in range(X, X2))


def test_path_products_multiply_the_nodes_strictly_between() -> None:
    t = torch.tensor([[2.0, 3.0, 5.0, 7.0], [11.0, 13.0, 17.0, 19.0]])
    out = path_products(t, reverse_dim=0)
    assert out[0, 0, 3] == 3.0 * 5.0 and out[0, 1, 2] == 1.0 and out[0, 2, 1] == 0.0
    assert out[1, 3, 0] == 13.0 * 17.0 and out[1, 2, 1] == 1.0 and out[1, 0, 3] == 0.0
    assert (out.diagonal(0, -2, -1) == 0).all()


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("form", list(FORMS))
def test_inference_mode_path_matches_the_reference(form: str, mode: str) -> None:
    """Without autograd the forms write into reused buffers and update in place."""
    layout = GridMixLayout(num_heads=2, qk_head_dim=3, v_head_dim=4, mode=mode)
    z = _projection(layout, 10, 7, seed=4)
    ref = grid_mix_reference(z, layout, method="recurrent")
    with torch.inference_mode():
        h = FORMS[form](z, layout)
    assert_close_rel(h, ref, 1e-10, f"{form} {mode} inference")


@pytest.mark.parametrize(
    "method, size, form",
    [
        ("parallel", (41, 40), "summed"),
        ("fused", (2, 3), "summed"),
        ("chunkwise", (40, 40), "summed"),
        ("recurrent", (40, 40), "summed"),
        ("chunkwise", (41, 40), "tiles"),
        ("recurrent", (1, 1601), "tiles"),
    ],
)
def test_methods_pick_their_form_by_grid_size(method, size, form, monkeypatch) -> None:
    from plstm_core.ops import grid_mix_cpu as dispatch

    picked = []
    for name in FORMS:
        monkeypatch.setattr(dispatch, f"grid_mix_{name}", lambda z, lay, n=name: picked.append(n))
    layout = GridMixLayout(1, 1, 1, "P")
    grid_mix_cpu(torch.zeros(1, *size, layout.width), layout, method)
    assert picked == [form]


def test_scratch_buffers_are_reused_only_without_autograd() -> None:
    from plstm_core.ops.workspace import scratch

    like = torch.zeros(1)
    with torch.no_grad():
        a = scratch("test", (2, 3), like)
        b = scratch("test", (3,), like)
    assert a.data_ptr() == b.data_ptr()
    c, d = scratch("test", (2, 3), like), scratch("test", (2, 3), like)
    assert c.data_ptr() != d.data_ptr()


def test_repeated_inference_calls_do_not_share_outputs() -> None:
    layout = GridMixLayout(num_heads=2, qk_head_dim=3, v_head_dim=4, mode="P")
    z1, z2 = _projection(layout, 6, 5, seed=1), _projection(layout, 6, 5, seed=2)
    with torch.inference_mode():
        h1 = grid_mix_summed(z1, layout)
        first = h1.clone()
        grid_mix_summed(z2, layout)
    assert torch.equal(h1, first)


@pytest.mark.parametrize("form", list(FORMS))
def test_autograd_after_an_inference_mode_call_of_the_same_size(form: str) -> None:
    """Cached index tensors and masks built under inference mode must serve autograd too."""
    layout = GridMixLayout(num_heads=2, qk_head_dim=3, v_head_dim=4, mode="P")
    z = _projection(layout, 9, 11, seed=6)
    with torch.inference_mode():
        expected = FORMS[form](z, layout)
    z = z.clone().requires_grad_(True)
    h = FORMS[form](z, layout)
    (dz,) = torch.autograd.grad(h.sum(), z)
    assert torch.isfinite(dz).all()
    assert_close_rel(h.detach(), expected, 1e-12, f"{form} autograd after inference")
