"""Against a real Prometheus scraping the pipeline after it stored a meeting: every query of
the chart's Grafana dashboard and every alert expression of its PrometheusRule returns data.

Debian's `prometheus` server scrapes the five services every second, as the chart's
ServiceMonitor would (job `notetaker-<service>`, the release's namespace), and loads the rendered
rules. Each dashboard query is run as Grafana runs it (a range query at the panel's interval,
or an instant query for the tables), with `$org` as All and as one org from the org variable's
own query. Each alert expression is run with its comparisons made `bool`, so it returns the
series it compares whether or not they pass the threshold. Only the expressions listed in
FAILURES_ONLY may be empty (nothing of theirs failed); they may hold data too, as the pipeline
is shared with the package's other tests, some of which make webhooks fail on purpose.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from notetaker.devstack.children import spawn
from notetaker.devstack.pipeline import Pipeline
from notetaker.devstack.stack import free_port
from tests.conftest import prometheus_path
from tests.deploy.test_helm import CHART, NAMESPACE, of_kind, render
from tests.e2e.conftest import Stored

# Series only a failure writes: these queries are empty while nothing of theirs failed.
FAILURES_ONLY = {
    # A webhook refused (bad signature, unknown bot, ...): the pipeline's deliveries all pass.
    "sum by (provider, reason) (rate(notetaker_ingest_webhooks_rejected_total[5m]))",
    # An org whose level and S3 drifted apart (usage counted wrong): a reconciliation run writes
    # an org's series only then. The test stack runs none (it would mark the shared database's
    # rows without objects expired); tests/metrics/test_reconcile.py covers the series.
    "max by (org_id) (notetaker_storage_reconciliation_drift_bytes)",
    "max by (org_id) (notetaker_storage_reconciliation_drift_ratio)",
}
# Series from outside this project: the chart's lag panel and alert read kafka-exporter's
# metric, which docker-compose and a cluster run next to Kafka; the test stack has none.
NOT_EXPORTED_HERE = re.compile(r"\bkafka_consumergroup_lag\b")

COMPARISON = re.compile(r"(?<=\s)(==|!=|>=|<=|>|<)(?=\s)")


def bare(expr: str) -> str:
    """An alert expression with every comparison made `bool`: the compared series, 0 or 1."""
    return COMPARISON.sub(r"\1 bool", expr)


@dataclass(frozen=True)
class Query:
    where: str  # the panel (or alert) it comes from
    expr: str
    instant: bool = False
    step_seconds: float = 1.0


def seconds(interval: str) -> float:
    value, unit = re.fullmatch(r"(\d+)([smhd])", interval).groups()  # type: ignore[union-attr]
    return int(value) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def dashboard_queries(dashboard: dict[str, Any], org: str) -> list[Query]:
    """Every target of every panel, its variables substituted as Grafana would."""
    values = {"org": org, "__rate_interval": "1m", "__interval": "1s", "__range": "5m"}
    queries = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                expr = re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], target["expr"])
                assert "$" not in expr, expr
                queries.append(
                    Query(
                        inner["title"],
                        expr,
                        instant=bool(target.get("instant")),
                        step_seconds=seconds(inner["interval"]) if "interval" in inner else 1.0,
                    )
                )
    return queries


@dataclass
class Prometheus:
    url: str
    http: httpx.AsyncClient

    async def api(self, path: str, **params: Any) -> Any:
        response = await self.http.get(f"{self.url}/api/v1/{path}", params=params)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    async def run(self, query: Query) -> list[Any]:
        """The series the query returns (with at least one value), as Grafana asks for them."""
        now = time.time()
        if query.instant:
            data = await self.api("query", query=query.expr, time=now)
            return list(data["result"])
        step = query.step_seconds
        start = math.floor((now - 30) / step) * step  # Grafana aligns the range to its step
        data = await self.api("query_range", query=query.expr, start=start, end=now, step=step)
        return [series for series in data["result"] if series["values"]]


def scrape_config(pipeline: Pipeline, rules: Path) -> dict[str, Any]:
    """Each service as the chart's ServiceMonitor has Prometheus scrape it, every second."""
    jobs = []
    for name, process in pipeline.services.processes.items():
        service = name.replace("_", "-")
        jobs.append(
            {
                "job_name": f"notetaker-{service}",
                "static_configs": [
                    {
                        "targets": [urlsplit(process.url).netloc],
                        "labels": {"namespace": NAMESPACE, "pod": f"notetaker-{service}-0"},
                    }
                ],
            }
        )
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": jobs,
    }


