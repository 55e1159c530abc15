"""The ``plstm`` console command: ``plstm demo`` checks every op method and prints a table."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plstm_cli.main import main, random_dags

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    ("plstm_1d", "recurrent"),
    ("plstm_1d", "parallel"),
    ("plstm_1d", "chunkwise"),
    ("plstm_2d", "recurrent"),
    ("plstm_2d", "parallel"),
    ("plstm_2d", "chunkwise"),
    ("plstm_dag", "recurrent"),
    ("plstm_dag", "parallel"),
}


def _table(text: str) -> list[dict[str, str]]:
    """The demo table's rows as dicts keyed by the header cells."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines, f"no table in the output:\n{text}"
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[1:]
    ]


def _check_rows(rows: list[dict[str, str]], tol: float) -> None:
    seen = {(r["op"], r["method"].split(" ")[0]) for r in rows}
    assert seen == EXPECTED
    assert len(rows) == len(EXPECTED)
    for r in rows:
        err = float(r["max rel. error (h)"])
        grad_err = float(r["max rel. error (grads)"])
        ms = float(r["time (ms)"])
        assert math.isfinite(err) and err <= tol, r
        assert math.isfinite(grad_err) and grad_err <= tol, r
        assert math.isfinite(ms) and ms > 0, r
        assert r["check"] == "ok", r


def test_demo_quick_every_method_within_tolerance(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["demo", "--quick", "--device", "cpu", "--seed", "3"])
    out = capsys.readouterr().out
    assert status == 0, out
    rows = _table(out)
    _check_rows(rows, 1e-4)
    # float32 is not float64: the comparison must see rounding error somewhere
    assert max(float(r["max rel. error (h)"]) for r in rows) > 1e-10
    assert "8/8 methods within tolerance" in out
    assert "grid 5x7" in out and "chunkwise (chunk 4)" in out


def test_demo_quick_float64_meets_the_float64_tolerance(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["demo", "--quick", "--dtype", "float64", "--seed", "5"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "tolerance 1e-10" in out
    _check_rows(_table(out), 1e-10)


def test_help_lists_demo_and_explains_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as top:
        main(["--help"])
    assert top.value.code == 0
    out = capsys.readouterr().out
    assert "usage: plstm" in out and "demo" in out

    with pytest.raises(SystemExit) as sub:
        main(["demo", "--help"])
    assert sub.value.code == 0
    out = capsys.readouterr().out
    for word in (
        "--quick",
        "--device",
        "--dtype",
        "--seed",
        "loop reference",
        "plstm_1d",
        "plstm_2d",
        "plstm_dag",
        "recurrent",
        "parallel",
        "chunkwise",
    ):
        assert word in out, word


def test_missing_command_and_bad_arguments_exit_with_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv, message in (
        ([], "required"),
        (["train-everything"], "invalid choice"),
        (["demo", "--device", "not-a-device"], "not a torch device"),
        (["demo", "--dtype", "float16"], "invalid choice"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
        assert message in capsys.readouterr().err, argv


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_demo_refuses_cuda_without_a_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--device", "cuda"])
    assert exc.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_random_dags_are_acyclic_with_fan_in_and_fan_out() -> None:
    gen = torch.Generator().manual_seed(0)
    edge_index, n = random_dags(gen, 6, 8, 15)
    assert 6 * 8 <= n <= 6 * 15
    src, dst = edge_index
    assert bool((src != dst).all())
    assert torch.bincount(dst, minlength=n).max() > 1
    assert torch.bincount(src, minlength=n).max() > 1
    # Kahn: every node gets removed, so there is no cycle
    indeg = torch.bincount(dst, minlength=n).tolist()
    ready = [i for i in range(n) if indeg[i] == 0]
    seen = 0
    while ready:
        node = ready.pop()
        seen += 1
        for e in (src == node).nonzero().flatten().tolist():
            t = int(dst[e])
            indeg[t] -= 1
            if indeg[t] == 0:
                ready.append(t)
    assert seen == n


def test_console_entry_point_runs_as_a_program() -> None:
    """`python -m plstm_cli.main --help`, and the installed `plstm` script when it exists."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "plstm_cli.main", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "demo" in done.stdout
    script = Path(sys.executable).parent / "plstm"
    if script.exists():
        done = subprocess.run(
            [str(script), "demo", "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "--quick" in done.stdout
