"""pLSTM layers: every method agrees with a float64 loop reference (outputs and all grads),
the fused four-orientation form equals the four separate orientations, Table 4 init."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from plstm_core.gates import TRANSITION_SCALE
from plstm_core.layers import MultiHeadRMSNorm, PLSTMDAGLayer, PLSTMGridLayer
from plstm_core.layers.grid_layer import ORIENTATION_FLIPS
from plstm_core.ops.dag_naive import plstm_dag_naive
from plstm_core.ops.dag_structure import build_line_index
from plstm_core.ops.grid import plstm_2d
from plstm_core.ops.grid_naive import plstm_2d_naive

GRID_METHODS = ("parallel", "recurrent", "chunkwise", "fused")
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}
# After the multi-head RMSNorm: its gradient scales with 1 / rms(head vector), so nodes whose
# pLSTM output is small amplify the float32 rounding of the op (every method alike; the op
# itself is held to TOL at the "mix" level, before the norm).
LAYER_TOL = {torch.float32: 1e-3, torch.float64: 1e-10}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomize(layer: nn.Module, g: torch.Generator) -> None:
    """Re-draw every parameter (gate weights included, NOT the zero init) as randn · 0.5."""
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def assert_close_rel(
    got: torch.Tensor, ref: torch.Tensor, tol: float, what: str, scale: float | None = None
) -> None:
    """|got − ref| ≤ tol · max|ref| (or tol · ``scale`` when given)."""
    assert got.shape == ref.shape, what
    assert torch.isfinite(got).all(), what
    scale = ref.abs().max().item() if scale is None else scale
    err = (got.double() - ref.double()).abs().max().item()
    assert err <= tol * scale, f"{what}: max error {err:.3e} vs tolerance {tol:.1e} · {scale:.3e}"


def assert_grads_close(
    grads: dict, ref_grads: dict, tol: float, what: str, global_scale: bool = False
) -> None:
    """Every gradient within tol of its reference, relative to its own max magnitude.

    ``global_scale``: relative to the largest reference gradient over all tensors instead.
    Used after the RMSNorm, which is invariant to the scale of each head's vector: gradients
    along that scale cancel analytically to ~eps and are then pure rounding in float32.
    """
    top = max(r.abs().max().item() for r in ref_grads.values())
    for name, ref in ref_grads.items():
        own = ref.abs().max().item()
        if own == 0:  # no dependence at all (e.g. edge gates of a 1×1 grid): must stay zero-ish
            assert_close_rel(grads[name], ref, tol, f"{what} grad of {name}", scale=top)
        else:
            scale = max(own, top) if global_scale else own
            assert_close_rel(grads[name], ref, tol, f"{what} grad of {name}", scale=scale)


def _flip(t: torch.Tensor, fx: bool, fy: bool) -> torch.Tensor:
    dims = [d for d, f in ((2, fx), (3, fy)) if f]
    return t.flip(dims) if dims else t


def reference_grid_mix(layer: PLSTMGridLayer, x: torch.Tensor) -> torch.Tensor:
    """Σ over the four orientations of the loop reference on flipped inputs, [B,H,X,Y,V]."""
    q, k, v = layer._qkv(x)
    g = layer.gates(x)
    total = 0
    for o, (fx, fy) in enumerate(ORIENTATION_FLIPS):
        args = [q, k, v, g["source"][o], g["transition"][o], g["mark"][o], g["direct"][o]]
        h = plstm_2d_naive(*(_flip(a, fx, fy) for a in args))
        total = total + _flip(h, fx, fy)
    return total


def reference_grid_forward(layer: PLSTMGridLayer, x: torch.Tensor) -> torch.Tensor:
    B, X, Y, D = x.shape
    h = reference_grid_mix(layer, x).permute(0, 2, 3, 1, 4)
    return layer.out_proj(layer.norm(h).reshape(B, X, Y, D))


def grads_of(layer: nn.Module, x: torch.Tensor, out: torch.Tensor, w: torch.Tensor) -> dict:
    """Gradients of (out · w).sum() w.r.t. x and every parameter (zeros where unused)."""
    names = ["x", *(n for n, _ in layer.named_parameters())]
    tensors = [x, *layer.parameters()]
    grads = torch.autograd.grad((out * w).sum(), tensors, allow_unused=True)
    return {
        n: torch.zeros_like(t) if gr is None else gr
        for n, t, gr in zip(names, tensors, grads, strict=True)
    }


GRID_CASES = [  # (B, X, Y, dim, heads, qk_dim)
    (2, 1, 1, 8, 2, 6),
    (2, 5, 7, 12, 3, 6),
    (1, 13, 3, 8, 2, 12),
]


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("case", GRID_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grid_layer_methods_match_reference(mode: str, case: tuple, dtype: torch.dtype) -> None:
    B, X, Y, dim, heads, qk_dim = case
    g = _gen(sum(case) * 7 + (mode == "D"))
    layer = PLSTMGridLayer(dim, heads, mode=mode, qk_dim=qk_dim, chunk_size=2).double()
    randomize(layer, g)
    x64 = torch.randn(B, X, Y, dim, generator=g, dtype=torch.float64, requires_grad=True)
    w_mix = torch.randn(B, heads, X, Y, dim // heads, generator=g, dtype=torch.float64)
    w = torch.randn(B, X, Y, dim, generator=g, dtype=torch.float64)
    ref_mix = reference_grid_mix(layer, x64)
    ref_mix_grads = grads_of(layer, x64, ref_mix, w_mix)
    ref_out = reference_grid_forward(layer, x64)
    ref_grads = grads_of(layer, x64, ref_out, w)
    if X * Y > 1:  # every parameter matters (a 1×1 grid has no edges for the edge gates)
        assert all(r.abs().max() > 0 for r in ref_grads.values())

    test_layer = copy.deepcopy(layer).to(dtype)
    x = x64.detach().to(dtype).requires_grad_(True)
    tol = TOL[dtype]
    for method in GRID_METHODS:
        test_layer.method = method
        # the four-orientation pLSTM itself: strict per-tensor accuracy
        mix = test_layer.mix(x)
        assert_close_rel(mix, ref_mix, tol, f"{method} mix")
        grads = grads_of(test_layer, x, mix, w_mix.to(dtype))
        assert_grads_close(grads, ref_mix_grads, tol, f"{method} mix")
        # the whole layer (norm + projection)
        out = test_layer(x)
        assert out.dtype == dtype and out.shape == (B, X, Y, dim)
        assert_close_rel(out, ref_out, tol, f"{method} output")
        grads = grads_of(test_layer, x, out, w.to(dtype))
        assert_grads_close(grads, ref_grads, LAYER_TOL[dtype], f"{method} layer", global_scale=True)


@pytest.mark.parametrize("mode", ["P", "D", "U"])
def test_fused_equals_sum_of_orientations(mode: str) -> None:
    g = _gen(11)
    layer = PLSTMGridLayer(8, 2, mode=mode, qk_dim=4).double()
    randomize(layer, g)
    x = torch.randn(2, 6, 5, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        q, k, v = layer._qkv(x)
        gates = layer.gates(x)
        parts = []
        for o, (fx, fy) in enumerate(ORIENTATION_FLIPS):
            args = [q, k, v, gates["source"][o], gates["transition"][o], gates["mark"][o]]
            args.append(gates["direct"][o])
            h = plstm_2d(*(_flip(a, fx, fy) for a in args), method="parallel")
            parts.append(_flip(h, fx, fy))
        layer.method = "fused"
        fused = layer.mix(x)
    assert_close_rel(fused, sum(parts), 1e-12, "fused vs Σ orientations")
    # each orientation matters: dropping any one of them changes the result
    for o in range(4):
        assert (fused - (sum(parts) - parts[o])).abs().max() > 1e-6


def test_orientations_are_causal_cones() -> None:
    """Orientation (flip x, flip y) only sees nodes on its own side (up to the direct term)."""
    g = _gen(12)
    layer = PLSTMGridLayer(4, 1, mode="D", qk_dim=4).double()
    randomize(layer, g)
    x = torch.randn(1, 5, 6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    q, k, v = layer._qkv(x)
    gates = layer.gates(x)
    px, py = 2, 3
    for o, (fx, fy) in enumerate(ORIENTATION_FLIPS):
        args = [q, k, v, gates["source"][o], gates["transition"][o], gates["mark"][o]]
        args.append(torch.zeros_like(gates["direct"][o]))
        h = _flip(plstm_2d_naive(*(_flip(a, fx, fy) for a in args)), fx, fy)
        (grad,) = torch.autograd.grad(h[0, :, px, py].sum(), x, retain_graph=True)
        seen = grad.abs().sum(-1)[0] > 0  # [X, Y]: which inputs reach node (px, py)
        xs = torch.arange(5)[:, None].expand(5, 6)
        ys = torch.arange(6)[None, :].expand(5, 6)
        before_x = xs >= px if fx else xs <= px
        before_y = ys >= py if fy else ys <= py
        assert not (seen & ~(before_x & before_y)).any(), f"orientation {o} leaks"
        assert seen[0 if not fx else 4, 0 if not fy else 5], f"orientation {o} misses its corner"


def test_grid_layer_init_matches_table4() -> None:
    H = 5
    for mode, n_logits in (("P", 2), ("D", 3), ("U", 4)):
        layer = PLSTMGridLayer(20, H, mode=mode)
        for lin in (layer.source_gate, layer.mark_gate, layer.direct_gate, layer.transition_gate):
            assert (lin.weight == 0).all()
        assert (layer.source_gate.bias == -4).all()
        assert (layer.mark_gate.bias == -4).all()
        assert (layer.direct_gate.bias == -6).all()
        bias = layer.transition_gate.bias.detach().reshape(4, H, n_logits)
        if mode == "P":
            for o in range(4):
                torch.testing.assert_close(bias[o, :, 0], torch.linspace(-2, 2, H))
            assert (bias[..., 1] == 1).all()
        else:
            assert (bias == 1).all()
        assert layer.norm.eps == 1e-5 and (layer.norm.weight == 1).all()
        assert TRANSITION_SCALE == 5.0
        # the resulting gate values at init, for any input
        x = torch.randn(2, 3, 4, 20, generator=_gen(1))
        gates = layer.gates(x)
        for name, bias in (("source", -4), ("mark", -4), ("direct", -6)):
            value = 1 / (1 + math.exp(-bias))
            torch.testing.assert_close(gates[name], torch.full_like(gates[name], value))
        T = gates["transition"]
        if mode == "P":
            alpha = torch.sigmoid(torch.linspace(-2, 2, H))
            gamma = math.tanh(5.0)
            torch.testing.assert_close(T[0, 0, :, 0, 0, 0, 0], gamma * alpha)
            torch.testing.assert_close(T[0, 0, :, 0, 0, 1, 1], gamma * (1 - alpha))
        elif mode == "D":
            assert (T[..., 0, 1] == 0).all()
            torch.testing.assert_close(T[..., 1, 0], torch.full_like(T[..., 1, 0], math.tanh(5.0)))
        else:
            torch.testing.assert_close(T, torch.full_like(T, math.tanh(5.0)))


def test_grid_layer_method_switch_and_validation() -> None:
    layer = PLSTMGridLayer(8, 2, mode="D", qk_dim=4, method="recurrent")
    x = torch.randn(1, 3, 4, 8, generator=_gen(2))
    ref = layer(x)
    for method in ("parallel", "chunkwise", "fused"):
        layer.method = method
        assert_close_rel(layer(x), ref, 1e-4, method)
    layer.method = "sideways"
    with pytest.raises(ValueError, match="method"):
        layer(x)
    layer.method = "parallel"
    with pytest.raises(ValueError, match=r"\[B,X,Y,D\]"):
        layer(torch.randn(1, 3, 4, 7))
    with pytest.raises(ValueError, match=r"\[B,X,Y,D\]"):
        layer(torch.randn(3, 4, 8))
    with pytest.raises(ValueError, match="mode"):
        PLSTMGridLayer(8, 2, mode="Q")
    with pytest.raises(ValueError, match="num_heads"):
        PLSTMGridLayer(9, 2)
    with pytest.raises(ValueError, match="qk_dim"):
        PLSTMGridLayer(8, 2, qk_dim=5)
    with pytest.raises(ValueError, match="method"):
        PLSTMGridLayer(8, 2, method="magic")


@pytest.mark.parametrize("method", ["parallel", "fused", "chunkwise"])
def test_grid_layer_bf16(method: str) -> None:
    g = _gen(21)
    layer = PLSTMGridLayer(8, 2, mode="P", qk_dim=4, method=method)
    randomize(layer, g)
    x = torch.randn(2, 5, 6, 8, generator=g)
    ref = layer(x)
    out = layer.to(torch.bfloat16)(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert_close_rel(out.float(), ref, 5e-2, f"bf16 {method}")


def test_grid_layer_bf16_gates_in_float32() -> None:
    layer = PLSTMGridLayer(8, 2, mode="P").to(torch.bfloat16)
    randomize(layer, _gen(22))
    gates = layer.gates(torch.randn(1, 4, 5, 8, generator=_gen(23)).bfloat16())
    assert all(t.dtype == torch.float32 for t in gates.values())
    assert (gates["transition"].abs().sum(-1) <= 1 + 1e-6).all()


def _change_weights(layer: PLSTMGridLayer, how: str, g: torch.Generator) -> None:
    """Re-draw every parameter of ``layer`` in one of the ways a user or trainer does."""
    other = PLSTMGridLayer(8, 2, mode=layer.mode, qk_dim=4)
    randomize(other, g)
    if how == "load_state_dict":
        layer.load_state_dict(other.state_dict())
    elif how == "copy_":
        with torch.no_grad():
            for p, q in zip(layer.parameters(), other.parameters(), strict=True):
                p.copy_(q)
    elif how == "optimizer_step":
        opt = torch.optim.SGD(layer.parameters(), lr=1.0)
        for p, q in zip(layer.parameters(), other.parameters(), strict=True):
            p.grad = p.detach() - q.detach()
        opt.step()
    elif how == "assign_data":
        for p, q in zip(layer.parameters(), other.parameters(), strict=True):
            p.data = q.detach().clone()
    else:
        raise AssertionError(how)


def _random_layer(seed: int, mode: str) -> tuple[PLSTMGridLayer, torch.Tensor, torch.Generator]:
    """A small grid layer with random weights (gates included) and a random input."""
    g = _gen(seed)
    layer = PLSTMGridLayer(8, 2, mode=mode, qk_dim=4)
    randomize(layer, g)
    return layer, torch.randn(1, 4, 5, 8, generator=g), g


@pytest.mark.parametrize("how", ["load_state_dict", "copy_", "optimizer_step", "assign_data"])
def test_grid_layer_inference_mode_sees_new_weights(how: str) -> None:
    """The concatenated projection kept between inference-mode calls follows weight changes."""
    layer, x, g = _random_layer(31, "P")
    with torch.inference_mode():
        before = layer(x)
    _change_weights(layer, how, g)
    fresh = copy.deepcopy(layer)
    with torch.inference_mode():
        after = layer(x)
        expected = fresh(x)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)


class _Doubled(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


def test_grid_layer_inference_mode_with_a_parametrized_projection() -> None:
    """A computed weight (torch.nn.utils.parametrize) is read anew on every call."""
    from torch.nn.utils import parametrize

    layer, x, _ = _random_layer(33, "P")
    parametrize.register_parametrization(layer.q_proj, "weight", _Doubled())
    with torch.inference_mode():
        before = layer(x)
    with torch.no_grad():
        layer.q_proj.parametrizations.weight.original.mul_(-1.0)
    with torch.inference_mode():
        after = layer(x)
    fresh = copy.deepcopy(layer)
    with torch.inference_mode():
        expected = fresh(x)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)


@pytest.mark.parametrize("grad_mode", ["autograd", "no_grad"])
def test_grid_layer_calls_outside_inference_mode_after_one_inside(grad_mode: str) -> None:
    """After an inference-mode call, a call with autograd gets a gradient for every projection
    weight and bias, and a no_grad call (as in evaluation during training) the same output."""
    layer, x, _ = _random_layer(32, "D")
    with torch.inference_mode():
        expected = layer(x)
    if grad_mode == "no_grad":
        with torch.no_grad():
            torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)
        return
    out = layer(x)
    out.square().sum().backward()
    assert_close_rel(out.detach(), expected, 1e-5, "autograd after inference mode")
    for lin in layer._projections():
        for p in (lin.weight, lin.bias):
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_multihead_rmsnorm() -> None:
    g = _gen(3)
    norm = MultiHeadRMSNorm(3, 4).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(3, 4, generator=g, dtype=torch.float64))
    x = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    y = norm(x)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(y, expected)
    scaled = x.clone()
    scaled[..., 1, :] *= 100  # heads are normalised separately: the others do not change
    y2 = norm(scaled)
    torch.testing.assert_close(y2[..., [0, 2], :], y[..., [0, 2], :])
    torch.testing.assert_close(y2[..., 1, :], y[..., 1, :], rtol=1e-4, atol=1e-4)
    unit = MultiHeadRMSNorm(3, 4).double()(100 * x)
    ones = torch.ones(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(unit.pow(2).mean(-1), ones, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[..., H, V\]"):
        norm(torch.randn(2, 12))
    assert norm(x.bfloat16()).dtype == torch.bfloat16


# ----------------------------------------------------------------------------- DAG layer


def random_dag_batch(sizes: list[int], g: torch.Generator, p: float = 0.35) -> torch.Tensor:
    """A disjoint union of random DAGs (edges i→j for i before j in a random order)."""
    parts, offset = [], 0
    for n in sizes:
        order = torch.randperm(n, generator=g)
        pairs = torch.triu_indices(n, n, offset=1)
        keep = torch.rand(pairs.shape[1], generator=g) < p
        parts.append(order[pairs[:, keep]] + offset)
        offset += n
    edge_index = torch.cat(parts, dim=1)
    perm = torch.randperm(edge_index.shape[1], generator=g)  # edges in no particular order
    return edge_index[:, perm]


def reference_dag_mix(
    layer: PLSTMDAGLayer, x: torch.Tensor, edge_index: torch.Tensor
) -> torch.Tensor:
    """The loop reference on the layer's own gates, [N,H,V]."""
    line_index = build_line_index(edge_index, num_nodes=x.shape[0])
    N, H = x.shape[0], layer.num_heads
    q = layer.q_proj(x).reshape(N, H, -1)
    k = layer.k_proj(x).reshape(N, H, -1) * layer.qk_head_dim**-0.5
    v = layer.v_proj(x).reshape(N, H, -1)
    g = layer.gates(x, edge_index, line_index)
    return plstm_dag_naive(
        q, k, v, g["source"], g["transition"], g["mark"], g["direct"], edge_index, g["line_index"]
    )