@pytest.fixture(scope="module")
async def prometheus(
    one_stored_meeting: Stored, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Prometheus]:
    folder = tmp_path_factory.mktemp("prometheus")
    spec = of_kind(render(), "PrometheusRule")[0]["spec"]
    rules = folder / "rules.yml"
    rules.write_text(yaml.safe_dump(spec, sort_keys=False))
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(one_stored_meeting.pipeline, rules)))
    port = free_port()
    process = spawn(
        [
            prometheus_path(),
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        folder / "prometheus.log",
    )
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await http.get(f"{url}/-/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                log = (folder / "prometheus.log").read_text()
                assert process.poll() is None, f"prometheus exited:\n{log}"
                assert time.monotonic() < deadline, f"prometheus not ready in 30 s:\n{log}"
                await asyncio.sleep(0.2)
            yield Prometheus(url, http)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def eventually_all(
    prometheus: Prometheus, queries: list[Query], timeout: float = 40.0
) -> dict[Query, list[Any]]:
    """Every query's result once all but the failure-only ones return data (a few scrapes and
    rule evaluations in), or as they stand at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        results = {q: await prometheus.run(q) for q in queries}
        empty = [q for q, r in results.items() if not r and q.expr not in FAILURES_ONLY]
        if not empty or time.monotonic() > deadline:
            return results
        await asyncio.sleep(1)


def describe(queries: list[Query]) -> str:
    return "\n".join(f"  {q.where}: {q.expr}" for q in queries)


async def test_every_dashboard_query_returns_data(
    prometheus: Prometheus, one_stored_meeting: Stored
) -> None:
    dashboard = json.loads((CHART / "dashboards" / "notetaker.json").read_text())
    # The org variable's own query (label_values of a cost metric) lists the stored meeting's
    # org, or `other` if it is outside the top N of a busy test database.
    (org_variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "org"]
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", org_variable["query"]).groups()  # type: ignore[union-attr]

    async def orgs() -> list[str] | None:
        found = await prometheus.api(f"label/{label}/values", **{"match[]": metric})
        return list(found) or None

    deadline = time.monotonic() + 40
    while not (listed := await orgs()):
        assert time.monotonic() < deadline, f"no {label} of {metric} scraped"
        await asyncio.sleep(1)
    own = str(one_stored_meeting.row["org_id"])
    one = own if own in listed else "other"
    assert one in listed

    all_orgs = org_variable["allValue"]
    queries = dashboard_queries(dashboard, all_orgs)
    queries += [q for q in dashboard_queries(dashboard, one) if "$org" in q.expr or one in q.expr]
    checked = [q for q in queries if not NOT_EXPORTED_HERE.search(q.expr)]
    assert {q.where for q in queries if q not in checked} == {"Consumer lag"}
    assert {q.expr for q in checked} >= FAILURES_ONLY, "FAILURES_ONLY names a query no panel has"
    assert len(checked) >= 20
    results = await eventually_all(prometheus, checked)

    empty = [q for q, r in results.items() if not r and q.expr not in FAILURES_ONLY]
    assert not empty, f"dashboard queries without data:\n{describe(empty)}"
    # The bars are today's cost by type: the stored recording's storage, at least.
    all_bars = 'org_id=~"' + all_orgs + '"'
    (bars,) = [q for q in checked if q.where == "Daily cost by type" and all_bars in q.expr]
    types = {series["metric"]["type"] for series in results[bars]}
    assert types == {"storage", "upload", "download", "requests"}


async def test_every_alert_expression_returns_data_and_evaluates(prometheus: Prometheus) -> None:
    spec = of_kind(render(), "PrometheusRule")[0]["spec"]
    alerts = {r["alert"]: r["expr"] for group in spec["groups"] for r in group["rules"]}
    queries = [
        Query(name, bare(expr), instant=True)
        for name, expr in alerts.items()
        if not NOT_EXPORTED_HERE.search(expr)
    ]
    assert set(alerts) - {q.where for q in queries} == {"NotetakerConsumerLagHigh"}
    assert len(queries) >= 10
    results = await eventually_all(prometheus, queries)
    empty = [q for q, r in results.items() if not r]
    assert not empty, f"alert expressions without data:\n{describe(empty)}"

    # Prometheus evaluates every rule it loaded without an error.
    groups = (await prometheus.api("rules"))["groups"]
    health = {r["name"]: (r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]}
    assert set(health) == set(alerts)
    assert {name: h for name, h in health.items() if h[0] != "ok"} == {}
