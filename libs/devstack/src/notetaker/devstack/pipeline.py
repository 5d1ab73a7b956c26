"""The whole pipeline on a stack: the five services and the provider simulator, wired with
fresh secrets. The demo, the end-to-end tests and the benchmarks all start it this way."""

from __future__ import annotations

import asyncio
import base64
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notetaker.devstack.media import Recording
from notetaker.devstack.services import ServiceSet
from notetaker.devstack.simulator import ProviderSimulator, SimulatorConfig
from notetaker.devstack.stack import Stack, free_port


def pipeline_secrets() -> dict[str, str]:
    return {
        "svix": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "api_key": secrets.token_urlsafe(24),
        "gladia_key": secrets.token_urlsafe(24),
        "callback_key": secrets.token_urlsafe(24),
        "meetingbaas_callback_key": secrets.token_urlsafe(24),
        "media_key": secrets.token_urlsafe(32),
        "admin_token": secrets.token_urlsafe(24),
    }


def service_env(simulator_url: str, keys: dict[str, str]) -> dict[str, str]:
    """Settings that wire the services to the simulator and to each other."""
    return {
        "NOTETAKER_MEETINGBAAS_WEBHOOK_SECRETS": keys["svix"],
        "NOTETAKER_MEETINGBAAS_API_KEY": keys["api_key"],
        "NOTETAKER_MEETINGBAAS_API_KEYS": keys["api_key"],
        "NOTETAKER_MEETINGBAAS_API_URL": simulator_url,
        "NOTETAKER_MEETINGBAAS_CALLBACK_KEYS": keys["meetingbaas_callback_key"],
        "NOTETAKER_GLADIA_API_URL": simulator_url,
        "NOTETAKER_GLADIA_API_KEY": keys["gladia_key"],
        "NOTETAKER_GLADIA_CALLBACK_KEYS": keys["callback_key"],
        "NOTETAKER_MEDIA_TOKEN_KEYS": keys["media_key"],
        "NOTETAKER_ADMIN_TOKENS": keys["admin_token"],
        "NOTETAKER_SCHEDULER_INTERVAL_SECONDS": "1",
        "NOTETAKER_METRICS_REFRESH_SECONDS": "1",
    }


@dataclass
class Pipeline:
    stack: Stack
    services: ServiceSet
    simulator: ProviderSimulator
    keys: dict[str, str]

    @property
    def ingest_url(self) -> str:
        return self.services.ingest_url

    async def stop(self) -> None:
        await asyncio.to_thread(self.services.stop)
        await self.simulator.stop()


async def start_pipeline(
    stack: Stack,
    logdir: Path,
    *,
    per_service_env: dict[str, dict[str, str]] | None = None,
    recording: Recording | None = None,
    **simulator_options: Any,
) -> Pipeline:
    """Start the simulator, then the services (ready when this returns)."""
    keys = pipeline_secrets()
    port = free_port()
    services = ServiceSet(
        stack,
        logdir,
        extra_env=service_env(f"http://127.0.0.1:{port}", keys),
        per_service_env=per_service_env or {},
    )
    simulator = ProviderSimulator(
        SimulatorConfig(
            ingest_url=services.ingest_url,
            svix_secret=keys["svix"],
            api_key=keys["api_key"],
            gladia_api_key=keys["gladia_key"],
            port=port,
            **simulator_options,
        ),
        recording=recording,
    )
    await simulator.start()
    try:
        await services.start()
    except BaseException:
        await simulator.stop()
        raise
    return Pipeline(stack, services, simulator, keys)
