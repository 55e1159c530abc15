"""``plstm_1d``: every method against the float64 loop reference, forward and gradients."""

from __future__ import annotations

import functools

import pytest
import torch

from plstm_core.ops.sequence import plstm_1d
from plstm_core.ops.sequence_naive import plstm_1d_naive

NAMES = ("q", "k", "v", "source", "transition", "mark", "direct")
TOL = {torch.float32: 1e-4, torch.float64: 1e-10, torch.bfloat16: 2e-2}
METHODS = [
    ("recurrent", 64),
    ("parallel", 64),
    ("chunkwise", 1),
    ("chunkwise", 3),
    ("chunkwise", 16),
    ("chunkwise", 64),
]
METHOD_IDS = [m if m != "chunkwise" else f"chunkwise{c}" for m, c in METHODS]
K_DIM, V_DIM = 5, 3


def make_inputs(
    B: int, H: int, T: int, seed: int, K: int = K_DIM, V: int = V_DIM
) -> dict[str, torch.Tensor]:
    """Random float64 inputs with moderate gates; transitions of both signs, many near ±1."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return {
        "q": randn(B, H, T, K),
        "k": randn(B, H, T, K),
        "v": randn(B, H, T, V),
        "source": torch.sigmoid(randn(B, H, T)),
        "transition": 0.99 * torch.tanh(2.0 * randn(B, H, T)),
        "mark": torch.sigmoid(randn(B, H, T)),
        "direct": torch.sigmoid(randn(B, H, T)),
    }


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| relative to max |ref| (absolute when ref is exactly zero)."""
    scale = ref.abs().max().item()
    diff = (got.double() - ref).abs().max().item()
    return diff / scale if scale > 0 else diff


