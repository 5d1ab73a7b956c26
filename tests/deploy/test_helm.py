"""The Helm chart, rendered offline and checked the way a platform team reviews a chart.

Every rendered manifest passes the Kubernetes JSON schema (strict: unknown fields fail) of the
chart's oldest supported Kubernetes and of the newest one kubernetes-validate ships. The
Prometheus Operator and KEDA resources have no schema there; their key fields are asserted
instead, and promtool checks and unit-tests the alert rules.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from notetaker.common.source_policy import SourcePolicy
from notetaker.metrics import admin
from notetaker.metrics.settings import MetricsSettings
from tests.conftest import promtool_path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "notetaker"
RELEASE = "notetaker"
NAMESPACE = "notetaker"

SERVICES = ("ingest", "uploader", "transcript-sync", "metrics", "scheduler")
PORTS = {
    "ingest": 8000,
    "metrics": 8001,
    "uploader": 8002,
    "transcript-sync": 8003,
    "scheduler": 8004,
}
KEDA_SCALED = ("uploader", "transcript-sync")

# Kinds installed by CRDs: kubernetes-validate has no schema for them.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
# The chart's kubeVersion floor, and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())

# Settings that are secrets: only ever read from a Secret by reference.
SECRET_ENV = re.compile(r"DATABASE_URL|SECRET|TOKEN|PASSWORD|API_KEY|CALLBACK_KEYS|ACCESS_KEY")
# Values that would be a leaked secret if they showed up in any manifest.
SECRET_VALUE = re.compile(r"whsec_|postgres(ql)?://|BEGIN [A-Z ]*PRIVATE KEY|AKIA[0-9A-Z]{16}")

FULL_VALUES: dict[str, Any] = {
    "keda": {"enabled": True},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "tls": [{"secretName": "notetaker-tls", "hosts": ["notetaker.example.com"]}],
    },
    "s3": {"endpointUrl": "http://minio.storage:9000"},
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
        }
    ],
}

Manifest = dict[str, Any]


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    """Every manifest the chart renders for an install with these values."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests: list[Manifest] = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def by_component(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    """One service's resources of a kind, by service (release-wide ones have no component)."""
    found = {}
    for m in of_kind(manifests, kind):
        component = m["metadata"]["labels"].get("app.kubernetes.io/component")
        if component is not None:
            assert component not in found, f"two {kind}s for {component}"
            found[component] = m
    return found


