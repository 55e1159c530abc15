"""deploy/proxy/nginx.conf, the reverse proxy in front of the api replicas: nginx accepts it,
and it forwards to the compose `api` service with limits no tighter than the server's."""

from __future__ import annotations

import re
from pathlib import Path

from app.core.settings import Settings
from tests.deploy.tools import PROXY_CONFIG, compose_config, run, tool

SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
TIME_UNITS = {"ms": 0.001, "s": 1, "m": 60}


def _directive(text: str, name: str) -> str:
    (value,) = re.findall(rf"^\s*{name}\s+([^;]+);", text, re.M)
    return value.strip()


def _nginx_test(config: Path, tmp_path: Path):
    """``nginx -t`` on ``config`` included into a minimal main configuration under tmp_path."""
    temp = tmp_path / "nginx"
    temp.mkdir(exist_ok=True)
    main = temp / "nginx.conf"
    paths = "\n".join(
        f"  {kind}_temp_path {temp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main.write_text(
        f"pid {temp}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n{paths}\n  include {config};\n}}\n"
    )
    return run([tool("nginx"), "-t", "-e", "stderr", "-p", str(temp), "-c", str(main)])


def test_nginx_accepts_the_config_and_rejects_a_broken_one(tmp_path: Path) -> None:
    result = _nginx_test(PROXY_CONFIG, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text(PROXY_CONFIG.read_text().replace("proxy_read_timeout", "proxy_read_timeot"))
    result = _nginx_test(broken, tmp_path)
    assert result.returncode != 0 and "proxy_read_timeot" in result.stderr


def test_proxy_forwards_to_every_api_replica(tmp_path: Path) -> None:
    text = PROXY_CONFIG.read_text()
    services = compose_config(tmp_path)["services"]
    api_port = services["api"]["environment"]["PLSTM_PORT"]
    # resolved per request through Docker's DNS: every replica, also those started later
    assert _directive(text, "resolver").startswith("127.0.0.11 ")
    assert _directive(text, "set") == f"$api_upstream http://api:{api_port}"
    assert _directive(text, "proxy_pass") == "$api_upstream"
    next_upstream = _directive(text, "proxy_next_upstream").split()
    assert {"error", "timeout", "http_503", "non_idempotent"} <= set(next_upstream)
    listen = _directive(text, "listen")
    proxy = services["proxy"]
    assert [str(p["target"]) for p in proxy["ports"]] == [listen]
    assert f"http://127.0.0.1:{listen}/v2/health/ready" in proxy["healthcheck"]["test"]


def test_proxy_limits_are_not_tighter_than_the_servers() -> None:
    text = PROXY_CONFIG.read_text()
    size = re.fullmatch(r"(\d+)([kmg]?)", _directive(text, "client_max_body_size").lower())
    assert size, "client_max_body_size"
    body_limit = int(size.group(1)) * SIZE_UNITS[size.group(2)]
    assert body_limit >= Settings.model_fields["max_body_bytes"].default
    read = re.fullmatch(r"(\d+)(ms|s|m)", _directive(text, "proxy_read_timeout"))
    assert read, "proxy_read_timeout"
    read_timeout = int(read.group(1)) * TIME_UNITS[read.group(2)]
    assert read_timeout > Settings.model_fields["request_timeout_s"].default
