"""Helpers shared by the scripts that rebuild sections of docs/results.md from committed logs
(``results_*_section.py``): reading a run folder's files, means ± standard deviations, wrapped
paragraphs, and replacing the text between a section's begin / end markers."""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "docs" / "results.md"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def epoch_rows(folder: Path) -> list[dict[str, Any]]:
    """The "epoch" rows of ``folder/metrics.jsonl``."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("event") == "epoch"]


def mean_std(values: list[float]) -> str:
    """ "m ± s" (sample standard deviation) with 4 decimals; one value is marked as one run."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f} (1 run)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def listed(runs: list[dict[str, Any]], key: str) -> str:
    """The runs' ``key`` values (seeds, folds) joined by commas; "–" without runs."""
    return ",".join(str(r[key]) for r in runs) or "–"


def seeded_command(runs: list[dict[str, Any]]) -> str:
    """The first run's command with its seed written as S, in backticks; "–" without runs."""
    if not runs:
        return "–"
    seed = runs[0]["seed"]
    return "`" + runs[0]["command"].replace(f"--seed {seed}", "--seed S") + "`"


def run_lists(runs: list[dict[str, Any]], fields: dict[str, str]) -> dict[str, list[Any]]:
    """For the summary document: per output name, the list of that field over the runs."""
    return {name: [r[field] for r in runs] for name, field in fields.items()}


def section_head(title: str, runs_command: str, script: str) -> list[str]:
    """A section's title and the two commands that make it (the runs, then ``script``)."""
    return [
        f"## {title}",
        "",
        "```bash",
        f"{runs_command}, then:",
        f"python scripts/{script}   # this section, from the committed logs",
        "```",
        "",
    ]


def table_head(header: str) -> list[str]:
    """A markdown table's header row and its separator row."""
    return [header, "|---" * (header.count("|") - 1) + "|"]


def paragraph(text: str) -> str:
    return textwrap.fill(text, width=100, break_on_hyphens=False, break_long_words=False)


def write_section(
    name: str, section: str, summary_path: Path, summary: dict[str, Any], check: bool
) -> int:
    """Put ``section`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` of
    docs/results.md and ``summary`` into ``summary_path``. ``check``: write nothing; exit
    status 1 when either would change. Returns the exit status."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = RESULTS_MD.read_text()
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        print(f"{RESULTS_MD}: markers {begin} / {end} not found", file=sys.stderr)
        return 2
    new_text = pattern.sub(lambda _: f"{begin}\n{section}\n{end}", text)
    new_summary = json.dumps(summary, indent=1) + "\n"
    if check:
        stale = (
            new_text != text
            or not summary_path.is_file()
            or summary_path.read_text() != new_summary
        )
        print(f"{name}: " + ("stale" if stale else "up to date"))
        return 1 if stale else 0
    RESULTS_MD.write_text(new_text)
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(new_summary)
    return 0


def section_main(
    name: str,
    description: str | None,
    build: Callable[[], tuple[str, dict[str, Any]]],
    summary_path: Path,
) -> int:
    """The command line of a ``results_*_section.py`` script: ``--check`` or write."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args()
    section, summary = build()
    return write_section(name, section, summary_path, summary, args.check)
