"""Running the five services as real processes against a stack, as the demo and e2e tests do."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from notetaker.devstack.children import spawn
from notetaker.devstack.stack import Stack, free_port, stop_process

SERVICES = ("ingest", "uploader", "transcript_sync", "metrics", "scheduler")


@dataclass
class ServiceProcess:
    name: str
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = spawn(
            [sys.executable, "-m", f"notetaker.{self.name}"], self.log_path, env=self.env
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for /readyz to answer 200; a service that is not ready by then is stopped."""
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}; log:\n{self.tail()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s; log:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        stop_process(self.process, sig, timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ServiceSet:
    """The services of one pipeline, sharing secrets so they can talk to each other."""

    stack: Stack
    logdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    per_service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in SERVICES}
        common = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/root"),
            "NOTETAKER_LOG_FORMAT": "json",
            "NOTETAKER_WEBHOOK_BASE_URL": f"http://127.0.0.1:{ports['ingest']}",
            "NOTETAKER_INGEST_PUBLIC_URL": f"http://127.0.0.1:{ports['ingest']}",
            **self.stack.env(),
            **self.extra_env,
        }
        for name in SERVICES:
            env = {
                **common,
                "NOTETAKER_HTTP_PORT": str(ports[name]),
                "NOTETAKER_FAUST_DATA_DIR": str(self.logdir / "faust-data"),
                **self.per_service_env.get(name, {}),
            }
            self.processes[name] = ServiceProcess(
                name, env, ports[name], self.logdir / f"{name}.log"
            )

    @property
    def ingest_url(self) -> str:
        return self.processes["ingest"].url

    async def start(self, timeout: float = 90.0) -> None:
        """Start every service and wait until each is ready; on any failure stop them all.

        The processes start from the caller's thread (see `children.spawn`), the waiting
        happens in a worker thread."""
        try:
            for process in self.processes.values():
                process.start()
            for process in self.processes.values():
                await asyncio.to_thread(process.wait_ready, timeout)
        except BaseException:
            await asyncio.to_thread(self.stop)
            raise

    def stop(self) -> None:
        """SIGTERM to all at once, then wait for each (killing what does not stop in time)."""
        for process in self.processes.values():
            if process.process is not None and process.process.poll() is None:
                process.process.send_signal(signal.SIGTERM)
        failures: list[str] = []
        for process in self.processes.values():
            try:
                process.stop()
            except Exception as exc:
                failures.append(f"{process.name}: {exc!r}")
        if failures:
            raise RuntimeError("could not stop all services: " + "; ".join(failures))
