"""The `notetaker` command: one tool for operators, one sub-command group per concern.

Every command reads where Kafka, PostgreSQL and S3 are from the same `NOTETAKER_*` settings the
services use (`notetaker.common.settings.NotetakerSettings`), and nothing else.
"""

from __future__ import annotations

import typer

from notetaker.cli import (
    costs,
    dead_letters,
    events,
    meetings,
    recordings,
    retention,
    thumbnails,
    webhooks,
)
from notetaker.common.logs import configure_logging

app = typer.Typer(
    name="notetaker",
    help=(
        "Operate the Notetaker storage pipeline.\n\n"
        "Connection settings come from the `NOTETAKER_*` environment variables (or a .env file), "
        "the same ones the services read, e.g. `NOTETAKER_KAFKA_BOOTSTRAP_SERVERS`."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(recordings.app, name="recordings")
app.add_typer(thumbnails.app, name="thumbnails")
app.add_typer(costs.app, name="costs")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(events.app, name="events")
app.add_typer(dead_letters.app, name="dead-letters")
app.add_typer(
    dead_letters.app,
    name="dlq",
    help="Short for `dead-letters`: list and replay the events a consumer gave up on.",
)
app.add_typer(meetings.app, name="meetings")
app.add_typer(retention.app, name="retention")


def main() -> None:
    """Console-script entry point (`notetaker`). Logs go to stderr, warnings and worse only
    (NOTETAKER_LOG_LEVEL=DEBUG shows everything): stdout is the command's output."""
    configure_logging("notetaker-cli", "WARNING", "console")
    app()


if __name__ == "__main__":
    main()
