"""Stand-ins for the commands the deploy scripts call, written as executables into a folder
that the tests put first on PATH: ``plstm`` (training that copies a prepared checkpoint) and
``docker`` (a compose project kept in a JSON file). Both log their arguments."""

from __future__ import annotations

import json
import sys
from pathlib import Path

FAKE_PLSTM = """
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_TRAIN_FAIL"):
    sys.exit(3)
out = args[args.index("--out") + 1]
shutil.copytree(os.environ["FAKE_CHECKPOINT"], os.path.join(out, "best"))
"""

FAKE_DOCKER = """
import json, os, sys
path = os.environ["FAKE_DOCKER_STATE"]
with open(path) as f:
    state = json.load(f)
args = sys.argv[1:]
state["calls"].append(args)
containers = state["containers"]
out = []
if args[0] == "compose":
    if "ps" in args:
        out = [c for c, v in containers.items() if v["running"]]
    elif "up" in args:
        scale = int(next(a for a in args if a.startswith("api="))[4:])
        while len(containers) < scale:
            name = "new%d" % len(containers)
            containers[name] = {"running": True, "health": list(state["new_health"])}
elif args[0] == "inspect":
    health = containers[args[-1]]["health"]
    out = [health.pop(0) if len(health) > 1 else health[0]]
elif args[0] == "stop":
    for c in args[3:]:
        containers[c]["running"] = False
elif args[0] == "rm":
    for c in args[1:]:
        del containers[c]
with open(path, "w") as f:
    json.dump(state, f)
print("\\n".join(out))
"""


def install(folder: Path, name: str, source: str) -> Path:
    """Write ``source`` as the executable ``folder/name`` run by this interpreter."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{source.lstrip()}")
    path.chmod(0o755)
    return path


def read_log(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