def reference_dag_forward(
    layer: PLSTMDAGLayer, x: torch.Tensor, edge_index: torch.Tensor
) -> torch.Tensor:
    h = reference_dag_mix(layer, x, edge_index)
    return layer.out_proj(layer.norm(h).reshape(x.shape[0], -1))


@pytest.mark.parametrize("mode", ["P", "D"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_dag_layer_methods_match_reference(mode: str, dtype: torch.dtype, seed: int) -> None:
    g = _gen(1000 * seed + (mode == "D"))
    sizes = [int(s) for s in torch.randint(1, 12, (4,), generator=g)] + [1]
    edge_index = random_dag_batch(sizes, g)
    N, dim, heads = sum(sizes), 12, 3
    layer = PLSTMDAGLayer(dim, heads, mode=mode, qk_dim=6).double()
    randomize(layer, g)
    x64 = torch.randn(N, dim, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(N, dim, generator=g, dtype=torch.float64)
    w_mix = torch.randn(N, heads, dim // heads, generator=g, dtype=torch.float64)
    ref_out = reference_dag_forward(layer, x64, edge_index)
    ref_grads = grads_of(layer, x64, ref_out, w)
    ref_mix = reference_dag_mix(layer, x64, edge_index)
    ref_mix_grads = grads_of(layer, x64, ref_mix, w_mix)

    test_layer = copy.deepcopy(layer).to(dtype)
    x = x64.detach().to(dtype).requires_grad_(True)
    line_index = build_line_index(edge_index, num_nodes=N)
    for method in ("parallel", "recurrent"):
        test_layer.method = method
        for li in (None, line_index):
            out = test_layer(x, edge_index, li)
            assert out.dtype == dtype and out.shape == (N, dim)
            assert_close_rel(out, ref_out, TOL[dtype], f"{method} output")
        grads = grads_of(test_layer, x, out, w.to(dtype))
        assert_grads_close(grads, ref_grads, LAYER_TOL[dtype], f"{method} layer", global_scale=True)
        mix = test_layer.mix(x, edge_index)
        assert_close_rel(mix, ref_mix, TOL[dtype], f"{method} mix")
        grads = grads_of(test_layer, x, mix, w_mix.to(dtype))
        assert_grads_close(grads, ref_mix_grads, TOL[dtype], f"{method} mix")


def test_dag_layer_gates_satisfy_modes() -> None:
    g = _gen(5)
    edge_index = random_dag_batch([9, 7, 12], g, p=0.5)
    N, E = 28, edge_index.shape[1]
    line_index = build_line_index(edge_index, num_nodes=N)
    x = torch.randn(N, 8, generator=g, dtype=torch.float64)
    p_layer = PLSTMDAGLayer(8, 2, mode="P").double()
    randomize(p_layer, g)
    gp = p_layer.gates(x, edge_index, line_index)
    assert torch.equal(gp["line_index"], line_index)
    sums = torch.zeros(E, 2, dtype=torch.float64)
    sums = sums.index_add(0, line_index[0], gp["transition"].abs())
    assert (sums <= 1 + 1e-12).all()
    # decay from the shared node: the sum is |tanh(5·decay(x_shared))| for every incoming edge
    gamma = torch.tanh(5 * p_layer.transition_gate(x)).abs()[edge_index[1]]
    has_out = torch.bincount(line_index[0], minlength=E) > 0
    torch.testing.assert_close(sums[has_out], gamma[has_out])
    d_layer = PLSTMDAGLayer(8, 2, mode="D").double()
    randomize(d_layer, g)
    gd = d_layer.gates(x, edge_index, line_index)
    assert torch.bincount(gd["line_index"][1], minlength=E).max() <= 1
    assert gd["line_index"].shape[1] < line_index.shape[1]
    assert (gd["transition"].abs() <= 1).all()


def test_dag_layer_init_and_validation() -> None:
    layer = PLSTMDAGLayer(12, 3, mode="P")
    for lin in (layer.source_gate, layer.mark_gate, layer.direct_gate, layer.transition_gate):
        assert (lin.weight == 0).all()
    assert (layer.orientation_gate.weight == 0).all()
    assert (layer.source_gate.bias == -4).all() and (layer.mark_gate.bias == -4).all()
    assert (layer.direct_gate.bias == -6).all() and (layer.transition_gate.bias == 1).all()
    assert layer.norm.eps == 1e-5
    assert PLSTMDAGLayer(12, 3, mode="D").orientation_gate is None
    edge_index = torch.tensor([[0, 1, 1], [1, 2, 3]])
    x = torch.randn(4, 12, generator=_gen(0))
    out = layer(x, edge_index)
    assert out.shape == (4, 12) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\[N,D\]"):
        layer(torch.randn(4, 11), edge_index)
    with pytest.raises(ValueError, match="edge_index"):
        layer(x, edge_index.float())
    with pytest.raises(ValueError, match="cycle"):
        layer(x, torch.tensor([[0, 1, 2], [1, 2, 0]]))
    layer.method = "chunkwise"
    with pytest.raises(ValueError, match="method"):
        layer(x, edge_index)
    with pytest.raises(ValueError, match="mode"):
        PLSTMDAGLayer(12, 3, mode="X")


@pytest.mark.parametrize("method", ["parallel", "recurrent"])
def test_dag_layer_bf16(method: str) -> None:
    g = _gen(31)
    edge_index = random_dag_batch([6, 9, 4], g)
    layer = PLSTMDAGLayer(8, 2, mode="P", method=method)
    randomize(layer, g)
    x = torch.randn(19, 8, generator=g)
    ref = layer(x, edge_index)
    out = layer.to(torch.bfloat16)(x.bfloat16(), edge_index)
    assert out.dtype == torch.bfloat16
    assert_close_rel(out.float(), ref, 5e-2, f"bf16 {method}")


def test_dag_layer_no_edges() -> None:
    g = _gen(9)
    layer = PLSTMDAGLayer(6, 2, mode="D").double()
    randomize(layer, g)
    x = torch.randn(5, 6, generator=g, dtype=torch.float64)
    empty = torch.zeros(2, 0, dtype=torch.long)
    outs = []
    for method in ("parallel", "recurrent"):
        layer.method = method
        outs.append(layer(x, empty))
    torch.testing.assert_close(outs[0], outs[1])
    # only the direct term remains: h = D (q·k) v per node
    N, H = 5, 2
    q = layer.q_proj(x).reshape(N, H, -1)
    k = layer.k_proj(x).reshape(N, H, -1) * layer.qk_head_dim**-0.5
    v = layer.v_proj(x).reshape(N, H, -1)
    d = torch.sigmoid(layer.direct_gate(x))
    h = d[..., None] * (q * k).sum(-1, keepdim=True) * v
    torch.testing.assert_close(outs[0], layer.out_proj(layer.norm(h).reshape(N, -1)))


@pytest.mark.parametrize("method", ["parallel", "recurrent"])
def test_dag_layer_prepared_plan_is_reused(method: str) -> None:
    g = _gen(77)
    edge_index = random_dag_batch([6, 9, 4], g)
    x = torch.randn(19, 8, generator=g, dtype=torch.float64)
    for mode in ("P", "D"):
        layer = PLSTMDAGLayer(8, 2, mode=mode, method=method).double()
        for lin in (layer.source_gate, layer.mark_gate, layer.direct_gate, layer.transition_gate):
            nn.init.normal_(lin.weight, std=0.5, generator=g)
        plan = layer.prepare(edge_index, 19)
        with_plan = layer(x, edge_index, plan=plan)
        assert torch.allclose(with_plan, layer(x, edge_index), rtol=0, atol=1e-12)
        assert torch.allclose(layer(x + 1, edge_index, plan=plan), layer(x + 1, edge_index))
    other = PLSTMDAGLayer(8, 2, mode="P", method=method).double()
    with pytest.raises(ValueError, match="plan was prepared for mode 'D'"):
        other(x, edge_index, plan=plan)
