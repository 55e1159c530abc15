"""deploy/prometheus/prometheus.yml: valid for promtool, and scraping what the compose file
runs (every api replica on the server's port, the train job on its metrics port)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy.tools import GRAFANA_PROVISIONING, PROMETHEUS_CONFIG, compose_config, run, tool


def _jobs() -> dict[str, dict]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_promtool_accepts_the_config_and_rejects_a_broken_one(tmp_path: Path) -> None:
    promtool = tool("promtool")
    result = run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    broken = tmp_path / "prometheus.yml"
    broken.write_text(PROMETHEUS_CONFIG.read_text().replace("type: A", "type: AAAAA", 1))
    result = run([promtool, "check", "config", str(broken)])
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_every_api_replica_and_the_train_job_are_scraped(tmp_path: Path) -> None:
    services = compose_config(tmp_path, profiles=("train",))["services"]
    jobs = _jobs()
    assert set(jobs) == {"plstm-api", "plstm-train", "prometheus"}
    # Docker's DNS answers a service name with every container of it: one target per replica
    for job, service, port in (
        ("plstm-api", "api", services["api"]["environment"]["PLSTM_PORT"]),
        ("plstm-train", "train", services["train"]["environment"]["PLSTM_TRAIN_METRICS_PORT"]),
    ):
        (sd,) = jobs[job]["dns_sd_configs"]
        assert (sd["names"], sd["type"], str(sd["port"])) == ([service], "A", port), job
        assert jobs[job]["metrics_path"] == "/metrics"


def test_compose_mounts_the_config_and_grafana_reads_prometheus(tmp_path: Path) -> None:
    prometheus = compose_config(tmp_path)["services"]["prometheus"]
    (config_flag,) = [c for c in prometheus["command"] if c.startswith("--config.file=")]
    (mount,) = [v for v in prometheus["volumes"] if v["type"] == "bind"]
    assert Path(mount["source"]) == PROMETHEUS_CONFIG
    assert mount["target"] == config_flag.split("=", 1)[1]
    (port,) = prometheus["ports"]

    datasources = GRAFANA_PROVISIONING / "datasources" / "prometheus.yml"
    (source,) = yaml.safe_load(datasources.read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == f"http://prometheus:{port['target']}"
    interval = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == interval
