"""Long-range stability of pLSTM on a 256×256 grid (paper 4.2, C.1, C.2).

Probe: B = H = 1, K = V = 1, q = k = v = 1, Mark = 1, Direct = 0, so that
h[x, y] = C_in[x, y, 0] + C_in[x, y, 1] is the sum of the cell states arriving at the node.
All runs use ``plstm_2d(..., method="recurrent")`` (linear memory).

- P-mode at criticality (γ = 1) conserves the total over each anti-diagonal and stays within
  the eq. 8 bound; its signal along Δx/Δ = α decays only as Δ^(−1/2) (eq. 36-38).
- D-mode with |T| ≤ 1 per entry stays within the eq. 8 bound (one path per edge pair).
- Unconstrained Transitions reproduce the binomial path count (eq. 35) and overflow.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import comb
from scipy.stats import binom

from plstm_core.gates import (
    dmode_grid_transition,
    pmode_grid_matrix,
    pmode_grid_transition,
    unconstrained_grid_transition,
)
from plstm_core.layers import PLSTMGridLayer
from plstm_core.ops.grid import plstm_2d

SIZE = 256
CRITICAL = 20.0  # tanh(5 · 20) == 1 exactly in float32 and float64: γ = 1, |T| = 1


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def probe(transition: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Sum of incoming cell states per node: transition ``[X,Y,2,2]``, source ``[X,Y,2]`` →
    h ``[X,Y]`` (in the gates' dtype)."""
    X, Y = transition.shape[:2]
    dtype = transition.dtype
    ones = torch.ones(1, 1, X, Y, 1, dtype=dtype)
    with torch.no_grad():
        h = plstm_2d(
            ones,
            ones,
            ones,
            source[None, None].to(dtype),
            transition[None, None],
            torch.ones(1, 1, X, Y, 2, dtype=dtype),
            torch.zeros(1, 1, X, Y, dtype=dtype),
            method="recurrent",
        )
    return h[0, 0, :, :, 0]


def single_source(s: tuple[float, float], dtype: torch.dtype) -> torch.Tensor:
    source = torch.zeros(SIZE, SIZE, 2, dtype=dtype)
    source[0, 0, 0], source[0, 0, 1] = s
    return source


def num_ancestors(X: int, Y: int) -> torch.Tensor:
    """Nodes from which (x, y) is reachable in the right-down DAG: (x+1)(y+1) − 1."""
    x = torch.arange(X, dtype=torch.float64)[:, None]
    y = torch.arange(Y, dtype=torch.float64)[None, :]
    return (x + 1) * (y + 1) - 1


def eq8_bound(source: torch.Tensor) -> torch.Tensor:
    """Paper eq. 8 per node: (number of ancestors) · max over nodes of Σ_o |source[o]|."""
    return num_ancestors(*source.shape[:2]) * source.abs().sum(-1).max().double()


def antidiagonals(h: torch.Tensor, last: int) -> list[torch.Tensor]:
    """[h[x, d − x] for x = 0..d] for d = 0..last (last < SIZE: diagonals fully inside)."""
    out = []
    for d in range(last + 1):
        xs = torch.arange(d + 1)
        out.append(h[xs, d - xs])
    return out


# ----------------------------------------------------------------------------------- (a)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pmode_critical_conserves_antidiagonal_total(dtype: torch.dtype) -> None:
    g = _gen(1)
    orient = 2 * torch.randn(SIZE, SIZE, generator=g, dtype=torch.float64)  # random α per node
    T = pmode_grid_transition(orient, torch.full_like(orient, CRITICAL)).to(dtype)
    torch.testing.assert_close(T.abs().sum(-1), torch.ones(SIZE, SIZE, 2, dtype=dtype))
    s = tuple(torch.rand(2, generator=g, dtype=torch.float64).tolist())
    h = probe(T, single_source(s, dtype)).double()
    assert torch.isfinite(h).all()
    total = s[0] + s[1]
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    sums = torch.stack([d.sum() for d in antidiagonals(h, SIZE - 1)[1:]])
    torch.testing.assert_close(sums, torch.full_like(sums, total), rtol=tol, atol=0)
    assert h.min() >= 0 and h.max() <= total * (1 + tol)
    assert (h <= eq8_bound(single_source(s, torch.float64)) + 1e-12).all()
    # beyond the last full anti-diagonal, mass leaves the grid: the totals can only drop
    flipped = h.flip(1)
    far = torch.stack([flipped.diagonal(SIZE - 1 - d).sum() for d in range(SIZE - 1, 2 * SIZE - 1)])
    assert (far[1:] <= far[:-1] * (1 + tol)).all()
    assert far[-1] < total


