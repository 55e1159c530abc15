"""torchrun program of the DDP test: ``plstm train`` (:func:`training.cli.main`, as
``python -m training.cli`` runs it), then one stdout line naming the gloo threads still running
in this process. A run that has left its process group must have none: a gloo thread alive at
interpreter exit can abort the process (see :func:`training.distributed.cleanup_distributed`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from training.cli import main


def gloo_threads() -> list[str]:
    """Names of this process's native threads that belong to gloo (Linux ``/proc``)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            names.append((task / "comm").read_text().strip())
    return sorted(name for name in names if "gloo" in name)


if __name__ == "__main__":
    status = main(sys.argv[1:], prog="python -m training.cli")
    print(f"rank {os.environ['RANK']} gloo threads after the run: {gloo_threads()}", flush=True)
    sys.exit(status)
