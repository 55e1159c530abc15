"""The one-projection layout of the grid layer and its unfused reference (any device)."""

from __future__ import annotations

import pytest
import torch

from plstm_core.layers import PLSTMGridLayer
from plstm_core.ops.grid_mix import GridMixLayout, grid_mix_reference, unpack_gates, unpack_qkv
from plstm_core.ops.grid_mix_triton import grid_mix_supported
from tests.plstm_core.test_layers import randomize


@pytest.mark.parametrize("mode, logits", [("P", 2), ("D", 3), ("U", 4)])
def test_layout_width_counts_every_column(mode: str, logits: int) -> None:
    layout = GridMixLayout(num_heads=3, qk_head_dim=5, v_head_dim=7, mode=mode)
    assert layout.width == 3 * 5 * 2 + 3 * 7 + 4 * 3 * 3 + 4 * 3 * logits
    assert layout.transition_offset == layout.width - 4 * 3 * logits


def test_layout_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        GridMixLayout(1, 1, 1, "Q")


@pytest.mark.parametrize("mode", ["P", "D", "U"])
def test_projection_equals_the_separate_linears(mode: str) -> None:
    g = torch.Generator().manual_seed(3)
    layer = PLSTMGridLayer(12, 3, mode=mode, qk_dim=6).double()
    randomize(layer, g)
    x = torch.randn(2, 4, 5, 12, generator=g, dtype=torch.float64)
    q, k, v = unpack_qkv(layer.project(x), layer.layout)
    heads = lambda t: t.reshape(2, 4, 5, 3, -1).permute(0, 3, 1, 2, 4)  # noqa: E731
    torch.testing.assert_close(q, heads(layer.q_proj(x)))
    torch.testing.assert_close(k, heads(layer.k_proj(x)) * 2**-0.5)
    torch.testing.assert_close(v, heads(layer.v_proj(x)))
    gates = unpack_gates(layer.project(x), layer.layout)
    source = torch.sigmoid(layer.source_gate(x)).reshape(2, 4, 5, 4, 3).permute(3, 0, 4, 1, 2)
    torch.testing.assert_close(gates["source"][..., 0], source)
    torch.testing.assert_close(gates["source"][..., 1], source)


def test_projection_without_qkv_bias_keeps_the_gate_biases() -> None:
    layer = PLSTMGridLayer(8, 2, bias=False)
    z = layer.project(torch.zeros(1, 2, 2, 8))
    layout = layer.layout
    assert z.shape == (1, 2, 2, layout.width)
    assert (z[..., : layout.source_offset] == 0).all()
    assert (z[..., layout.source_offset : layout.mark_offset] == -4).all()
    assert (z[..., layout.direct_offset : layout.transition_offset] == -6).all()


@pytest.mark.parametrize("method", ["parallel", "recurrent", "chunkwise"])
def test_reference_rejects_a_wrong_width(method: str) -> None:
    layout = GridMixLayout(2, 4, 4, "P")
    with pytest.raises(ValueError, match="F = "):
        grid_mix_reference(torch.zeros(1, 2, 2, layout.width + 1), layout, method=method)


def test_fused_kernel_is_not_picked_on_the_cpu() -> None:
    layout = GridMixLayout(2, 4, 4, "D")
    assert not grid_mix_supported(torch.zeros(1, 2, 2, layout.width), layout)
