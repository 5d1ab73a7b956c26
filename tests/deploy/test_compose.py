"""docker-compose.yml and the Dockerfiles it builds, read as data (no Docker needed).

The stack must run the five services from their own Dockerfiles, only after the migrations
finished, on Apache Kafka in KRaft mode, with Prometheus scraping them all and Grafana showing
the chart's own dashboard.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# Service folder -> (Python module, HTTP port).
SERVICES = {
    "ingest": ("ingest", 8000),
    "uploader": ("uploader", 8002),
    "transcript-sync": ("transcript_sync", 8003),
    "metrics": ("metrics", 8001),
    "scheduler": ("scheduler", 8004),
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def dockerfile(folder: str) -> str:
    return (REPO / "services" / folder / "Dockerfile").read_text()


def instructions(text: str, keyword: str) -> list[str]:
    """Arguments of every `keyword` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [
        line.split(None, 1)[1].strip()
        for line in joined.splitlines()
        if line.upper().startswith(f"{keyword} ")
    ]


@pytest.mark.parametrize("folder", SERVICES)
def test_service_is_built_from_its_dockerfile(
    services: dict[str, dict[str, Any]], folder: str
) -> None:
    service = services[folder]
    assert service["build"] == {"context": ".", "dockerfile": f"services/{folder}/Dockerfile"}
    assert (REPO / service["build"]["dockerfile"]).is_file()


@pytest.mark.parametrize("folder", SERVICES)
def test_service_starts_after_the_migrations(
    services: dict[str, dict[str, Any]], folder: str
) -> None:
    depends = services[folder]["depends_on"]
    assert depends["migrate"] == {"condition": "service_completed_successfully"}
    assert depends["kafka"] == {"condition": "service_healthy"}
    assert depends["minio-init"] == {"condition": "service_completed_successfully"}


@pytest.mark.parametrize("folder", SERVICES)
def test_service_settings_are_ones_it_reads(
    services: dict[str, dict[str, Any]], folder: str, service_env_names: dict[str, set[str]]
) -> None:
    env = services[folder]["environment"]
    _module, port = SERVICES[folder]
    assert env["NOTETAKER_SERVICE_NAME"] == folder
    assert env["NOTETAKER_HTTP_PORT"] == str(port)
    assert env["NOTETAKER_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["NOTETAKER_KAFKA_IDEMPOTENCE"] == "true", "real Kafka takes idempotent producers"
    assert env["NOTETAKER_S3_BUCKET"] == "notetaker-recordings"
    unknown = env.keys() - service_env_names[folder]
    assert not unknown, f"{folder} does not read {sorted(unknown)}"
    # No setting is set to an empty string: "" is not "unset" for an optional secret.
    assert all(value not in ("", None) for value in env.values()), env


def test_migrations_run_once_from_the_scheduler_image(
    services: dict[str, dict[str, Any]], migrate_env_names: set[str]
) -> None:
    migrate = services["migrate"]
    assert migrate["build"] == {"context": ".", "dockerfile": "services/scheduler/Dockerfile"}
    assert migrate["command"] == ["python", "-m", "notetaker.common.migrate"]
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert migrate.get("restart", "no") == "no"
    assert migrate["environment"].keys() <= migrate_env_names


def test_kafka_is_kraft_without_zookeeper(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.0"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert not any("ZOOKEEPER" in key for key in env)
    for name, service in services.items():
        assert "zookeeper" not in name.lower()
        assert "zookeeper" not in str(service.get("image", "")).lower()
    assert "healthcheck" in kafka


def test_postgres_and_minio(services: dict[str, dict[str, Any]]) -> None:
    assert services["postgres"]["image"].startswith("postgres:17")
    assert "healthcheck" in services["postgres"]
    assert services["minio"]["image"].startswith("minio/minio")
    init = services["minio-init"]
    assert init["image"].startswith("minio/mc")
    assert init["depends_on"]["minio"] == {"condition": "service_healthy"}
    assert "mc mb --ignore-existing local/notetaker-recordings" in " ".join(init["command"])


def test_prometheus_scrapes_every_service(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    mount = "./deploy/compose/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    assert mount in prometheus["volumes"]
    config = yaml.safe_load((REPO / "deploy" / "compose" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for c in jobs["notetaker"]["static_configs"] for t in c["targets"]}
    assert targets == {f"{folder}:{port}" for folder, (_, port) in SERVICES.items()}
    assert jobs["notetaker"].get("metrics_path", "/metrics") == "/metrics"
    # The lag the chart alerts on comes from the Kafka exporter.
    exporter = {t for c in jobs["kafka-exporter"]["static_configs"] for t in c["targets"]}
    assert exporter == {"kafka-exporter:9308"}
    assert "kafka-exporter" in services


def test_grafana_shows_the_charts_dashboard(services: dict[str, dict[str, Any]]) -> None:
    volumes = services["grafana"]["volumes"]
    dashboard = next(v for v in volumes if "dashboards/notetaker.json" in v)
    source, target, *_ = dashboard.split(":")
    assert source == "./deploy/helm/notetaker/dashboards/notetaker.json"
    assert (REPO / source).is_file()
    assert "./deploy/compose/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    provisioning = REPO / "deploy" / "compose" / "grafana" / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "notetaker.yml").read_text())
    (provider,) = providers["providers"]
    assert target.startswith(provider["options"]["path"] + "/")
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (datasource,) = sources["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"


@pytest.mark.parametrize("folder", SERVICES)
def test_dockerfile(folder: str) -> None:
    text = dockerfile(folder)
    module, port = SERVICES[folder]
    assert all(base.startswith("python:3.11-slim") for base in instructions(text, "FROM"))
    assert any("pip install" in run and "uv" in run for run in instructions(text, "RUN"))
    sync = [run for run in instructions(text, "RUN") if "uv sync" in run]
    assert len(sync) == 1
    for flag in ("--frozen", "--no-dev", f"--package notetaker-{folder}"):
        assert flag in sync[0], flag
    copied = " ".join(instructions(text, "COPY"))
    for path in ("pyproject.toml", "uv.lock", "libs/", "services/"):
        assert path in copied, path
    (user,) = instructions(text, "USER")
    assert user.split(":")[0] not in {"0", "root"}
    assert instructions(text, "EXPOSE") == [str(port)]
    assert instructions(text, "CMD") == [f'["python", "-m", "notetaker.{module}"]']


def test_build_context_leaves_out_the_local_venv() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "**/.venv" in ignored
    assert ".git" in ignored
