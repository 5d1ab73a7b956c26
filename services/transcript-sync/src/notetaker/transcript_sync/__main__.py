"""`python -m notetaker.transcript_sync`: run the Faust join worker."""

from __future__ import annotations

import logging

import faust

from notetaker.common.logs import configure_logging
from notetaker.common.settings import load_settings
from notetaker.transcript_sync.app import create_app
from notetaker.transcript_sync.settings import TranscriptSyncSettings


def main() -> None:
    settings = load_settings(TranscriptSyncSettings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    app = create_app(settings)
    worker = faust.Worker(
        app,
        loglevel=logging.getLevelName(logging.getLogger().level),
        override_logging=False,  # keep our structured logs
        redirect_stdouts=False,
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
