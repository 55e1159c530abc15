"""Container health check of the model server: exit 0 when ``GET /v2/health/ready`` answers 200,
else 1 (the server is starting, draining, has no ready model, or does not answer).

Standard library only, so it runs in any image with Python. The server's port comes from
``PLSTM_PORT`` (default 8000); ``PLSTM_HEALTHCHECK_URL`` replaces the whole URL.
Used by the Dockerfile's ``HEALTHCHECK`` and the compose file's ``api`` health check.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

READY_PATH = "/v2/health/ready"
TIMEOUT_S = 4.0


def ready_url(env: dict[str, str] | None = None) -> str:
    """The readiness URL for the environment ``env`` (default: this process's)."""
    env = dict(os.environ) if env is None else env
    if env.get("PLSTM_HEALTHCHECK_URL"):
        return env["PLSTM_HEALTHCHECK_URL"]
    return f"http://127.0.0.1:{env.get('PLSTM_PORT', '8000')}{READY_PATH}"


def check(url: str, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    """(ready, what was seen) for one GET of ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"no answer: {exc}"


def main() -> int:
    url = ready_url()
    ok, seen = check(url)
    print(f"{url}: {seen}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
