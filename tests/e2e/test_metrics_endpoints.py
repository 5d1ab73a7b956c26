"""Every service's /metrics, as Prometheus scrapes it: HTTP 200 and valid exposition that
`promtool check metrics` accepts (a scrape that fails marks the service down and fires
NotetakerServiceDown)."""

from __future__ import annotations

import asyncio
import subprocess

import httpx
import pytest

from notetaker.devstack.pipeline import Pipeline
from notetaker.devstack.services import SERVICES
from tests.conftest import promtool_path


@pytest.mark.parametrize("service", SERVICES)
async def test_metrics_scrape_answers_200_and_passes_promtool(
    after_one_meeting: Pipeline, service: str
) -> None:
    url = f"{after_one_meeting.services.processes[service].url}/metrics"
    async with httpx.AsyncClient() as http:
        response = await http.get(url, headers={"accept": "text/plain"})
    assert response.status_code == 200, f"{service} /metrics: {response.status_code}"
    assert response.headers["content-type"].startswith("text/plain")
    assert "notetaker_" in response.text
    check = await asyncio.to_thread(
        subprocess.run,
        [promtool_path(), "check", "metrics"],
        input=response.content,
        capture_output=True,
        timeout=30,
        check=False,
    )
    problems = (check.stdout + check.stderr).decode()
    assert check.returncode == 0, f"promtool check metrics on {service}:\n{problems}"
