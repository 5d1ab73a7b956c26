"""`python -m notetaker.common.migrate`: apply the SQL migrations to NOTETAKER_DATABASE_URL."""

from __future__ import annotations

import asyncio

from notetaker.common.db import migrate
from notetaker.common.logs import configure_logging, get_logger
from notetaker.common.settings import NotetakerSettings


def main() -> None:
    settings = NotetakerSettings(service_name="migrate")
    configure_logging("migrate", settings.log_level, settings.log_format)
    applied = asyncio.run(migrate(settings.database_url))
    get_logger(__name__).info("migrations.done", applied=applied, newly_applied=len(applied))


if __name__ == "__main__":
    main()
