"""`python -m notetaker.uploader`: copy recordings into S3 and make their thumbnails."""

from __future__ import annotations

from functools import partial

from notetaker.common.logs import configure_logging
from notetaker.common.runtime import run_service
from notetaker.common.settings import load_settings
from notetaker.uploader.app import run
from notetaker.uploader.settings import UploaderSettings


def main() -> None:
    settings = load_settings(UploaderSettings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    run_service(partial(run, settings))


if __name__ == "__main__":
    main()
