"""Write what a results run ran on to a JSON file: the CPU model and core count, the CPU
threads the run used, the load average before (given) and after (now), the GPU when there is
one, and the torch version. Used by scripts/results_{solubility,tu,arrow}.sh.

Usage: python scripts/machine_info.py OUT.json [LOAD_AVERAGE_BEFORE]
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch


def main() -> int:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    info = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads(),
        "load_average_before": sys.argv[2] if len(sys.argv) > 2 else None,
        "load_average_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
    Path(sys.argv[1]).write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
