"""docs/results.md matches the committed run logs: each generated section, rebuilt from its
logs, equals the page (``--check`` writes nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("section", ["solubility", "arrow", "tu"])
def test_results_section_matches_the_logs(section: str) -> None:
    script = ROOT / "scripts" / f"results_{section}_section.py"
    done = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{section}: up to date"
