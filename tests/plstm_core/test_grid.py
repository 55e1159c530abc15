"""plstm_2d: every method against the float64 loop reference, outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from plstm_core.ops.contraction import gated_linear_attention
from plstm_core.ops.grid import grid_gating_matrix, plstm_2d
from plstm_core.ops.grid_naive import plstm_2d_naive

NAMES = ("q", "k", "v", "source", "transition", "mark", "direct")
METHODS = [
    ("parallel", 16),
    ("recurrent", 16),
    ("chunkwise", 1),
    ("chunkwise", 4),
    ("chunkwise", 8),
]
SIZES = [(1, 1), (1, 9), (5, 7), (13, 3), (16, 16), (33, 17)]
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def random_inputs(seed, B, H, X, Y, K, V, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    tensors = [
        r(B, H, X, Y, K),
        r(B, H, X, Y, K),
        r(B, H, X, Y, V),
        torch.sigmoid(r(B, H, X, Y, 2)),
        0.6 * torch.tanh(r(B, H, X, Y, 2, 2)),  # negative transitions included
        torch.sigmoid(r(B, H, X, Y, 2)),
        torch.sigmoid(r(B, H, X, Y)),
    ]
    return [t.to(dtype) for t in tensors], r(B, H, X, Y, V)


def value_and_grads(fn, tensors, cotangent):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    h = fn(*leaves)
    (h.double() * cotangent).sum().backward()
    # an input the output does not depend on (a 1×1 grid's transition) has a zero gradient
    grads = [torch.zeros_like(x) if x.grad is None else x.grad for x in leaves]
    return h.detach(), grads


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def case(request):
    X, Y = request.param
    B, H = (2, 3) if X * Y < 300 else (1, 2)
    tensors, cotangent = random_inputs(X * 100 + Y, B, H, X, Y, 5, 3)
    ref, ref_grads = value_and_grads(plstm_2d_naive, tensors, cotangent)
    return tensors, cotangent, ref, ref_grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("method,chunk", METHODS, ids=[f"{m}{c}" for m, c in METHODS])
def test_matches_loop_reference(case, method, chunk, dtype):
    tensors, cotangent, ref, ref_grads = case
    inputs = [t.to(dtype) for t in tensors]
    h, grads = value_and_grads(
        lambda *a: plstm_2d(*a, method=method, chunk_size=chunk), inputs, cotangent
    )
    assert h.dtype == dtype and h.shape == ref.shape
    assert rel_err(h, ref) <= TOL[dtype]
    for name, grad, ref_grad in zip(NAMES, grads, ref_grads, strict=True):
        assert grad.dtype == dtype
        assert rel_err(grad, ref_grad) <= TOL[dtype], name


@pytest.mark.parametrize("method,chunk", METHODS[:3], ids=["parallel", "recurrent", "chunk1"])
def test_bfloat16_inputs(method, chunk):
    tensors, cotangent = random_inputs(7, 2, 2, 6, 5, 8, 4, dtype=torch.bfloat16)
    ref, ref_grads = value_and_grads(plstm_2d_naive, [t.double() for t in tensors], cotangent)
    h, grads = value_and_grads(
        lambda *a: plstm_2d(*a, method=method, chunk_size=chunk), tensors, cotangent
    )
    assert h.dtype == torch.bfloat16
    assert rel_err(h, ref) <= 1e-2
    for name, grad, ref_grad in zip(NAMES, grads, ref_grads, strict=True):
        assert grad.dtype == torch.bfloat16
        assert rel_err(grad, ref_grad) <= 3e-2, name


def test_gating_matrix_reproduces_the_op():
    tensors, _ = random_inputs(11, 2, 2, 7, 6, 4, 5)
    q, k, v, *gates = tensors
    G = grid_gating_matrix(*gates)
    assert G.shape == (2, 2, 42, 42)
    h = gated_linear_attention(
        q.reshape(2, 2, 42, 4), k.reshape(2, 2, 42, 4), v.reshape(2, 2, 42, 5), G
    )
    assert rel_err(h.reshape(2, 2, 7, 6, 5), plstm_2d_naive(*tensors)) <= 1e-12
    # causal structure: a node never receives from a node that is not above-left of it
    xs, ys = torch.meshgrid(torch.arange(7), torch.arange(6), indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    unreachable = (xs[:, None] > xs[None, :]) | (ys[:, None] > ys[None, :])
    assert G[..., unreachable].abs().max() == 0
    assert G[..., ~unreachable].abs().min() > 0


def test_zero_transition_cuts_propagation():
    tensors, _ = random_inputs(3, 1, 1, 4, 4, 3, 3)
    tensors[4] = tensors[4].clone()
    tensors[4][..., 2, :, :, :] = 0.0  # column x = 2 passes nothing on
    G = grid_gating_matrix(*tensors[3:])
    xs = torch.arange(16) // 4
    assert G[0, 0][xs < 2][:, xs >= 3].abs().max() == 0
    for method in ("parallel", "recurrent", "chunkwise"):
        h = plstm_2d(*tensors, method=method, chunk_size=2)
        assert rel_err(h, plstm_2d_naive(*tensors)) <= 1e-12


def _valid(B=1, H=2, X=3, Y=4, K=5, V=6):
    return random_inputs(0, B, H, X, Y, K, V, dtype=torch.float32)[0]


@pytest.mark.parametrize(
    "index,bad,match",
    [
        (0, torch.zeros(1, 2, 3, 4), "q must have 5 dimensions"),
        (1, torch.zeros(1, 2, 3, 4, 4), "k must have shape"),
        (2, torch.zeros(1, 2, 3, 5, 6), "v must have shape"),
        (3, torch.zeros(1, 2, 3, 4, 3), "source must have shape"),
        (4, torch.zeros(1, 2, 3, 4, 2), "transition must have 6 dimensions"),
        (5, torch.zeros(1, 2, 3, 4, 1), "mark must have shape"),
        (6, torch.zeros(1, 2, 4, 4), "direct must have shape"),
        (0, torch.zeros(1, 2, 3, 4, 5, dtype=torch.long), "q must be float32"),
    ],
)
def test_rejects_bad_input(index, bad, match):
    tensors = _valid()
    tensors[index] = bad
    with pytest.raises(ValueError, match=match):
        plstm_2d(*tensors)


def test_rejects_bad_method_and_chunk_size():
    tensors = _valid()
    with pytest.raises(ValueError, match="method must be one of"):
        plstm_2d(*tensors, method="fast")
    with pytest.raises(ValueError, match="power of two"):
        plstm_2d(*tensors, method="chunkwise", chunk_size=3)
    with pytest.raises(ValueError, match="positive int"):
        plstm_2d(*tensors, method="chunkwise", chunk_size=0)
