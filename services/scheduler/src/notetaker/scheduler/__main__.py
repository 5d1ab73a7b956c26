"""`python -m notetaker.scheduler`: deploy bots and drive retries on a clock."""

from __future__ import annotations

from functools import partial

from notetaker.common.logs import configure_logging
from notetaker.common.runtime import run_service
from notetaker.common.settings import load_settings
from notetaker.scheduler.app import run
from notetaker.scheduler.settings import SchedulerSettings


def main() -> None:
    settings = load_settings(SchedulerSettings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    run_service(partial(run, settings))


if __name__ == "__main__":
    main()