def pod_specs(manifests: list[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    for m in manifests:
        if m["kind"] in {"Deployment", "Job"}:
            yield f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]["spec"]


def pod_templates(manifests: list[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    for m in manifests:
        if m["kind"] in {"Deployment", "Job"}:
            yield f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]


def rule(manifests: list[Manifest], alert: str) -> dict[str, Any]:
    spec = of_kind(manifests, "PrometheusRule")[0]["spec"]
    rules = [r for group in spec["groups"] for r in group["rules"] if r.get("alert") == alert]
    assert len(rules) == 1, f"alert {alert} is defined {len(rules)} times"
    found: dict[str, Any] = rules[0]
    return found


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (ours, and the Kafka exporter's lag)."""
    return set(re.findall(r"\b(notetaker_[a-z0-9_]+|kafka_consumergroup_lag)\b", expr))


def dashboard_exprs(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    """Panel title -> its PromQL queries (rows' nested panels included)."""
    exprs: dict[str, list[str]] = {}
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            queries = [t["expr"] for t in inner.get("targets", []) if t.get("expr")]
            if queries:
                exprs[inner["title"]] = queries
    return exprs


def defined_metrics() -> set[str]:
    """Metric names the code registers (the first argument of Counter/Gauge/Histogram)."""
    pattern = re.compile(r"(?:Counter|Gauge|Histogram|Summary)\(\s*\"(notetaker_[a-z0-9_]+)\"")
    sources = [*REPO.glob("libs/*/src/**/*.py"), *REPO.glob("services/*/src/**/*.py")]
    return {name for path in sources for name in pattern.findall(path.read_text())}


@pytest.fixture(scope="module")
def default() -> list[Manifest]:
    return render()


@pytest.fixture(scope="module")
def full() -> list[Manifest]:
    return render(FULL_VALUES)


@pytest.fixture(scope="module", params=["default", "keda+ingress"])
def rendered(request: pytest.FixtureRequest) -> list[Manifest]:
    return render(None if request.param == "default" else FULL_VALUES)


# --- the chart as a whole --------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, FULL_VALUES], ids=["default", "keda+ingress"])
def test_chart_lints_clean(values: dict[str, Any] | None) -> None:
    report = helm.lint(CHART, values, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"], report
    assert not problems, report


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_passes_the_kubernetes_schema(
    rendered: list[Manifest], version: str
) -> None:
    failures = []
    for manifest in rendered:
        if (manifest["apiVersion"], manifest["kind"]) in CRD_KINDS:
            continue  # no schema shipped; see the tests of each CRD kind below
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, version, True)
        except kubernetes_validate.ValidationError as error:
            failures.append(f"{name}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            failures.append(f"{name}: {error.message}")
    assert not failures, "\n".join(failures)


def test_renders_the_expected_resources(default: list[Manifest], full: list[Manifest]) -> None:
    def kinds(manifests: list[Manifest]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for m in manifests:
            counts[m["kind"]] = counts.get(m["kind"], 0) + 1
        return counts

    assert kinds(default) == {
        "ConfigMap": 6,  # one per service, and the dashboard
        "Deployment": 5,
        "Job": 1,
        "NetworkPolicy": 1,
        "PodDisruptionBudget": 5,
        "PrometheusRule": 1,
        "Service": 5,
        "ServiceAccount": 1,
        "ServiceMonitor": 1,
    }
    assert kinds(full) == {**kinds(default), "Ingress": 1, "ScaledObject": 2}
    assert all(m["metadata"].get("namespace") == NAMESPACE for m in default)


def test_every_resource_carries_the_recommended_labels(rendered: list[Manifest]) -> None:
    for m in rendered:
        labels = m["metadata"]["labels"]
        for key in ("name", "instance", "version", "managed-by", "part-of"):
            assert f"app.kubernetes.io/{key}" in labels, (m["kind"], m["metadata"]["name"], key)
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"].startswith("notetaker-")


# --- workloads -------------------------------------------------------------------------------


def test_one_deployment_per_service(rendered: list[Manifest]) -> None:
    deployments = by_component(rendered, "Deployment")
    assert sorted(deployments) == sorted(SERVICES)
    for service, deployment in deployments.items():
        assert deployment["metadata"]["name"] == f"{RELEASE}-{service}"
        template = deployment["spec"]["template"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items()
        assert selector["app.kubernetes.io/component"] == service
        (container,) = template["spec"]["containers"]
        assert container["image"] == f"notetaker-{service}:0.1.0"
        assert container["ports"] == [
            {"name": "http", "containerPort": PORTS[service], "protocol": "TCP"}
        ]


def test_every_service_has_probes_on_its_http_port(rendered: list[Manifest]) -> None:
    for service, deployment in by_component(rendered, "Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for probe, path in [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ]:
            assert container[probe]["httpGet"] == {"path": path, "port": "http"}, (service, probe)


def test_every_container_has_resource_requests_and_limits(rendered: list[Manifest]) -> None:
    for name, spec in pod_specs(rendered):
        for container in spec["containers"]:
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= resources[bound].keys(), (name, bound)


def test_no_container_runs_as_root(rendered: list[Manifest]) -> None:
    for name, spec in pod_specs(rendered):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context.get("runAsUser", pod["runAsUser"]) != 0, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            # The one writable place is an emptyDir, bounded.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts == {"/tmp": "tmp"}, name
        (volume,) = spec["volumes"]
        assert volume["name"] == "tmp", name
        assert "sizeLimit" in volume["emptyDir"], name


def test_scheduler_runs_one_replica_and_consumers_follow_keda(
    default: list[Manifest], full: list[Manifest]
) -> None:
    assert by_component(default, "Deployment")["scheduler"]["spec"]["replicas"] == 1
    for service, deployment in by_component(full, "Deployment").items():
        # Under KEDA the ScaledObject owns the replica count; Helm must not fight it.
        assert ("replicas" in deployment["spec"]) == (service not in KEDA_SCALED), service


def test_settings_change_rolls_the_pods() -> None:
    def checksums(values: dict[str, Any] | None) -> dict[str, str]:
        return {
            service: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for service, d in by_component(render(values), "Deployment").items()
        }

    before = checksums(None)
    after = checksums({"services": {"uploader": {"config": {"NOTETAKER_UPLOAD_CONCURRENCY": "8"}}}})
    assert {s for s in SERVICES if before[s] != after[s]} == {"uploader"}


# --- settings and secrets --------------------------------------------------------------------


def test_configmaps_hold_the_settings_each_service_reads(
    rendered: list[Manifest], service_env_names: dict[str, set[str]]
) -> None:
    configmaps = by_component(rendered, "ConfigMap")
    for service, deployment in by_component(rendered, "Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (source,) = container["envFrom"]
        config = configmaps[service]
        assert source == {"configMapRef": {"name": config["metadata"]["name"]}}
        data = config["data"]
        assert all(isinstance(v, str) for v in data.values()), service
        assert data["NOTETAKER_SERVICE_NAME"] == service
        assert data["NOTETAKER_HTTP_PORT"] == str(PORTS[service])
        assert data["NOTETAKER_KAFKA_IDEMPOTENCE"] == "true"
        assert data["NOTETAKER_KAFKA_TOPIC_PARTITIONS"] == "3"
        assert data["NOTETAKER_KAFKA_EVENT_RETENTION_MS"] == "604800000"
        assert data["NOTETAKER_KAFKA_DEAD_LETTER_RETENTION_MS"] == "1209600000"
        # Nothing the service would ignore (a typo, a setting it does not have).
        unknown = data.keys() - service_env_names[service]
        assert not unknown, f"{service} does not read {sorted(unknown)}"


def test_service_specific_settings(default: list[Manifest], full: list[Manifest]) -> None:
    data = {s: c["data"] for s, c in by_component(default, "ConfigMap").items()}
    assert data["ingest"]["NOTETAKER_MAX_BODY_BYTES"] == "16777216"
    assert {
        "NOTETAKER_UPLOAD_PART_SIZE_BYTES",
        "NOTETAKER_UPLOAD_PARTS_IN_FLIGHT",
        "NOTETAKER_UPLOAD_CONCURRENCY",
    } <= data["uploader"].keys()
    assert data["metrics"]["NOTETAKER_STORAGE_PRICE_USD_PER_GB_MONTH"] == "0.023"
    # The egress tiers as the service reads them: the chart's default is the service's.
    tiers = MetricsSettings.model_validate(
        {"price_egress_tiers": json.loads(data["metrics"]["NOTETAKER_PRICE_EGRESS_TIERS"])}
    ).price_egress_tiers
    assert tiers == MetricsSettings().price_egress_tiers
    assert data["metrics"]["NOTETAKER_PUT_PRICE_USD_PER_1000"] == "0.005"
    assert data["metrics"]["NOTETAKER_GET_PRICE_USD_PER_1000"] == "0.0004"
    assert data["metrics"]["NOTETAKER_COST_ALERT_THRESHOLD_USD"] == "50"
    assert data["metrics"]["NOTETAKER_METRICS_TOP_ORGS"] == "20"
    public = "https://notetaker.example.com"
    assert data["scheduler"]["NOTETAKER_WEBHOOK_BASE_URL"] == public
    assert data["transcript-sync"]["NOTETAKER_INGEST_PUBLIC_URL"] == public
    # Empty endpoint = AWS: left unset rather than set to "".
    assert all("NOTETAKER_S3_ENDPOINT_URL" not in d for d in data.values())
    minio = by_component(full, "ConfigMap")["uploader"]["data"]["NOTETAKER_S3_ENDPOINT_URL"]
    assert minio == "http://minio.storage:9000"


def test_secrets_are_only_referenced(
    rendered: list[Manifest], service_env_names: dict[str, set[str]]
) -> None:
    assert not of_kind(rendered, "Secret"), "the chart must never create secret values"
    for config in of_kind(rendered, "ConfigMap"):
        leaked = [k for k in config.get("data", {}) if SECRET_ENV.search(k)]
        assert not leaked, f"{config['metadata']['name']} holds secrets {leaked}"
    for name, spec in pod_specs(rendered):
        for container in spec["containers"]:
            for env in container.get("env", []):
                if not SECRET_ENV.search(env["name"]):
                    continue
                assert "value" not in env, f"{name}: {env['name']} has a literal value"
                ref = env["valueFrom"]["secretKeyRef"]
                assert ref["name"], (name, env["name"])
                assert ref["key"], (name, env["name"])
    text = yaml.safe_dump_all(rendered)
    assert not SECRET_VALUE.search(text), SECRET_VALUE.search(text)

    secret_refs = {
        service: {
            env["name"]: env["valueFrom"]["secretKeyRef"]
            for env in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
        }
        for service, deployment in by_component(rendered, "Deployment").items()
    }
    for service, refs in secret_refs.items():
        assert refs["NOTETAKER_DATABASE_URL"] == {"name": "notetaker-database", "key": "url"}
        # S3 keys are optional: without the Secret the pod uses IRSA / the default chain.
        assert refs["NOTETAKER_S3_ACCESS_KEY_ID"]["optional"] is True
        assert refs["NOTETAKER_S3_SECRET_ACCESS_KEY"]["optional"] is True
        unknown = refs.keys() - service_env_names[service]
        assert not unknown, f"{service} does not read {sorted(unknown)}"
    assert {
        "NOTETAKER_MEETINGBAAS_WEBHOOK_SECRETS",
        "NOTETAKER_MEETINGBAAS_CALLBACK_KEYS",
        "NOTETAKER_MEETINGBAAS_API_KEYS",
        "NOTETAKER_GLADIA_CALLBACK_KEYS",
    } <= secret_refs["ingest"].keys()
    # What one service mints with, the other checks with: the same Secret and key.
    assert (
        secret_refs["scheduler"]["NOTETAKER_MEETINGBAAS_CALLBACK_KEYS"]
        == secret_refs["ingest"]["NOTETAKER_MEETINGBAAS_CALLBACK_KEYS"]
    )
    assert (
        secret_refs["transcript-sync"]["NOTETAKER_GLADIA_CALLBACK_KEYS"]
        == secret_refs["ingest"]["NOTETAKER_GLADIA_CALLBACK_KEYS"]
    )
    assert "optional" not in secret_refs["ingest"]["NOTETAKER_MEETINGBAAS_WEBHOOK_SECRETS"]
    assert "NOTETAKER_GLADIA_API_KEY" in secret_refs["transcript-sync"]
    assert "NOTETAKER_ADMIN_TOKENS" in secret_refs["metrics"]
    assert "optional" not in secret_refs["uploader"]["NOTETAKER_SOURCE_URL_KEYS"]
    # Ingest seals the webhook bodies it keeps with the uploader's key ring.
    assert (
        secret_refs["ingest"]["NOTETAKER_SOURCE_URL_KEYS"]
        == secret_refs["uploader"]["NOTETAKER_SOURCE_URL_KEYS"]
    )
    assert "NOTETAKER_MEETINGBAAS_API_KEY" in secret_refs["scheduler"]


def test_no_manifest_lets_provider_urls_reach_loopback(rendered: list[Manifest]) -> None:
    """The dev stack's opt-in (its simulator runs on loopback) is never set by the chart."""
    assert "NOTETAKER_SOURCE_ALLOW_LOOPBACK" not in yaml.safe_dump_all(rendered)


def test_egress_is_dns_public_https_and_the_named_dependencies(rendered: list[Manifest]) -> None:
    policy = one(rendered, "NetworkPolicy", f"{RELEASE}-egress")["spec"]
    assert policy["policyTypes"] == ["Egress"]
    selector = policy["podSelector"]["matchLabels"]
    for where, pod in pod_templates(rendered):
        labels = pod["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{where} is not under the egress policy"
    dns, public, *dependencies = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert {p["port"] for p in public["ports"]} == {80, 443}
    blocks = [peer["ipBlock"] for peer in public["to"]]
    assert [b["cidr"] for b in blocks] == ["0.0.0.0/0", "::/0"]
    denied = [ipaddress.ip_network(c) for b in blocks for c in b["except"]]
    # Every kind of address the services' source policy refuses is denied here too.
    for address in ["10.1.2.3", "172.20.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254",
                    "100.64.0.1", "0.0.0.1", "224.0.0.1", "::1", "fd00:ec2::254", "fe80::1",
                    "::ffff:10.0.0.1", "64:ff9b::a00:1"]:  # fmt: skip
        ip = ipaddress.ip_address(address)
        assert not SourcePolicy().address_allowed(address)
        assert any(ip in net for net in denied if net.version == ip.version), address
    for address in ["8.8.8.8", "52.216.8.1", "2600:1f18::1"]:
        ip = ipaddress.ip_address(address)
        assert not any(ip in net for net in denied if net.version == ip.version), address
    ports = {p["port"] for rule in dependencies for p in rule["ports"]}
    assert ports == {9092, 5432}  # Kafka and PostgreSQL, by default from any namespace


def test_the_egress_policy_can_be_switched_off() -> None:
    assert of_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == []


def test_migrations_run_as_a_hook_before_install_and_upgrade(
    rendered: list[Manifest], migrate_env_names: set[str]
) -> None:
    job = one(rendered, "Job", f"{RELEASE}-migrations")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["command"] == ["python", "-m", "notetaker.common.migrate"]
    scheduler = by_component(rendered, "Deployment")["scheduler"]
    assert container["image"] == scheduler["spec"]["template"]["spec"]["containers"][0]["image"]
    env = {e["name"]: e for e in container["env"]}
    assert env.keys() <= migrate_env_names
    assert env["NOTETAKER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == (
        "notetaker-database"
    )
    # A pre-install hook runs before the release's ConfigMaps and ServiceAccount exist.
    assert "envFrom" not in container
    assert "serviceAccountName" not in spec


# --- traffic ---------------------------------------------------------------------------------


def test_every_deployment_has_a_service_on_port_http(rendered: list[Manifest]) -> None:
    services = by_component(rendered, "Service")
    for component, deployment in by_component(rendered, "Deployment").items():
        service = services[component]
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert service["spec"]["ports"] == [
            {"name": "http", "port": PORTS[component], "targetPort": "http", "protocol": "TCP"}
        ]


def test_ingress_publishes_only_the_webhooks(default: list[Manifest], full: list[Manifest]) -> None:
    assert not of_kind(default, "Ingress"), "the Ingress is off unless enabled"
    (ingress,) = of_kind(full, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == FULL_VALUES["ingress"]["tls"]
    (rule_,) = ingress["spec"]["rules"]
    assert rule_["host"] == "notetaker.example.com"
    (path,) = rule_["http"]["paths"]
    assert path["path"] == "/webhooks"
    assert path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": f"{RELEASE}-ingest", "port": {"name": "http"}}


def test_pod_disruption_budgets(default: list[Manifest], full: list[Manifest]) -> None:
    for manifests in (default, full):
        pdbs = by_component(manifests, "PodDisruptionBudget")
        deployments = by_component(manifests, "Deployment")
        assert sorted(pdbs) == sorted(SERVICES)
        scaled = {
            so["spec"]["scaleTargetRef"]["name"]: so["spec"]["minReplicaCount"]
            for so in of_kind(manifests, "ScaledObject")
        }
        for service, pdb in pdbs.items():
            deployment = deployments[service]
            replicas = deployment["spec"].get("replicas") or scaled[deployment["metadata"]["name"]]
            spec = pdb["spec"]
            assert spec["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
            if replicas > 1:
                assert spec["minAvailable"] == 1, service
                assert "maxUnavailable" not in spec, service
            else:
                assert spec["maxUnavailable"] == 1, service
                assert "minAvailable" not in spec, service
    assert by_component(default, "PodDisruptionBudget")["scheduler"]["spec"]["maxUnavailable"] == 1
    assert by_component(default, "PodDisruptionBudget")["uploader"]["spec"]["minAvailable"] == 1


def test_keda_scales_the_consumers_on_lag(default: list[Manifest], full: list[Manifest]) -> None:
    assert not of_kind(default, "ScaledObject"), "KEDA is off unless enabled"
    scaled = {
        so["metadata"]["labels"]["app.kubernetes.io/component"]: so
        for so in of_kind(full, "ScaledObject")
    }
    assert sorted(scaled) == sorted(KEDA_SCALED)
    deployments = {d["metadata"]["name"] for d in of_kind(full, "Deployment")}
    groups = {
        "uploader": {"notetaker-uploader", "notetaker-thumbnailer"},
        "transcript-sync": {"notetaker-transcript-sync"},
    }
    for service, scaled_object in scaled.items():
        assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled_object["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"{RELEASE}-{service}",
        }
        assert spec["scaleTargetRef"]["name"] in deployments
        # More consumers than partitions would sit idle.
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= 3
        assert spec["triggers"], service
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka"
            meta = trigger["metadata"]
            assert meta["bootstrapServers"] == "notetaker-kafka-bootstrap:9092"
            assert meta["consumerGroup"] in groups[service]
            assert meta["topic"]
            assert int(meta["lagThreshold"]) > 0
            assert all(isinstance(v, str) for v in meta.values()), meta
        assert {t["metadata"]["consumerGroup"] for t in spec["triggers"]} == groups[service]
    uploader_topics = {t["metadata"]["topic"] for t in scaled["uploader"]["spec"]["triggers"]}
    assert uploader_topics == {
        "recording.completed",
        "recording.upload_requested",
        "thumbnail.requested",
    }


# --- monitoring ------------------------------------------------------------------------------


def test_service_monitor_scrapes_every_service(rendered: list[Manifest]) -> None:
    (monitor,) = of_kind(rendered, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s
        for s in of_kind(rendered, "Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert len(selected) == len(SERVICES)
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_prometheus_rule_alerts(rendered: list[Manifest]) -> None:
    (prometheus_rule,) = of_kind(rendered, "PrometheusRule")
    assert prometheus_rule["apiVersion"] == "monitoring.coreos.com/v1"
    org = rule(rendered, "NotetakerOrgMonthlyCostHigh")
    assert 'notetaker_storage_cost_usd_month_to_date{org_id!=""' in org["expr"]
    assert org["expr"].rstrip().endswith("> 50")
    platform = rule(rendered, "NotetakerPlatformMonthlyCostHigh")
    assert platform["expr"].lstrip().startswith("sum(")
    assert "notetaker_storage_cost_usd_month_to_date" in platform["expr"]
    assert platform["expr"].rstrip().endswith("> 50")
    failing = rule(rendered, "NotetakerUploadsFailing")
    assert 'rate(notetaker_uploader_attempts_total{outcome="failed"}' in failing["expr"]
    lag = rule(rendered, "NotetakerConsumerLagHigh")
    assert "kafka_consumergroup_lag" in lag["expr"]
    dead = rule(rendered, "NotetakerEventsDeadLettered")
    assert "notetaker_consumer_events_dead_lettered_total" in dead["expr"]
    assert (
        "notetaker dead-letters replay {{ $labels.topic }} --all" in dead["annotations"]["runbook"]
    )
    assert "for 14 days (kafka.deadLetterRetentionMs)" in dead["annotations"]["description"]
    for alert in (org, platform, failing, lag, dead):
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"]
        assert alert["annotations"]["description"]


def test_cost_thresholds_follow_values() -> None:
    manifests = render({"cost": {"orgMonthlyAlertUsd": 75, "platformMonthlyAlertUsd": 75}})
    for alert in (
        "NotetakerOrgMonthlyCostHigh",
        "NotetakerPlatformMonthlyCostHigh",
        "NotetakerOrgProjectedMonthlyCostHigh",
        "NotetakerPlatformProjectedMonthlyCostHigh",
    ):
        expr = rule(manifests, alert)["expr"]
        assert re.search(r">\s*75\s*$", expr), expr
        assert "50" not in expr
    # The metrics service is told the same threshold.
    metrics = by_component(manifests, "ConfigMap")["metrics"]
    assert metrics["data"]["NOTETAKER_COST_ALERT_THRESHOLD_USD"] == "75"
    # Large thresholds stay plain numbers (Helm would print 1e+06).
    big = render({"cost": {"platformMonthlyAlertUsd": 1000000}})
    assert rule(big, "NotetakerPlatformMonthlyCostHigh")["expr"].rstrip().endswith("> 1000000")


def test_monitoring_can_be_switched_off() -> None:
    manifests = render({"monitoring": {"enabled": False}})
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert "grafana_dashboard" not in {
        label for c in of_kind(manifests, "ConfigMap") for label in c["metadata"]["labels"]
    }


def test_dashboard_and_alerts_query_the_same_metrics(rendered: list[Manifest]) -> None:
    (configmap,) = [
        c
        for c in of_kind(rendered, "ConfigMap")
        if c["metadata"]["labels"].get("grafana_dashboard")
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["notetaker.json"])
    on_disk = json.loads((CHART / "dashboards" / "notetaker.json").read_text())
    assert dashboard == on_disk
    assert dashboard["uid"]
    assert dashboard["title"]

    exprs = dashboard_exprs(dashboard)
    for title in (
        "Stored GB",
        "Month to date",
        "Projected month end",
        "Projected next month",
        "Daily cost by type",
        "Top orgs",
        "Stored GB per org",
        "Month-to-date cost per org",
        "Platform cost, month to date",
        "Upload throughput",
        "Upload failures",
        "Webhook rate",
    ):
        assert title in exprs, f"dashboard has no panel {title!r}"
    assert "org_id" in exprs["Stored GB per org"][0]
    assert "org_id" in exprs["Month-to-date cost per org"][0]

    on_dashboard = {name for queries in exprs.values() for q in queries for name in metric_names(q)}
    spec = of_kind(rendered, "PrometheusRule")[0]["spec"]
    in_rules = {
        name for group in spec["groups"] for r in group["rules"] for name in metric_names(r["expr"])
    }
    assert in_rules, "the rules query no notetaker metric"
    assert in_rules <= on_dashboard, (
        f"alerted on but not on the dashboard: {in_rules - on_dashboard}"
    )
    # Every notetaker metric queried is one the code registers.
    defined = defined_metrics()
    assert defined, "found no metric definitions under libs/ and services/"
    queried = {n for n in on_dashboard | in_rules if n.startswith("notetaker_")}
    undefined = {n for n in queried if re.sub(r"_(bucket|sum|count)$", "", n) not in defined}
    assert not undefined, f"queried but never registered by the code: {sorted(undefined)}"


def panels_by_title(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        inner["title"]: inner
        for panel in dashboard["panels"]
        for inner in [panel, *panel.get("panels", [])]
    }


def red_line(panel: dict[str, Any]) -> float | None:
    """The value of the red threshold step drawn on a panel, if it has one."""
    steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    reds = [step["value"] for step in steps if step["color"] == "red"]
    return reds[0] if reds else None


def test_dashboard_reads_like_the_admin_page() -> None:
    """An org selector, the admin page's four figures for the orgs chosen, daily cost as
    stacked bars by type, a top-orgs table, the alert threshold on the cost panels, the CSV."""
    dashboard = json.loads((CHART / "dashboards" / "notetaker.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    org = variables["org"]
    assert org["type"] == "query"
    assert org["includeAll"]
    assert org["multi"]
    match = re.fullmatch(r"label_values\((notetaker_[a-z_]+), org_id\)", org["query"])
    assert match, org["query"]
    assert match.group(1) in defined_metrics()

    panels = panels_by_title(dashboard)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "two panels share an id"
    for title in ("Stored GB", "Month to date", "Projected month end", "Projected next month"):
        assert panels[title]["type"] == "stat"
        (query,) = [t["expr"] for t in panels[title]["targets"]]
        assert 'org_id=~"$org"' in query, title

    bars = panels["Daily cost by type"]
    custom = bars["fieldConfig"]["defaults"]["custom"]
    assert (custom["drawStyle"], custom["stacking"]["mode"]) == ("bars", "normal")
    assert bars["interval"] == "1d"
    (query,) = [t["expr"] for t in bars["targets"]]
    assert "sum by (type)" in query
    assert "notetaker_storage_cost_usd_daily" in query
    assert 'org_id=~"$org"' in query

    table = panels["Top orgs"]
    assert table["type"] == "table"
    assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
    exprs = " ".join(t["expr"] for t in table["targets"])
    assert "notetaker_storage_stored_bytes" in exprs
    assert "notetaker_storage_cost_usd_month_to_date" in exprs
    assert next(t["id"] for t in table["transformations"]) == "merge"

    # The threshold drawn is the chart's default, the one the alerts and the service use.
    cost = yaml.safe_load((CHART / "values.yaml").read_text())["cost"]
    for title in ("Month-to-date cost per org", "Month to date", "Projected month end"):
        assert red_line(panels[title]) == cost["orgMonthlyAlertUsd"], title
    assert red_line(panels["Platform cost, month to date"]) == cost["platformMonthlyAlertUsd"]
    for title in ("Month-to-date cost per org", "Platform cost, month to date"):
        custom = panels[title]["fieldConfig"]["defaults"]["custom"]
        assert custom["thresholdsStyle"]["mode"] == "line", title

    # The CSV link goes to a route the metrics service serves, for the dashboard's time range.
    (link,) = [link for link in dashboard["links"] if "daily.csv" in link["url"]]
    path = link["url"].removeprefix("${admin_url}").split("?")[0]
    served = {route.path for route in admin.routes(MetricsSettings(), None)}
    assert path in served
    assert "from=${__from:date:YYYY-MM-DD}" in link["url"]
    assert "to=${__to:date:YYYY-MM-DD}" in link["url"]
    assert "admin_url" in variables


def test_a_release_draws_its_own_alert_threshold_on_the_cost_panels() -> None:
    """Raising the alert thresholds in the values moves the red line on every cost panel (the
    table's cost columns too) to where the alerts now fire; other panels keep theirs."""
    manifests = render({"cost": {"orgMonthlyAlertUsd": 120, "platformMonthlyAlertUsd": 900}})
    (configmap,) = [c for c in of_kind(manifests, "ConfigMap") if "notetaker.json" in c["data"]]
    panels = panels_by_title(json.loads(configmap["data"]["notetaker.json"]))
    for title in (
        "Month to date",
        "Projected month end",
        "Projected next month",
        "Month-to-date cost per org",
    ):
        assert red_line(panels[title]) == 120, title
    assert red_line(panels["Platform cost, month to date"]) == 900
    (cells,) = [
        prop["value"]
        for override in panels["Top orgs"]["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "thresholds"
    ]
    assert [s["value"] for s in cells["steps"] if s["color"] == "red"] == [120]
    on_disk = panels_by_title(json.loads((CHART / "dashboards" / "notetaker.json").read_text()))
    assert red_line(panels["Oldest unfinished upload"]) == red_line(
        on_disk["Oldest unfinished upload"]
    )
    rules = {
        r["alert"]: r["expr"]
        for g in of_kind(manifests, "PrometheusRule")[0]["spec"]["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    assert "> 120" in rules["NotetakerOrgMonthlyCostHigh"]
    assert "> 900" in rules["NotetakerPlatformMonthlyCostHigh"]


# --- promtool --------------------------------------------------------------------------------


def write_rules(manifests: list[Manifest], path: Path, *, annotations: bool = True) -> Path:
    spec = of_kind(manifests, "PrometheusRule")[0]["spec"]
    if not annotations:
        spec = {
            "groups": [
                {
                    **g,
                    "rules": [
                        {k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]
                    ],
                }
                for g in spec["groups"]
            ]
        }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_promtool_accepts_the_rules_and_dashboard_queries(
    rendered: list[Manifest], tmp_path: Path
) -> None:
    binary = promtool_path()
    rules = write_rules(rendered, tmp_path / "rules.yml")
    # Every dashboard query as a recording rule, so promtool parses it too.
    (configmap,) = [c for c in of_kind(rendered, "ConfigMap") if "notetaker.json" in c["data"]]
    exprs = dashboard_exprs(json.loads(configmap["data"]["notetaker.json"]))
    queries = [q for panel in exprs.values() for q in panel]
    dashboard_rules = tmp_path / "dashboard.yml"
    dashboard_rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {
                                "record": f"dashboard:query_{i}",
                                "expr": q,
                            }
                            for i, q in enumerate(queries)
                        ],
                    }
                ]
            }
        )
    )
    result = subprocess.run(
        [binary, "check", "rules", str(rules), str(dashboard_rules)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def assert_rule_tests_pass(cases: dict[str, Any], folder: Path) -> None:
    """Run promtool's rule unit tests `cases` (rules.yml already in `folder`)."""
    (folder / "tests.yml").write_text(yaml.safe_dump(cases, sort_keys=False))
    result = subprocess.run(
        [promtool_path(), "test", "rules", "tests.yml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=folder,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def check_rules(
    folder: Path,
    *cases: dict[str, Any],
    manifests: list[Manifest] | None = None,
    annotations: bool = True,
) -> None:
    """Write the chart's rules (`manifests`, the default release unless given) to `folder` and
    run promtool's rule unit tests `cases` (each a `rule_case`) against them."""
    write_rules(
        render() if manifests is None else manifests,
        folder / "rules.yml",
        annotations=annotations,
    )
    assert_rule_tests_pass(
        {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": list(cases)}, folder
    )


def org_series(metric: str, org: str, values: str, pod: str = "metrics-a") -> dict[str, str]:
    """An input series of `metric` for `org`, as the metrics replica `pod` exports it."""
    return {"series": f'{metric}{{org_id="{org}", pod="{pod}"}}', "values": values}


def rule_case(series: list[dict[str, str]], *checks: dict[str, Any]) -> dict[str, Any]:
    """One promtool test: the input `series`, scraped every minute, and the alert `checks`
    (each a `fires` or a `quiet`)."""
    return {"interval": "1m", "input_series": series, "alert_rule_test": list(checks)}


def fires(
    eval_time: str, alertname: str, alert: dict[str, Any], *alerts: dict[str, Any]
) -> dict[str, Any]:
    """At `eval_time`, `alertname` fires exactly as `alert` and `alerts` (`warning`s or
    `critical`s)."""
    return {"eval_time": eval_time, "alertname": alertname, "exp_alerts": [alert, *alerts]}


def quiet(eval_time: str, alertname: str) -> dict[str, Any]:
    """At `eval_time`, `alertname` does not fire."""
    return {"eval_time": eval_time, "alertname": alertname, "exp_alerts": []}


def expected_alert(
    severity: str, annotations: dict[str, str] | None, labels: dict[str, str]
) -> dict[str, Any]:
    alert: dict[str, Any] = {"exp_labels": {"severity": severity, **labels}}
    if annotations is not None:
        alert["exp_annotations"] = annotations
    return alert


def warning(annotations: dict[str, str] | None = None, **labels: str) -> dict[str, Any]:
    """A firing alert of severity warning with these labels (and, given, exactly these
    annotations; without, none)."""
    return expected_alert("warning", annotations, labels)


def critical(annotations: dict[str, str] | None = None, **labels: str) -> dict[str, Any]:
    """As `warning`, of severity critical."""
    return expected_alert("critical", annotations, labels)


def test_alerts_fire_on_the_right_series(tmp_path: Path) -> None:
    """promtool's rule unit tests: the alerts fire when, and only when, a platform team wants."""
    mtd = "notetaker_storage_cost_usd_month_to_date"
    attempts = "notetaker_uploader_attempts_total"
    lag = "kafka_consumergroup_lag"
    check_rules(
        tmp_path,
        rule_case(
            [
                # Two metrics replicas export the same gauges: counted once.
                org_series(mtd, "acme", "60x40"),
                org_series(mtd, "acme", "60x40", pod="metrics-b"),
                org_series(mtd, "small", "49x40"),
                # The sum of the orgs outside the top N is no org: it never pages alone.
                org_series(mtd, "other", "90x40"),
                {"series": f'{attempts}{{outcome="failed"}}', "values": "0+3x40"},
                {"series": f'{attempts}{{outcome="complete"}}', "values": "0+7x40"},
                {
                    "series": f'{lag}{{consumergroup="notetaker-uploader", '
                    'topic="recording.completed", partition="0"}',
                    "values": "600x40",
                },
                {
                    "series": f'{lag}{{consumergroup="notetaker-uploader", '
                    'topic="recording.completed", partition="1"}',
                    "values": "600x40",
                },
                {
                    "series": f'{lag}{{consumergroup="someone-else", topic="x", partition="0"}}',
                    "values": "99999x40",
                },
            ],
            # Not yet: every alert waits out its `for`.
            quiet("5m", "NotetakerOrgMonthlyCostHigh"),
            fires("20m", "NotetakerOrgMonthlyCostHigh", warning(org_id="acme")),
            # 60 + 49 + 90 = 199 > 50, with acme counted once.
            fires("20m", "NotetakerPlatformMonthlyCostHigh", warning()),
            # 30% of attempts fail.
            fires("35m", "NotetakerUploadsFailing", warning()),
            # 1,200 events behind, over two partitions; other groups are not ours.
            fires(
                "20m",
                "NotetakerConsumerLagHigh",
                warning(consumergroup="notetaker-uploader", topic="recording.completed"),
            ),
        ),
        rule_case(
            [
                org_series(mtd, "acme", "20x40"),
                org_series(mtd, "beta", "20x40"),
                {"series": f'{attempts}{{outcome="failed"}}', "values": "0+0x40"},
                {"series": f'{attempts}{{outcome="complete"}}', "values": "0+10x40"},
                {
                    "series": f'{lag}{{consumergroup="notetaker-uploader", '
                    'topic="recording.completed", partition="0"}',
                    "values": "999x40",
                },
            ],
            quiet("30m", "NotetakerOrgMonthlyCostHigh"),
            quiet("30m", "NotetakerPlatformMonthlyCostHigh"),
            quiet("30m", "NotetakerUploadsFailing"),
            # 999 events behind: under the threshold.
            quiet("30m", "NotetakerConsumerLagHigh"),
        ),
        annotations=False,
    )


def test_drift_alert_fires_on_an_org_or_the_platform_past_the_percentage(tmp_path: Path) -> None:
    """NotetakerStorageDriftHigh: an org's (or the platform's) S3 bytes and stored level more
    than cost.driftAlertPercent (5 %) apart, as the latest reconciliation found them, for five
    minutes; the run that corrects it, and the next one finding nothing, clear it."""
    ratio = "notetaker_storage_reconciliation_drift_ratio"
    platform = "notetaker_storage_reconciliation_platform_drift_ratio"
    description = rule(render(), "NotetakerStorageDriftHigh")["annotations"]["description"]
    check_rules(
        tmp_path,
        rule_case(
            [
                # Two metrics replicas export the same gauges: one alert per org.
                org_series(ratio, "acme", "0.36x30 0x30", pod="a"),
                org_series(ratio, "acme", "0.36x30 0x30", pod="b"),
                org_series(ratio, "steady", "0.04x60", pod="a"),
                {"series": f'{platform}{{pod="a"}}', "values": "0.02x60"},
            ],
            quiet("3m", "NotetakerStorageDriftHigh"),
            fires(
                "10m",
                "NotetakerStorageDriftHigh",
                warning(
                    {
                        "summary": "acme: S3 and the stored level differ by 36%",
                        "description": description,
                    },
                    org_id="acme",
                ),
            ),
            # Corrected: the next runs find no drift.
            quiet("45m", "NotetakerStorageDriftHigh"),
        ),
        rule_case(
            [
                org_series(ratio, "a", "0.04x30", pod="a"),
                org_series(ratio, "other", "0.9x30", pod="a"),
                {"series": f'{platform}{{pod="a"}}', "values": "0.08x30"},
            ],
            # No org past 5 % (`other` is no org), the platform is.
            fires(
                "10m",
                "NotetakerStorageDriftHigh",
                warning(
                    {
                        "summary": "platform: S3 and the stored level differ by 8%",
                        "description": description,
                    },
                    org_id="platform",
                ),
            ),
        ),
    )
    # The percentage is a value, and the metrics service is told the same.
    manifests = render({"cost": {"driftAlertPercent": 12.5}})
    assert rule(manifests, "NotetakerStorageDriftHigh")["expr"].count("> 0.125") == 2
    config = by_component(manifests, "ConfigMap")["metrics"]["data"]
    assert config["NOTETAKER_STORAGE_DRIFT_ALERT_PERCENT"] == "12.5"
    assert config["NOTETAKER_STORAGE_RECONCILE_INTERVAL_SECONDS"] == "3600"


def test_inventory_reports_are_off_by_default_and_wired_to_the_metrics_service() -> None:
    """cost.inventory.* reach the metrics service as the settings it reads: unset, it lists the
    bucket; set, it reads the reports where the inventory configuration delivers them."""
    off = by_component(render(), "ConfigMap")["metrics"]["data"]
    assert MetricsSettings.model_validate(settings_of(off)).inventory() is None
    inventory = {"bucket": "inv", "prefix": "reports", "configId": "daily", "maxAgeHours": 30}
    on = by_component(render({"cost": {"inventory": inventory}}), "ConfigMap")["metrics"]["data"]
    source = MetricsSettings.model_validate(settings_of(on)).inventory()
    assert source is not None
    assert (source.folder("notetaker-recordings"), source.max_age.total_seconds()) == (
        "reports/notetaker-recordings/daily/",
        30 * 3600,
    )
    # A bucket without the configuration's id is refused at install, not at the pod's start.
    with pytest.raises(Exception, match=r"cost\.inventory\.configId is required"):
        render({"cost": {"inventory": {"bucket": "inv"}}})


def settings_of(config: dict[str, str]) -> dict[str, str]:
    names = ("BUCKET", "PREFIX", "CONFIG_ID", "MAX_AGE_HOURS")
    return {f"s3_inventory_{n.lower()}": config[f"NOTETAKER_S3_INVENTORY_{n}"] for n in names}


def test_stuck_upload_alert_fires_on_an_upload_waiting_past_the_threshold(tmp_path: Path) -> None:
    """NotetakerUploadStuck: the oldest unfinished upload's age, as every metrics replica
    exports it, past an hour for ten minutes; an upload that completes clears it."""
    age = "notetaker_upload_oldest_unfinished_age_seconds"
    check_rules(
        tmp_path,
        rule_case(
            [
                # Two replicas see the same recording waiting since 40 minutes before the
                # series starts (2400 s), then growing a minute a minute; at 40m it is
                # copied and the oldest left is 5 minutes old.
                {"series": f'{age}{{pod="metrics-a"}}', "values": "2400+60x39 300x20"},
                {"series": f'{age}{{pod="metrics-b"}}', "values": "2400+60x39 300x20"},
            ],
            # At 20m it has waited exactly an hour: not yet past the threshold.
            quiet("20m", "NotetakerUploadStuck"),
            # Past the hour since 21m, for ten minutes at 31m.
            quiet("30m", "NotetakerUploadStuck"),
            fires(
                "31m",
                "NotetakerUploadStuck",
                warning(
                    {
                        "summary": "A recording has waited 1h 11m 0s to be copied to S3",
                        "description": "The oldest upload that is neither complete"
                        " nor failed for good became available more than 3600"
                        " seconds ago; retries take about 17 minutes and provider"
                        " URLs expire after about 4 hours. notetaker_uploads shows"
                        " the uploads by status. Look for the recording in"
                        " PostgreSQL (recordings: s3_upload_status,"
                        " upload_lease_holder, upload_lease_expires_at,"
                        " s3_upload_error_message) and in the uploader's and"
                        " scheduler's logs (upload.busy, upload.lease_lost,"
                        " upload.failed).",
                    }
                ),
            ),
            quiet("45m", "NotetakerUploadStuck"),
        ),
    )


def test_dead_letter_alert_fires_on_the_first_dead_letter_and_names_the_replay_command(
    tmp_path: Path,
) -> None:
    """NotetakerEventsDeadLettered, with its annotations rendered as Alertmanager gets them."""
    dlq = "notetaker_consumer_events_dead_lettered_total"

    def series(group: str, topic: str, pod: str, values: str) -> dict[str, str]:
        return {
            "series": f'{dlq}{{group="{group}", topic="{topic}", pod="{pod}"}}',
            "values": values,
        }

    def firing(group: str, topic: str, value: int) -> dict[str, Any]:
        return warning(
            {
                "summary": f"Consumer group {group} dead-lettered events from {topic}:"
                f" they wait on {topic}.dlq to be replayed",
                "description": f"{value} event(s) of {topic} could not be parsed or kept failing"
                f" in {group} over the last 30 minutes. They were parked on {topic}.dlq with"
                " their error and are not applied until replayed; the topic keeps them for 14"
                " days (kafka.deadLetterRetentionMs).",
                "runbook": f"List them with their errors: notetaker dead-letters list {topic}."
                " Fix the cause (a bug, a bad payload, a dependency), then check what would go"
                f" out with notetaker dead-letters replay {topic} --all --dry-run and replay with"
                f" notetaker dead-letters replay {topic} --all (or --offset P:O, --event-id ID for"
                f" some). Each dead letter is published once to {topic}, however often the"
                " command runs.",
            },
            group=group,
            topic=topic,
        )

    check_rules(
        tmp_path,
        rule_case(
            [
                # Old dead letters, nothing new since: quiet once Prometheus has 30 minutes
                # of history (in its first 30 minutes a standing count reads as new).
                series("notetaker-metrics", "storage.usage", "c", "3x100"),
                # Started at 0 (as consumers start their series), one dead letter at 50m.
                series("notetaker-uploader", "recording.completed", "a", "0x49 1x50"),
                # A counter first written at 1 (no 0 ever scraped): still the first one.
                series("notetaker-transcript-sync", "transcript.ready", "b", "_x50 1x50"),
                # A pod restarted: a new series at 0 is no dead letter.
                series("notetaker-uploader", "recording.completed", "d", "_x50 0x50"),
            ],
            quiet("45m", "NotetakerEventsDeadLettered"),
            fires(
                "55m",
                "NotetakerEventsDeadLettered",
                firing("notetaker-uploader", "recording.completed", 1),
                firing("notetaker-transcript-sync", "transcript.ready", 1),
            ),
            # 30 minutes without a new one: resolved.
            quiet("85m", "NotetakerEventsDeadLettered"),
        ),
    )


def test_parked_events_alert_fires_after_half_an_hour_of_parked_events(tmp_path: Path) -> None:
    """NotetakerEventsParked: quiet for a parked event retried within 30 minutes, firing for
    one still parked after 30, resolved once it is handled."""
    gauge = "notetaker_consumer_parked_events"
    check_rules(
        tmp_path,
        rule_case(
            [
                # parked for 10 minutes, then handled
                {
                    "series": f'{gauge}{{group="notetaker-metrics", topic="storage.usage"}}',
                    "values": "0x10 1x10 0x60",
                },
                # two parked from minute 10 until minute 70
                {
                    "series": f"{gauge}{{group='notetaker-uploader', topic='recording.completed'}}",
                    "values": "0x10 2x60 0x20",
                },
            ],
            quiet("30m", "NotetakerEventsParked"),
            fires(
                "50m",
                "NotetakerEventsParked",
                warning(
                    {
                        "summary": "Consumer group notetaker-uploader has had events"
                        " of recording.completed parked for 30 minutes",
                        "description": "2 event(s) of recording.completed kept"
                        " failing in notetaker-uploader after their retries and wait"
                        " in the parked_events table, retried from there (30 s,"
                        " doubling to an hour). They are not lost, but not applied"
                        " either.",
                        "runbook": 'See why: SELECT topic, "offset", attempts, error,'
                        " next_attempt_at FROM parked_events WHERE consumer_group ="
                        " 'notetaker-uploader' ORDER BY parked_at. Fix the cause (a"
                        " provider refusing, a bug); each is retried when due, and"
                        " dead-lettered if the error turns out permanent.",
                    },
                    group="notetaker-uploader",
                    topic="recording.completed",
                ),
            ),
            quiet("85m", "NotetakerEventsParked"),
        ),
    )


# --- the operators' toolbox ------------------------------------------------------------------


TOOLBOX_VALUES: dict[str, Any] = {**FULL_VALUES, "toolbox": {"enabled": True}}


@pytest.fixture(scope="module")
def with_toolbox() -> list[Manifest]:
    return render(TOOLBOX_VALUES)


def test_the_toolbox_is_off_unless_enabled(default: list[Manifest]) -> None:
    assert "toolbox" not in by_component(default, "Deployment")


def test_the_toolbox_lints_and_passes_the_kubernetes_schema(with_toolbox: list[Manifest]) -> None:
    report = helm.lint(CHART, TOOLBOX_VALUES, strict=True)
    assert not report["errors"], report
    assert not [m for m in report["messages"] if m["severity"] >= 2], report
    for version in KUBERNETES_VERSIONS:
        test_every_manifest_passes_the_kubernetes_schema(with_toolbox, version)
    # The rules every pod follows hold for it too.
    test_no_container_runs_as_root(with_toolbox)
    test_every_container_has_resource_requests_and_limits(with_toolbox)
    test_every_resource_carries_the_recommended_labels(with_toolbox)


def test_the_toolbox_runs_the_cli_with_the_services_settings_and_secrets(
    with_toolbox: list[Manifest], cli_env_names: set[str]
) -> None:
    deployment = by_component(with_toolbox, "Deployment")["toolbox"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "notetaker-cli:0.1.0"
    assert container["command"] == ["sleep", "infinity"]  # exec'd into, never a daemon
    assert "ports" not in container
    # The services' ServiceAccount: the same S3 access (IRSA) as the uploader's.
    scheduler = by_component(with_toolbox, "Deployment")["scheduler"]["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == scheduler["serviceAccountName"]
    (source,) = container["envFrom"]
    config = by_component(with_toolbox, "ConfigMap")["toolbox"]
    assert source == {"configMapRef": {"name": config["metadata"]["name"]}}
    data = config["data"]
    shared = by_component(with_toolbox, "ConfigMap")["scheduler"]["data"]
    for name in (
        "NOTETAKER_KAFKA_BOOTSTRAP_SERVERS",
        "NOTETAKER_S3_BUCKET",
        "NOTETAKER_S3_ENDPOINT_URL",
        "NOTETAKER_MEDIA_RETENTION_DAYS",
        "NOTETAKER_S3_LIFECYCLE_EXPIRATION_DAYS",
    ):
        assert data[name] == shared[name], name
    assert data["NOTETAKER_MEDIA_RETENTION_DAYS"] == "90"
    assert data["NOTETAKER_S3_LIFECYCLE_EXPIRATION_DAYS"] == "400"
    assert not data.keys() - cli_env_names, "settings the tool does not read"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert not refs.keys() - cli_env_names
    assert refs["NOTETAKER_DATABASE_URL"] == {"name": "notetaker-database", "key": "url"}
    scheduler_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in scheduler["containers"][0]["env"]
    }
    for name in ("NOTETAKER_MEETINGBAAS_API_KEY", "NOTETAKER_GLADIA_API_KEY"):
        assert refs[name] == scheduler_refs[name], name
    text = yaml.safe_dump_all(with_toolbox)
    assert not SECRET_VALUE.search(text)


def test_every_service_reads_the_retention_and_the_safety_net_is_longer() -> None:
    manifests = render({"retention": {"defaultDays": 30, "lifecycleSafetyNetDays": 365}})
    for service, config in by_component(manifests, "ConfigMap").items():
        assert config["data"]["NOTETAKER_MEDIA_RETENTION_DAYS"] == "30", service
        assert config["data"]["NOTETAKER_S3_LIFECYCLE_EXPIRATION_DAYS"] == "365", service


def test_projected_cost_alerts_fire_on_the_projection(tmp_path: Path) -> None:
    """An org heading past the threshold alerts before its month to date passes it: per org
    (never the summed `other`, never twice for two metrics replicas) and for the platform."""
    end = "notetaker_storage_cost_usd_projected_month_end"
    mtd = "notetaker_storage_cost_usd_month_to_date"
    check_rules(
        tmp_path,
        rule_case(
            [
                org_series(end, "acme", "70x40"),
                org_series(end, "acme", "70x40", pod="metrics-b"),
                org_series(end, "small", "30x40"),
                org_series(end, "other", "90x40"),
                org_series(mtd, "acme", "10x40"),
            ],
            quiet("5m", "NotetakerOrgProjectedMonthlyCostHigh"),
            fires("20m", "NotetakerOrgProjectedMonthlyCostHigh", warning(org_id="acme")),
            # 70 + 30 + 90 = 190 > 50, acme counted once.
            fires("20m", "NotetakerPlatformProjectedMonthlyCostHigh", warning()),
            quiet("20m", "NotetakerOrgMonthlyCostHigh"),
        ),
        rule_case(
            [
                org_series(end, "acme", "20x40"),
                org_series(end, "beta", "20x40"),
            ],
            quiet("30m", "NotetakerOrgProjectedMonthlyCostHigh"),
            quiet("30m", "NotetakerPlatformProjectedMonthlyCostHigh"),
        ),
        annotations=False,
    )


def test_daily_cost_spike_alerts_fire_on_a_jump_and_never_on_cents(tmp_path: Path) -> None:
    """NotetakerOrgDailyCostSpike and NotetakerPlatformDailyCostSpike: yesterday's cost over
    twice the day before's and over the minimum more (2 USD an org, 10 the platform), summed
    over the cost types, each replica's series counted once, for 30 minutes."""
    daily = "notetaker_storage_cost_usd_daily"

    def day(org: str, kind: str, which: str, usd: float, pod: str = "metrics-a") -> dict[str, str]:
        return {
            "series": f'{daily}{{org_id="{org}", type="{kind}", day="{which}", pod="{pod}"}}',
            "values": f"{usd}x60",
        }

    def org_spike(org: str, usd: str) -> dict[str, Any]:
        return warning(
            {
                "summary": f"Org {org} spent {usd} USD on recordings storage yesterday, a jump"
                " from the day before",
                "description": "The org's cost yesterday (a whole UTC day: storage, upload,"
                " download, requests) was more than 2 times the day before's and more than 2 USD"
                f" above it. GET /admin/daily?org_id={org} on the metrics service gives the cost"
                f' by type per day; notetaker_storage_cost_usd_daily{{org_id="{org}"}} shows which'
                " type jumped.",
            },
            org_id=org,
        )

    check_rules(
        tmp_path,
        rule_case(
            [
                # acme: 12 USD yesterday (storage and download) after 4: a spike. Two
                # metrics replicas export it: counted once.
                day("acme", "storage", "yesterday", 10),
                day("acme", "download", "yesterday", 2),
                day("acme", "storage", "day_before", 4),
                day("acme", "storage", "yesterday", 10, "metrics-b"),
                day("acme", "download", "yesterday", 2, "metrics-b"),
                day("acme", "storage", "day_before", 4, "metrics-b"),
                # Tripled, but cents.
                day("cents", "storage", "yesterday", 0.03),
                day("cents", "storage", "day_before", 0.01),
                # 10 USD more, but only 1.5 times.
                day("steady", "storage", "yesterday", 30),
                day("steady", "storage", "day_before", 20),
                # The orgs outside the top N together: no single org, never pages alone.
                day("other", "storage", "yesterday", 50),
                day("other", "storage", "day_before", 1),
                # Today so far counts for neither.
                day("steady", "storage", "today", 500),
            ],
            quiet("20m", "NotetakerOrgDailyCostSpike"),
            fires("35m", "NotetakerOrgDailyCostSpike", org_spike("acme", "12.00")),
            # 92.03 USD yesterday after 25.01: over twice, and 67 USD more.
            fires(
                "35m",
                "NotetakerPlatformDailyCostSpike",
                warning(
                    {
                        "summary": "Recordings storage cost 92.03 USD yesterday, a"
                        " jump from the day before",
                        "description": "The platform's cost yesterday (a whole UTC"
                        " day) was more than 2 times the day before's and more than"
                        " 10 USD above it. The dashboard's daily cost by type and top"
                        " orgs show where it comes from; GET /admin/daily has every"
                        " org's day.",
                    }
                ),
            ),
        ),
        rule_case(
            [
                # One org jumps 2.5 USD (3 after 0.5): it pages; the platform's day goes
                # from 20.5 to 33 USD, not twice: the platform does not.
                day("small", "requests", "yesterday", 3),
                day("small", "requests", "day_before", 0.5),
                day("steady", "storage", "yesterday", 30),
                day("steady", "storage", "day_before", 20),
            ],
            fires("35m", "NotetakerOrgDailyCostSpike", org_spike("small", "3.00")),
            quiet("35m", "NotetakerPlatformDailyCostSpike"),
        ),
        rule_case(
            [
                # Quiet days: 0.01 to 0.03 USD, and 40 to 45 USD.
                day("cents", "storage", "yesterday", 0.03),
                day("cents", "storage", "day_before", 0.01),
                day("big", "storage", "yesterday", 45),
                day("big", "storage", "day_before", 40),
            ],
            quiet("50m", "NotetakerOrgDailyCostSpike"),
            quiet("50m", "NotetakerPlatformDailyCostSpike"),
        ),
    )


def test_daily_spike_thresholds_follow_values() -> None:
    manifests = render(
        {"cost": {"dailySpikeRatio": 3.5, "orgDailySpikeMinUsd": 7, "platformDailySpikeMinUsd": 40}}
    )
    org = rule(manifests, "NotetakerOrgDailyCostSpike")["expr"]
    assert "> 3.5 * sum by (org_id)" in org
    assert re.search(r">\s*7\s*$", org), org
    platform = rule(manifests, "NotetakerPlatformDailyCostSpike")["expr"]
    assert "> 3.5 * sum(" in platform
    assert re.search(r">\s*40\s*$", platform), platform
    # The metrics service keeps the series of the orgs these alerts would page for.
    metrics = by_component(manifests, "ConfigMap")["metrics"]
    assert metrics["data"]["NOTETAKER_COST_SPIKE_RATIO"] == "3.5"
    assert metrics["data"]["NOTETAKER_COST_SPIKE_MIN_USD"] == "7"


def promtool_cases() -> dict[str, set[bool]]:
    """Alert name -> whether this file's promtool rule unit tests expect it firing (True),
    quiet (False), or both: every `alert_rule_test` entry, read from the source (a `fires` or
    `quiet` call, or a literal entry)."""
    tree = ast.parse(Path(__file__).read_text())
    found: dict[str, set[bool]] = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("fires", "quiet")
            and len(node.args) >= 2
            and isinstance(alert := node.args[1], ast.Constant)
            and isinstance(alert.value, str)
        ):
            found.setdefault(alert.value, set()).add(node.func.id == "fires")
        if not isinstance(node, ast.Dict):
            continue
        entry = {
            key.value: value
            for key, value in zip(node.keys, node.values, strict=True)
            if isinstance(key, ast.Constant)
        }
        name, expected = entry.get("alertname"), entry.get("exp_alerts")
        if isinstance(name, ast.Constant) and isinstance(name.value, str) and expected is not None:
            quiet = isinstance(expected, ast.List) and not expected.elts
            found.setdefault(name.value, set()).add(not quiet)
    return found


def test_promtool_covers_every_alert_firing_and_quiet(rendered: list[Manifest]) -> None:
    """Every alert the chart ships has a promtool unit test where it fires and one where it
    stays quiet."""
    spec = of_kind(rendered, "PrometheusRule")[0]["spec"]
    alerts = {r["alert"] for group in spec["groups"] for r in group["rules"] if "alert" in r}
    assert len(alerts) >= 10
    cases = promtool_cases()
    assert {a for a in alerts if a not in cases} == set(), "alerts without a promtool test"
    assert {a for a in alerts if True not in cases[a]} == set(), "never tested firing"
    assert {a for a in alerts if False not in cases[a]} == set(), "never tested quiet"
    assert set(cases) <= alerts, f"tests of alerts the chart lacks: {set(cases) - alerts}"


def test_service_down_alert_fires_for_a_pod_of_this_release_unscraped_for_five_minutes(
    tmp_path: Path,
) -> None:
    """NotetakerServiceDown: a pod of this release and namespace Prometheus cannot scrape for
    5 minutes; another release's or namespace's pod, or a short blip, is not ours to page."""

    def up(job: str, namespace: str, pod: str, values: str) -> dict[str, str]:
        return {
            "series": f'up{{job="{job}", namespace="{namespace}", pod="{pod}"}}',
            "values": values,
        }

    check_rules(
        tmp_path,
        rule_case(
            [
                up("notetaker-uploader", NAMESPACE, "uploader-a", "1x5 0x20"),
                up("notetaker-uploader", NAMESPACE, "uploader-b", "1x30"),
                up("notetaker-ingest", NAMESPACE, "ingest-a", "1x5 0x2 1x20"),  # a blip
                up("notetaker-uploader", "staging", "uploader-s", "0x30"),
                up("someone-else", NAMESPACE, "x", "0x30"),
            ],
            quiet("8m", "NotetakerServiceDown"),
            fires(
                "15m",
                "NotetakerServiceDown",
                critical(
                    {
                        "summary": "notetaker-uploader pod uploader-a cannot be scraped",
                        "description": "Prometheus cannot reach the pod's /metrics"
                        " endpoint: the pod is down or wedged.",
                    },
                    job="notetaker-uploader",
                    namespace=NAMESPACE,
                    pod="uploader-a",
                ),
            ),
        ),
    )
