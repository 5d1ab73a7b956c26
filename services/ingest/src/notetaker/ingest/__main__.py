"""`python -m notetaker.ingest`: serve the webhook endpoints."""

from __future__ import annotations

import uvicorn

from notetaker.common.logs import configure_logging
from notetaker.common.settings import load_settings
from notetaker.ingest.app import create_app
from notetaker.ingest.settings import IngestSettings


def main() -> None:
    settings = load_settings(IngestSettings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host="0.0.0.0",
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
