"""Check the fused Triton backward of plstm_2d(method="parallel") on CPU, in Triton's interpreter.

Every gradient of ``grid_triton_bwd.grid_parallel_backward`` is compared with torch autograd of
the float64 loop reference (``grid_naive``) on fresh random inputs with gates drawn like the real
parameterisation (sigmoid sources, marks and directs; transitions 0.7·tanh, so |row sums| ≤ 1,
negative ones included). Prints one line per case with the relative error (max |difference| over
max |reference|) of each gradient and exits non-zero if any exceeds its tolerance (1e-4 for
float32 inputs, 2e-2 for bf16).

Run (needs torch and triton; no GPU):
    TRITON_INTERPRET=1 PYTHONPATH=. python bench/triton_interpret_check.py [--quick]
The interpreter runs on CPU tensors; a full run takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

NAMES = ("q", "k", "v", "source", "transition", "mark", "direct")
# (B, H, X, Y, K, V)
CASES = [
    (2, 3, 1, 1, 8, 12),
    (2, 2, 1, 9, 16, 8),
    (2, 2, 5, 7, 24, 40),
    (1, 3, 13, 3, 16, 32),
    (2, 2, 12, 12, 64, 64),
    (1, 2, 16, 16, 32, 16),
    (1, 1, 31, 17, 8, 8),
]
QUICK = [CASES[0], CASES[2], CASES[4]]
TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def random_inputs(seed: int, B: int, H: int, X: int, Y: int, K: int, V: int, zeros=False):
    """Fresh float64 inputs and cotangent, gates like the model's parameterisation; with
    ``zeros`` the cross transition 0→1 is exactly zero (D-mode) and so is a third of t11."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    tensors = [
        r(B, H, X, Y, K),
        r(B, H, X, Y, K),
        r(B, H, X, Y, V),
        torch.sigmoid(r(B, H, X, Y, 2)),
        0.7 * torch.tanh(r(B, H, X, Y, 2, 2)),
        torch.sigmoid(r(B, H, X, Y, 2)),
        torch.sigmoid(r(B, H, X, Y)),
    ]
    if zeros:
        tensors[4][..., 0, 1] = 0.0
        tensors[4][..., 1, 1] *= torch.rand(B, H, X, Y, generator=g, dtype=torch.float64) > 1 / 3
    return tensors, r(B, H, X, Y, V)


def reference_grads(tensors, cotangent) -> list[torch.Tensor]:
    """Autograd of the float64 loop reference."""
    from plstm_core.ops.grid_naive import plstm_2d_naive

    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    (plstm_2d_naive(*leaves) * cotangent).sum().backward()
    return [torch.zeros_like(x) if x.grad is None else x.grad for x in leaves]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def check(case, dtype: torch.dtype, seed: int, zeros: bool = False, one_grid: bool = False) -> bool:
    """One size and dtype; ``one_grid`` launches the kernel once per (b, h) grid."""
    from plstm_core.ops import grid_triton_bwd

    tensors, cotangent = random_inputs(seed, *case, zeros=zeros)
    inputs = [t.to(dtype) for t in tensors]
    # the reference sees exactly the (rounded) inputs the kernel gets
    ref = reference_grads([t.double() for t in inputs], cotangent)
    start = time.perf_counter()
    limit = {"scratch_bytes": 1} if one_grid else {}  # one (b, h) grid per launch
    grads = grid_triton_bwd.grid_parallel_backward(*inputs, cotangent.float(), **limit)
    took = time.perf_counter() - start
    errs = [rel_err(g, r) for g, r in zip(grads, ref, strict=True)]
    dtypes_ok = all(g.dtype == t.dtype for g, t in zip(grads, inputs, strict=True))
    ok = dtypes_ok and max(errs) <= TOL[dtype]
    detail = " ".join(f"{n}={e:.1e}" for n, e in zip(NAMES, errs, strict=True))
    name = ("fp32" if dtype == torch.float32 else "bf16") + (" zero-gates" if zeros else "")
    name += " one-grid-per-launch" if one_grid else ""
    print(
        f"{'ok  ' if ok else 'FAIL'} B,H,X,Y,K,V={case} {name} {took:5.1f}s  {detail}", flush=True
    )
    return ok


def check_autograd_wiring(seed: int) -> bool:
    """plstm_2d_parallel_triton under autograd with PLSTM_TRITON_BACKWARD=1: the fused
    backward's gradients for the inputs that want them (None for the others) match the
    PyTorch recompute that runs with the flag off."""
    from plstm_core.ops import grid_triton
    from plstm_core.ops.grid import _parallel_in_float32

    tensors, cotangent = random_inputs(seed, 2, 2, 6, 5, 8, 12)
    wanted = (True, False, True, True, False, True, True)
    results = {}
    for flag in ("0", "1"):
        os.environ["PLSTM_TRITON_BACKWARD"] = flag
        leaves = [t.float().requires_grad_(w) for t, w in zip(tensors, wanted, strict=True)]
        h = grid_triton.plstm_2d_parallel_triton(_parallel_in_float32, *leaves)
        (h * cotangent.float()).sum().backward()
        results[flag] = [x.grad for x in leaves]
    os.environ.pop("PLSTM_TRITON_BACKWARD")
    errs = [
        rel_err(a, b) if w else float(a is not None or b is not None)
        for a, b, w in zip(results["1"], results["0"], wanted, strict=True)
    ]
    ok = max(errs) <= TOL[torch.float32]
    detail = " ".join(f"{n}={e:.1e}" for n, e in zip(NAMES, errs, strict=True))
    print(f"{'ok  ' if ok else 'FAIL'} autograd wiring, flag on vs off  {detail}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="three sizes only")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("set TRITON_INTERPRET=1 (this script runs the kernel in Triton's interpreter)")
        return 2
    torch.manual_seed(0)
    results = [
        check(case, dtype, seed=1000 * i + j)
        for i, case in enumerate(QUICK if args.quick else CASES)
        for j, dtype in enumerate(TOL)
    ]
    results.append(check((2, 2, 5, 7, 16, 24), torch.float32, seed=7, zeros=True))
    results.append(check((3, 2, 9, 6, 16, 8), torch.float32, seed=8, one_grid=True))
    results.append(check_autograd_wiring(seed=99))
    print(f"{sum(results)}/{len(results)} cases within tolerance")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