def run_with_grads(
    fn, inputs: dict[str, torch.Tensor], w: torch.Tensor, **kwargs
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    leaves = {n: x.detach().clone().requires_grad_(True) for n, x in inputs.items()}
    h = fn(*(leaves[n] for n in NAMES), **kwargs)
    (h * w.to(h.dtype)).sum().backward()
    # an input that does not reach h (e.g. transition when T = 1) gets no grad: that is zero
    grads = {n: torch.zeros_like(x) if x.grad is None else x.grad for n, x in leaves.items()}
    return h.detach(), grads


@functools.lru_cache(maxsize=64)
def reference(
    B: int, H: int, T: int, seed: int, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Inputs rounded to ``dtype``, the cotangent, and float64 reference output and grads."""
    inputs = {n: x.to(dtype) for n, x in make_inputs(B, H, T, seed).items()}
    w = torch.randn(B, H, T, V_DIM, generator=torch.Generator().manual_seed(seed + 1))
    w = w.to(dtype)
    ref64 = {n: x.double() for n, x in inputs.items()}
    h_ref, g_ref = run_with_grads(plstm_1d_naive, ref64, w.double())
    return inputs, w, h_ref, g_ref


def check_against_reference(
    B: int, H: int, T: int, seed: int, dtype: torch.dtype, method: str, chunk_size: int
) -> None:
    inputs, w, h_ref, g_ref = reference(B, H, T, seed, dtype)
    h, grads = run_with_grads(plstm_1d, inputs, w, method=method, chunk_size=chunk_size)
    assert h.dtype == dtype
    assert h.shape == (B, H, T, V_DIM)
    tol = TOL[dtype]
    err = rel_err(h, h_ref)
    assert err <= tol, f"output: rel err {err:.3g} > {tol}"
    for name in NAMES:
        assert grads[name].dtype == dtype
        err = rel_err(grads[name], g_ref[name])
        assert err <= tol, f"grad of {name}: rel err {err:.3g} > {tol}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize(("B", "H"), [(1, 1), (1, 3), (2, 1), (2, 3)])
@pytest.mark.parametrize("T", [1, 2, 7, 16, 33, 100])
@pytest.mark.parametrize(("method", "chunk_size"), METHODS, ids=METHOD_IDS)
def test_matches_reference(
    method: str, chunk_size: int, T: int, B: int, H: int, dtype: torch.dtype
) -> None:
    check_against_reference(B, H, T, 1000 * T + 10 * B + H, dtype, method, chunk_size)


@pytest.mark.parametrize("T", [7, 33, 100])
@pytest.mark.parametrize(("method", "chunk_size"), METHODS, ids=METHOD_IDS)
def test_bf16_matches_reference(method: str, chunk_size: int, T: int) -> None:
    check_against_reference(2, 3, T, 7 + T, torch.bfloat16, method, chunk_size)


def explicit_gating_output(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """h_t = Σ_{s<t} G[t,s] (q_t·k_s) v_s + direct_t (q_t·k_t) v_t with G written out."""
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    src, tr, mk, dr = (inputs[n] for n in ("source", "transition", "mark", "direct"))
    B, H, T, _ = q.shape
    G = torch.zeros(B, H, T, T, dtype=q.dtype)
    for t in range(T):
        G[:, :, t, t] = dr[:, :, t]
        for s in range(t):
            G[:, :, t, s] = mk[:, :, t] * tr[:, :, s + 1 : t].prod(-1) * src[:, :, s]
    scores = torch.einsum("bhtk,bhsk->bhts", q, k) * G
    return torch.einsum("bhts,bhsv->bhtv", scores, v)


def zero_and_negative_inputs(T: int, seed: int) -> dict[str, torch.Tensor]:
    inputs = make_inputs(2, 3, T, seed)
    g = torch.Generator().manual_seed(seed + 5)
    # all transitions negative, plus exact zeros in the middle for some heads
    tr = -(0.5 + 0.5 * torch.rand(2, 3, T, generator=g, dtype=torch.float64))
    tr[0, 1, T // 2] = 0.0
    tr[1, :, T // 3] = 0.0
    inputs["transition"] = tr
    return inputs


def test_reference_matches_explicit_gating_formula() -> None:
    for seed, inputs in enumerate([make_inputs(2, 3, 19, 3), zero_and_negative_inputs(23, 4)]):
        h = plstm_1d_naive(*(inputs[n] for n in NAMES))
        err = rel_err(h, explicit_gating_output(inputs))
        assert err <= 1e-12, f"case {seed}: {err}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize(("method", "chunk_size"), METHODS, ids=METHOD_IDS)
def test_negative_and_zero_transitions(method: str, chunk_size: int, dtype: torch.dtype) -> None:
    """No log/cumsum shortcuts: negative and exactly-zero transitions give the exact result."""
    T = 45
    inputs = {n: x.to(dtype) for n, x in zero_and_negative_inputs(T, 11).items()}
    w = torch.randn(2, 3, T, V_DIM, generator=torch.Generator().manual_seed(12), dtype=dtype)
    ref64 = {n: x.double() for n, x in inputs.items()}
    h_ref, g_ref = run_with_grads(plstm_1d_naive, ref64, w.double())
    h, grads = run_with_grads(plstm_1d, inputs, w, method=method, chunk_size=chunk_size)
    assert torch.isfinite(h).all()
    assert rel_err(h, h_ref) <= TOL[dtype]
    for name in NAMES:
        assert torch.isfinite(grads[name]).all(), name
        assert rel_err(grads[name], g_ref[name]) <= TOL[dtype], name


@pytest.mark.parametrize(("method", "chunk_size"), METHODS, ids=METHOD_IDS)
def test_zero_transition_cuts_the_chain(method: str, chunk_size: int) -> None:
    """transition_m = 0 erases the state: h[m+1:] equals the op run on the suffix from m,
    and nothing before m influences anything after m (exactly zero gradients)."""
    B, H, T, m = 2, 3, 40, 17
    inputs = make_inputs(B, H, T, 21)
    inputs["transition"][:, :, m] = 0.0
    kw = {"method": method, "chunk_size": chunk_size}
    leaves = {n: x.clone().requires_grad_(True) for n, x in inputs.items()}
    h = plstm_1d(*(leaves[n] for n in NAMES), **kw)
    suffix = plstm_1d(*(inputs[n][:, :, m:] for n in NAMES), **kw)
    assert rel_err(h[:, :, m + 1 :].detach(), suffix[:, :, 1:]) <= 1e-12
    w = torch.randn(B, H, T - m - 1, V_DIM, generator=torch.Generator().manual_seed(22))
    (h[:, :, m + 1 :] * w.double()).sum().backward()
    for name in NAMES:
        before = leaves[name].grad[:, :, :m]
        assert (before == 0).all(), f"{name}[:m] influences outputs after the zero transition"
    assert (leaves["k"].grad[:, :, m + 1 :] != 0).any()


def test_methods_agree_with_each_other_on_long_sequence() -> None:
    inputs = make_inputs(1, 2, 300, 31)
    args = [inputs[n] for n in NAMES]
    ref = plstm_1d(*args, method="recurrent")
    for method, chunk_size in [("parallel", 64), ("chunkwise", 64), ("chunkwise", 37)]:
        h = plstm_1d(*args, method=method, chunk_size=chunk_size)
        assert rel_err(h, ref) <= 1e-10, (method, chunk_size)


def test_output_dtype_promotion() -> None:
    inputs = make_inputs(1, 2, 9, 41)
    mixed = {n: x.to(torch.bfloat16) for n, x in inputs.items()}
    mixed["q"] = inputs["q"].float()
    assert plstm_1d(*(mixed[n] for n in NAMES)).dtype == torch.float32
    mixed["v"] = inputs["v"]
    h = plstm_1d(*(mixed[n] for n in NAMES), method="chunkwise", chunk_size=4)
    assert h.dtype == torch.float64
    ref = plstm_1d_naive(*(mixed[n].double() for n in NAMES))
    assert rel_err(h, ref) <= 1e-10


@pytest.mark.parametrize(("method", "chunk_size"), METHODS, ids=METHOD_IDS)
def test_empty_sequence(method: str, chunk_size: int) -> None:
    inputs = make_inputs(2, 3, 0, 51)
    h = plstm_1d(*(inputs[n] for n in NAMES), method=method, chunk_size=chunk_size)
    assert h.shape == (2, 3, 0, V_DIM)


# ---------------------------------------------------------------- validation


def call_with(**overrides: object) -> torch.Tensor:
    inputs: dict[str, object] = dict(make_inputs(2, 3, 6, 61))
    kwargs = {key: overrides.pop(key) for key in ("method", "chunk_size") if key in overrides}
    inputs.update(overrides)
    return plstm_1d(*(inputs[n] for n in NAMES), **kwargs)


def test_wrong_ndim_raises() -> None:
    x = make_inputs(2, 3, 6, 62)
    with pytest.raises(ValueError, match="q must have 4 dimensions"):
        call_with(q=x["q"][0])
    with pytest.raises(ValueError, match="v must have 4 dimensions"):
        call_with(v=x["v"][..., 0])
    with pytest.raises(ValueError, match="source must have 3 dimensions"):
        call_with(source=x["source"][..., None])
    with pytest.raises(ValueError, match="direct must have 3 dimensions"):
        call_with(direct=x["direct"][0])


def test_mismatched_shapes_raise() -> None:
    x = make_inputs(2, 3, 7, 63)
    with pytest.raises(ValueError, match=r"k must have shape \[B,H,T,K\]"):
        call_with(k=x["k"])  # T = 7 instead of 6
    with pytest.raises(ValueError, match=r"k must have shape \[B,H,T,K\]"):
        call_with(k=make_inputs(2, 3, 6, 64, K=K_DIM + 1)["k"])
    with pytest.raises(ValueError, match=r"v must have shape \[B,H,T,V\]"):
        call_with(v=x["v"])
    with pytest.raises(ValueError, match=r"transition must have shape \[B,H,T\]"):
        call_with(transition=x["transition"])
    with pytest.raises(ValueError, match=r"mark must have shape \[B,H,T\]"):
        call_with(mark=make_inputs(1, 3, 6, 65)["mark"])


def test_bad_types_and_devices_raise() -> None:
    x = make_inputs(2, 3, 6, 66)
    with pytest.raises(ValueError, match=r"source must be a torch\.Tensor"):
        call_with(source=x["source"].tolist())
    with pytest.raises(ValueError, match="q must be float32, float64 or bfloat16"):
        call_with(q=(x["q"] * 10).long())
    with pytest.raises(ValueError, match="one device"):
        call_with(mark=x["mark"].to("meta"))


def test_unknown_method_raises() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        call_with(method="scan")


@pytest.mark.parametrize("chunk_size", [0, -4, 2.5, True, None, "16"])
def test_bad_chunk_size_raises(chunk_size: object) -> None:
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        call_with(method="chunkwise", chunk_size=chunk_size)