def test_pmode_critical_many_sources_within_eq8_bound() -> None:
    g = _gen(2)
    orient = 2 * torch.randn(SIZE, SIZE, generator=g, dtype=torch.float64)
    T = pmode_grid_transition(orient, torch.full_like(orient, CRITICAL))
    source = torch.randn(SIZE, SIZE, 2, generator=g, dtype=torch.float64)
    h = probe(T, source)
    assert torch.isfinite(h).all()
    bound = eq8_bound(source)
    assert (h.abs() <= bound).all()
    assert (h.abs()[1:, 1:] / bound[1:, 1:]).max() < 1  # the bound is not hit with mixed signs
    # with positive sources everything that enters an anti-diagonal stays in it:
    # Σ_{x+y=d} h = Σ_{x+y<d} Σ_o source (as long as no edge leaves the grid, d ≤ 255)
    pos = source.abs()
    hp = probe(T, pos)
    sums = torch.stack([d.sum() for d in antidiagonals(hp, SIZE - 1)])
    injected = torch.stack([d.sum() for d in antidiagonals(pos.sum(-1), SIZE - 1)])
    expected = torch.cat([torch.zeros(1, dtype=torch.float64), injected.cumsum(0)[:-1]])
    torch.testing.assert_close(sums, expected, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------- (b)


def test_dmode_critical_reaches_every_ancestor_with_magnitude_one() -> None:
    T = dmode_grid_transition(torch.full((SIZE, SIZE, 3), CRITICAL, dtype=torch.float64))
    assert (T[..., 0, 1] == 0).all() and (T.abs() <= 1).all()
    source = torch.ones(SIZE, SIZE, 2, dtype=torch.float64)
    h = probe(T, source)
    # each ancestor reaches the node along exactly one path with Transition product 1
    torch.testing.assert_close(h, num_ancestors(SIZE, SIZE), rtol=1e-14, atol=0)
    assert (h <= eq8_bound(source)).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dmode_random_within_eq8_bound(dtype: torch.dtype) -> None:
    g = _gen(3)
    logits = torch.randn(SIZE, SIZE, 3, generator=g, dtype=torch.float64)
    logits[: SIZE // 2] = CRITICAL * torch.sign(logits[: SIZE // 2])  # |T| = 1 with signs
    T = dmode_grid_transition(logits)
    assert (T.abs() <= 1).all() and (T < 0).any()
    source = torch.randn(SIZE, SIZE, 2, generator=g, dtype=torch.float64)
    h = probe(T.to(dtype), source.to(dtype)).double()
    assert torch.isfinite(h).all()
    assert (h.abs() <= eq8_bound(source) * (1 + 1e-5)).all()


# ----------------------------------------------------------------------------------- (c)


def test_unconstrained_matches_path_count_and_explodes() -> None:
    T = unconstrained_grid_transition(torch.full((SIZE, SIZE, 4), CRITICAL, dtype=torch.float64))
    assert (T == 1).all()
    h = probe(T, single_source((1.0, 1.0), torch.float64))
    # h[x, y] = number of lattice paths from (0,0) to (x,y) = binom(x+y, x) (paper eq. 35)
    xs, ys = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    expected = torch.from_numpy(comb(xs + ys, xs, exact=False))
    expected[0, 0] = 0
    torch.testing.assert_close(h, expected, rtol=1e-11, atol=0)
    assert h.max() > 1e150  # binom(510, 255) ≈ 9.4e151
    h32 = probe(T.float(), single_source((1.0, 1.0), torch.float32))
    assert torch.isinf(h32).any()  # float32 overflows (max ≈ 3.4e38)


def test_unconstrained_subcritical_entries_still_explode() -> None:
    """Even |T| = 0.9 per entry explodes without the P-/D-mode structure: 0.9^(Δ−1)·binom."""
    T = torch.full((SIZE, SIZE, 2, 2), 0.9, dtype=torch.float64)
    h = probe(T, single_source((1.0, 1.0), torch.float64))
    d = SIZE - 1
    expected = math.comb(2 * d, d) * 0.9 ** (2 * d - 1)
    assert h[d, d].item() == pytest.approx(expected, rel=1e-10)
    assert h[d, d] > 1e100
    h32 = probe(T.float(), single_source((1.0, 1.0), torch.float32))
    assert torch.isinf(h32).any()
    # the same magnitudes in P-mode stay bounded by the source
    Tp = pmode_grid_matrix(torch.full((SIZE, SIZE), 0.5), torch.full((SIZE, SIZE), 0.9))
    hp = probe(Tp, single_source((1.0, 1.0), torch.float32))
    assert torch.isfinite(hp).all() and hp.max() <= 2


def test_layers_at_init_u_mode_overflows_p_and_d_do_not() -> None:
    """The full layer at its Table 4 init (T = tanh(5) ≈ 0.9999) on a 128×128 grid."""
    x = torch.randn(1, 128, 128, 4, generator=_gen(4))
    outs = {}
    for mode in ("P", "D", "U"):
        torch.manual_seed(0)
        layer = PLSTMGridLayer(4, 1, mode=mode, method="recurrent")
        with torch.no_grad():
            outs[mode] = layer.mix(x)
    assert torch.isfinite(outs["P"]).all() and torch.isfinite(outs["D"]).all()
    assert not torch.isfinite(outs["U"]).all()


# ----------------------------------------------------------------------------------- (d)


@pytest.mark.parametrize("alpha", [0.3, 0.5])
def test_pmode_power_law_decay(alpha: float) -> None:
    T = pmode_grid_matrix(
        torch.full((SIZE, SIZE), alpha, dtype=torch.float64),
        torch.ones(SIZE, SIZE, dtype=torch.float64),
    )
    h = probe(T, single_source((alpha, 1 - alpha), torch.float64))
    diags = antidiagonals(h, SIZE - 1)
    # eq. 36: h[x, Δ−x] is the binomial probability binom(Δ, x) α^x (1−α)^(Δ−x)
    for delta in (1, 7, 64, 200, 255):
        expected = torch.from_numpy(binom.pmf(np.arange(delta + 1), delta, alpha))
        torch.testing.assert_close(diags[delta], expected, rtol=1e-9, atol=1e-300)
    deltas = np.arange(16, 129)
    peak = np.array([diags[d].max().item() for d in deltas])
    slope, _ = np.polyfit(np.log(deltas), np.log(peak), 1)
    assert -0.6 <= slope <= -0.4, slope
    assert slope == pytest.approx(-0.5, abs=0.02)
    # eq. 38 amplitude: 1 / sqrt(2π α(1−α) Δ)
    stirling = 1 / np.sqrt(2 * np.pi * alpha * (1 - alpha) * deltas)
    np.testing.assert_allclose(peak, stirling, rtol=0.05)


# ----------------------------------------------------------------------------------- (e)


@pytest.mark.parametrize("alpha", [0.15, 0.3, 0.5, 0.7, 0.9])
def test_pmode_propagation_angle(alpha: float) -> None:
    T = pmode_grid_transition(
        torch.full((SIZE, SIZE), math.log(alpha / (1 - alpha)), dtype=torch.float64),
        torch.full((SIZE, SIZE), CRITICAL, dtype=torch.float64),
    )
    h = probe(T, single_source((alpha, 1 - alpha), torch.float64))
    for delta, diag in enumerate(antidiagonals(h, SIZE - 1)):
        if delta == 0:
            continue
        beta = diag.argmax().item() / delta  # Δx / Δ at the strongest signal
        assert abs(beta - alpha) <= 1 / delta + 1e-9, (delta, beta)
    # the direction follows α: far away the signal is concentrated around the line
    d = SIZE - 1
    diag = antidiagonals(h, d)[d]
    xs = torch.arange(d + 1, dtype=torch.float64)
    mean = (diag * xs).sum() / diag.sum()
    assert abs(mean.item() / d - alpha) < 2 / d
