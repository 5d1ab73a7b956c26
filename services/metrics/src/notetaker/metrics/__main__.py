"""`python -m notetaker.metrics`: storage usage and cost, for Prometheus."""

from __future__ import annotations

from functools import partial

from notetaker.common.logs import configure_logging
from notetaker.common.runtime import run_service
from notetaker.common.settings import load_settings
from notetaker.metrics.app import run
from notetaker.metrics.settings import MetricsSettings


def main() -> None:
    settings = load_settings(MetricsSettings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    run_service(partial(run, settings))


if __name__ == "__main__":
    main()
