"""The ``plstm`` console command (``plstm = "plstm_cli.main:main"`` in pyproject.toml).

Subcommands:

- ``plstm demo``: runs every method of every pLSTM op (1D, 2D, DAG) on random inputs, compares
  each with the float64 loop reference (output and the gradients of every input) and prints a
  table of errors and times: a first look that the library works on this machine.
- ``plstm train <experiment>``: trains a model (``training.cli``; imported only when used, so
  the other subcommands do not load the training package).
- ``plstm serve``: runs the model server (``app.cli``; imported only when used, likewise).
- ``plstm export-onnx <checkpoint dir>``: exports a checkpoint to ONNX next to its weights
  (``plstm_cli.export_onnx``, imported only when used).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

TOLERANCE = {"float32": 1e-4, "float64": 1e-10}

DEMO_HELP = """\
Runs every method of every pLSTM op on random inputs and checks it against the float64
loop reference (paper eq. 5-6, one node at a time):

  plstm_1d   sequences    methods recurrent, parallel, chunkwise
  plstm_2d   one grid orientation (X x Y, e.g. 9 x 11)    same three methods
  plstm_dag  a batch of random DAGs with fan-in and fan-out > 1    recurrent, parallel

For each method the table shows the max relative error of the output h and of the gradients
of all seven inputs (q, k, v, source, transition, mark, direct), each relative to the
reference's max magnitude, the median forward time in ms, and "ok" when both errors are
within the tolerance (1e-4 in float32, 1e-10 in float64). Exits with status 1 if any method
fails. Gates are drawn moderate (source/mark/direct in (0,1), transitions of both signs with
|T| summed over outgoing edges below 1).
"""


# ----------------------------------------------------------------------------------------------
# Random inputs (float64 on the CPU; each method gets its own copy in the demo dtype)
# ----------------------------------------------------------------------------------------------


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _inputs_1d(gen: torch.Generator, B: int, H: int, T: int, K: int, V: int) -> dict:
    """q, k ``[B,H,T,K]``, v ``[B,H,T,V]``, gates ``[B,H,T]``; |transition| < 0.95."""
    return {
        "q": _randn(gen, B, H, T, K) * K**-0.5,
        "k": _randn(gen, B, H, T, K),
        "v": _randn(gen, B, H, T, V),
        "source": torch.sigmoid(_randn(gen, B, H, T)),
        "transition": 0.95 * torch.tanh(_randn(gen, B, H, T)),
        "mark": torch.sigmoid(_randn(gen, B, H, T)),
        "direct": torch.sigmoid(_randn(gen, B, H, T)),
    }


def _inputs_2d(gen: torch.Generator, B: int, H: int, X: int, Y: int, K: int, V: int) -> dict:
    """q, k ``[B,H,X,Y,K]``, v ``[B,H,X,Y,V]``, source/mark ``[B,H,X,Y,2]``, direct ``[B,H,X,Y]``,
    transition ``[B,H,X,Y,2,2]``: P-mode magnitudes γ·(α, 1−α) over the outgoing edges, with
    random signs.
    """
    alpha = torch.sigmoid(_randn(gen, B, H, X, Y, 1))
    row = 0.99 * torch.cat([alpha, 1.0 - alpha], dim=-1)
    transition = row[..., None, :].expand(B, H, X, Y, 2, 2) * torch.sign(
        _randn(gen, B, H, X, Y, 2, 2)
    )
    return {
        "q": _randn(gen, B, H, X, Y, K) * K**-0.5,
        "k": _randn(gen, B, H, X, Y, K),
        "v": _randn(gen, B, H, X, Y, V),
        "source": torch.sigmoid(_randn(gen, B, H, X, Y, 2)),
        "transition": transition,
        "mark": torch.sigmoid(_randn(gen, B, H, X, Y, 2)),
        "direct": torch.sigmoid(_randn(gen, B, H, X, Y)),
    }


def random_dags(
    gen: torch.Generator, num_graphs: int, min_nodes: int, max_nodes: int
) -> tuple[torch.Tensor, int]:
    """A disjoint union of random DAGs: edge_index ``[2,E]`` and the node count N.

    Each graph is a random tree plus about 20 % extra edges, every edge oriented from the lower
    to the higher position of a random node order (so nodes have several parents and children).
    """
    src: list[int] = []
    dst: list[int] = []
    offset = 0
    for _ in range(num_graphs):
        n = int(torch.randint(min_nodes, max_nodes + 1, (1,), generator=gen))
        pairs = {(int(torch.randint(0, i, (1,), generator=gen)), i) for i in range(1, n)}
        for _extra in range(max(1, n // 5)):
            a, b = sorted(torch.randint(0, n, (2,), generator=gen).tolist())
            if a != b:
                pairs.add((a, b))
        rank = torch.randperm(n, generator=gen).tolist()
        for a, b in sorted(pairs):
            s, t = (a, b) if rank[a] < rank[b] else (b, a)
            src.append(s + offset)
            dst.append(t + offset)
        offset += n
    return torch.tensor([src, dst], dtype=torch.long), offset


def _inputs_dag(
    gen: torch.Generator,
    edge_index: torch.Tensor,
    line_index: torch.Tensor,
    N: int,
    H: int,
    K: int,
    V: int,
) -> dict:
    """q, k ``[N,H,K]``, v ``[N,H,V]``, direct ``[N,H]``, source/mark ``[E,H]``, transition
    ``[L,H]`` of both signs, |·| summing to < 1 over the outgoing edges of each incoming edge.
    """
    E, L = edge_index.shape[1], line_index.shape[1]
    fan_out = torch.bincount(line_index[0], minlength=E).clamp(min=1).to(torch.float64)
    return {
        "q": _randn(gen, N, H, K) * K**-0.5,
        "k": _randn(gen, N, H, K),
        "v": _randn(gen, N, H, V),
        "source": torch.sigmoid(_randn(gen, E, H)),
        "transition": torch.tanh(_randn(gen, L, H)) / fan_out[line_index[0], None],
        "mark": torch.sigmoid(_randn(gen, E, H)),
        "direct": torch.sigmoid(_randn(gen, N, H)),
    }


# ----------------------------------------------------------------------------------------------
# Checking one method
# ----------------------------------------------------------------------------------------------


@dataclass
class DemoRow:
    """One line of the demo table."""

    op: str
    method: str
    err: float
    grad_err: float
    ms: float
    ok: bool
    note: str = ""


def _rel_err(a: torch.Tensor | None, ref: torch.Tensor | None) -> float:
    """max |a − ref| / max |ref| (inf when a is missing or not finite)."""
    if a is None or ref is None:
        return float("inf")
    a64 = a.detach().to("cpu", torch.float64)
    r64 = ref.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(a64).all()):
        return float("inf")
    return float((a64 - r64).abs().max()) / max(float(r64.abs().max()), 1e-300)


def _check_method(
    op: str,
    method: str,
    fast: Callable[..., torch.Tensor],
    raw: dict[str, torch.Tensor],
    h_ref: torch.Tensor,
    grads_ref: dict[str, torch.Tensor],
    cotangent: torch.Tensor,
    *,
    dtype: torch.dtype,
    device: torch.device,
    repeats: int,
) -> DemoRow:
    tol = TOLERANCE[str(dtype).removeprefix("torch.")]
    try:
        inputs = {
            n: t.detach().to(device, dtype, copy=True).requires_grad_(True) for n, t in raw.items()
        }
        h = fast(**inputs)
        (h * cotangent.to(device, h.dtype)).sum().backward()
        err = _rel_err(h, h_ref)
        grad_err = max(_rel_err(inputs[n].grad, grads_ref[n]) for n in raw)
        times = []
        with torch.no_grad():
            fast(**inputs)  # warm-up
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                fast(**inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append((time.perf_counter() - t0) * 1e3)
        ms = statistics.median(times)
    except Exception as exc:  # reported as a failed row; the demo goes on with the others
        return DemoRow(
            op,
            method,
            float("inf"),
            float("inf"),
            float("nan"),
            False,
            f"{type(exc).__name__}: {exc}",
        )
    return DemoRow(op, method, err, grad_err, ms, err <= tol and grad_err <= tol)


def _reference(
    naive: Callable[..., torch.Tensor],
    raw: dict[str, torch.Tensor],
    gen: torch.Generator,
    **extra: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """float64 loop reference: h, the gradients of every input for a random cotangent, and it."""
    inputs = {n: t.clone().requires_grad_(True) for n, t in raw.items()}
    h = naive(**inputs, **extra)
    cotangent = _randn(gen, *h.shape)
    (h * cotangent).sum().backward()
    return h.detach(), {n: t.grad for n, t in inputs.items()}, cotangent  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------
# The demo
# ----------------------------------------------------------------------------------------------


def _sizes(quick: bool) -> dict[str, dict[str, int]]:
    if quick:
        return {
            "1d": {"B": 2, "H": 2, "T": 37, "K": 8, "V": 5, "chunk": 8},
            "2d": {"B": 2, "H": 2, "X": 5, "Y": 7, "K": 8, "V": 5, "chunk": 4},
            "dag": {"graphs": 4, "min": 4, "max": 10, "H": 2, "K": 8, "V": 5},
        }
    return {
        "1d": {"B": 2, "H": 3, "T": 200, "K": 16, "V": 12, "chunk": 32},
        "2d": {"B": 2, "H": 3, "X": 9, "Y": 11, "K": 16, "V": 12, "chunk": 4},
        "dag": {"graphs": 12, "min": 5, "max": 20, "H": 3, "K": 16, "V": 12},
    }


def run_demo(args: argparse.Namespace) -> int:
    """Check every method of every op against its loop reference and print the table."""
    device = torch.device(args.device)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    tol = TOLERANCE[args.dtype]
    sizes = _sizes(args.quick)
    repeats = 3 if args.quick else 5
    gen = torch.Generator().manual_seed(args.seed)
    rows: list[DemoRow] = []
    shapes: list[str] = []
    common = {"dtype": dtype, "device": device, "repeats": repeats}

    def failed(op: str, exc: Exception) -> None:
        rows.append(
            DemoRow(
                op,
                "-",
                float("inf"),
                float("inf"),
                float("nan"),
                False,
                f"{type(exc).__name__}: {exc}",
            )
        )

    # 1D ---------------------------------------------------------------------------------------
    s = sizes["1d"]
    shapes.append(f"plstm_1d: B={s['B']} H={s['H']} T={s['T']} K={s['K']} V={s['V']}")
    try:
        from plstm_core.ops.sequence import plstm_1d
        from plstm_core.ops.sequence_naive import plstm_1d_naive

        raw = _inputs_1d(gen, s["B"], s["H"], s["T"], s["K"], s["V"])
        h_ref, g_ref, cot = _reference(plstm_1d_naive, raw, gen)
        for method in ("recurrent", "parallel", "chunkwise"):
            label = f"chunkwise (chunk {s['chunk']})" if method == "chunkwise" else method

            def fast1d(method: str = method, **t: torch.Tensor) -> torch.Tensor:
                return plstm_1d(**t, method=method, chunk_size=s["chunk"])

            rows.append(_check_method("plstm_1d", label, fast1d, raw, h_ref, g_ref, cot, **common))
    except Exception as exc:
        failed("plstm_1d", exc)

    # 2D ---------------------------------------------------------------------------------------
    s = sizes["2d"]
    shapes.append(f"plstm_2d: B={s['B']} H={s['H']} grid {s['X']}x{s['Y']} K={s['K']} V={s['V']}")
    try:
        from plstm_core.ops.grid import plstm_2d
        from plstm_core.ops.grid_naive import plstm_2d_naive

        raw = _inputs_2d(gen, s["B"], s["H"], s["X"], s["Y"], s["K"], s["V"])
        h_ref, g_ref, cot = _reference(plstm_2d_naive, raw, gen)
        for method in ("recurrent", "parallel", "chunkwise"):
            label = f"chunkwise (chunk {s['chunk']})" if method == "chunkwise" else method

            def fast2d(method: str = method, **t: torch.Tensor) -> torch.Tensor:
                return plstm_2d(**t, method=method, chunk_size=s["chunk"])

            rows.append(_check_method("plstm_2d", label, fast2d, raw, h_ref, g_ref, cot, **common))
    except Exception as exc:
        failed("plstm_2d", exc)

    # DAG --------------------------------------------------------------------------------------
    s = sizes["dag"]
    try:
        from plstm_core.ops.dag import plstm_dag
        from plstm_core.ops.dag_naive import plstm_dag_naive
        from plstm_core.ops.dag_structure import build_line_index

        edge_index, N = random_dags(gen, s["graphs"], s["min"], s["max"])
        line_index = build_line_index(edge_index, num_nodes=N)
        shapes.append(
            f"plstm_dag: {s['graphs']} random DAGs, N={N} nodes, E={edge_index.shape[1]} edges, "
            f"L={line_index.shape[1]} line-graph edges, H={s['H']} K={s['K']} V={s['V']}"
        )
        raw = _inputs_dag(gen, edge_index, line_index, N, s["H"], s["K"], s["V"])
        h_ref, g_ref, cot = _reference(
            plstm_dag_naive, raw, gen, edge_index=edge_index, line_index=line_index
        )
        ei, li = edge_index.to(device), line_index.to(device)
        for method in ("recurrent", "parallel"):

            def fast_dag(method: str = method, **t: torch.Tensor) -> torch.Tensor:
                return plstm_dag(**t, edge_index=ei, line_index=li, method=method)

            rows.append(
                _check_method("plstm_dag", method, fast_dag, raw, h_ref, g_ref, cot, **common)
            )
    except Exception as exc:
        shapes.append(f"plstm_dag: {s['graphs']} random DAGs")
        failed("plstm_dag", exc)

    _print_table(rows, shapes, device=device, dtype=args.dtype, tol=tol)
    return 0 if rows and all(r.ok for r in rows) else 1


def _print_table(
    rows: list[DemoRow], shapes: list[str], *, device: torch.device, dtype: str, tol: float
) -> None:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"pLSTM demo: every method against the float64 loop reference ({dtype} inputs)")
    print(f"device: {device} ({where}), torch {torch.__version__}, tolerance {tol:.0e}")
    for line in shapes:
        print(f"  {line}")
    print()
    header = ["op", "method", "max rel. error (h)", "max rel. error (grads)", "time (ms)", "check"]
    body = [
        [
            r.op,
            r.method,
            f"{r.err:.2e}",
            f"{r.grad_err:.2e}",
            f"{r.ms:.2f}",
            "ok" if r.ok else "FAIL",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for b in body:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) + " |")
    notes = [r for r in rows if r.note]
    for r in notes:
        print(f"\n{r.op} {r.method}: {r.note}")
    n_ok = sum(r.ok for r in rows)
    print(
        f"\n{n_ok}/{len(rows)} methods within tolerance"
        + ("" if n_ok == len(rows) else " -- FAILED")
    )


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def _device(value: str) -> str:
    """argparse type of ``--device``: "auto", or a torch device that exists here."""
    if value == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"not a torch device: {value!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"unsupported device type {device.type!r} (cpu, cuda)")
    return str(device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plstm",
        description="pLSTM (parallelizable Linear Source Transition Mark networks) tools.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = sub.add_parser(
        "demo",
        help="check every method of every pLSTM op against the loop reference, with timings",
        description=DEMO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--quick", action="store_true", help="smaller inputs (a few seconds on a CPU)"
    )
    demo.add_argument(
        "--device",
        type=_device,
        default="auto",
        help="where the fast methods run: auto (cuda if available), cpu, cuda, "
        "cuda:N (default: auto); the references run on the CPU",
    )
    demo.add_argument(
        "--dtype",
        choices=sorted(TOLERANCE),
        default="float32",
        help="dtype of the fast methods' inputs (default float32)",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    demo.set_defaults(func=run_demo)
    # Parsed by training.cli (see main); listed here for `plstm --help`.
    sub.add_parser(
        "train",
        help="train a model of an experiment (arrow-plstm, arrow-vit, solubility-plstm, ...); "
        "see `plstm train --help`",
        add_help=False,
    ).set_defaults(func=None)
    # Parsed by app.cli (see main); listed here for `plstm --help`.
    sub.add_parser(
        "serve",
        help="serve the models of a model repository over HTTP; see `plstm serve --help`",
        add_help=False,
    ).set_defaults(func=None)
    # Parsed by plstm_cli.export_onnx (see main); listed here for `plstm --help`.
    sub.add_parser(
        "export-onnx",
        help="export a checkpoint to ONNX (model.onnx next to the weights), optionally "
        "checking ONNX Runtime against torch; see `plstm export-onnx --help`",
        add_help=False,
    ).set_defaults(func=None)
    return parser


def run_train(argv: Sequence[str]) -> int:
    """``plstm train ARGS``: hands the arguments to ``training.cli`` (imported here, lazily)."""
    from training.cli import main as train_main

    return train_main(list(argv), prog="plstm train")


def run_serve(argv: Sequence[str]) -> int:
    """``plstm serve ARGS``: hands the arguments to ``app.cli`` (imported here, lazily)."""
    from app.cli import main as serve_main

    return serve_main(["serve", *argv], prog="plstm")


def run_export_onnx(argv: Sequence[str]) -> int:
    """``plstm export-onnx ARGS``: hands the arguments to ``plstm_cli.export_onnx`` (imported
    here, lazily: it loads onnx and onnxruntime)."""
    from plstm_cli.export_onnx import main as export_main

    return export_main(list(argv), prog="plstm export-onnx")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``plstm`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        return run_train(argv[1:])
    if argv[:1] == ["serve"]:
        return run_serve(argv[1:])
    if argv[:1] == ["export-onnx"]:
        return run_export_onnx(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
