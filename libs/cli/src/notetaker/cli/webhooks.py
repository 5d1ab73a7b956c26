"""`notetaker webhooks show BOT_ID`: every delivery ingest received for a bot, and its outcome.

Accepted deliveries are `webhook_deliveries` rows (published, ignored, or deleted: the bot's
media was deleted, so nothing was published); duplicates and refusals (401, 404, 422, 503, ...)
are `webhook_receipts` rows, kept 30 days. A delivery refused before ingest could tell which bot
it was about (no bot in its body) is in neither: look in ingest's log for its delivery id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import typer
from rich.table import Table
from rich.text import Text

from notetaker.cli.connections import checked_ref, connect, json_lines
from notetaker.cli.connections import show as show_table
from notetaker.cli.events import out, run
from notetaker.cli.settings import CliSettings
from notetaker.common.settings import load_settings

app = typer.Typer(
    help="Webhooks: whether a provider's delivery arrived, and what ingest did with it.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

OUTCOME_STYLES = {"published": "green", "duplicate": "dim", "ignored": "dim", "deleted": "yellow"}


@dataclass(frozen=True)
class Delivery:
    received_at: datetime
    provider: str
    event_type: str | None
    delivery_id: str | None
    status: int
    outcome: str

    def as_json(self) -> dict[str, Any]:
        return {
            "received_at": self.received_at.astimezone(UTC).isoformat(),
            "provider": self.provider,
            "event_type": self.event_type,
            "delivery_id": self.delivery_id,
            "status": self.status,
            "outcome": self.outcome,
        }

    def cells(self) -> tuple[str, str, str, str, Text]:
        style = "bold red" if self.outcome.startswith("refused") else ""
        return (
            f"{self.received_at.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}"[:-3] + "Z",
            self.provider,
            self.event_type or "-",
            self.delivery_id or "-",
            Text(
                f"{self.outcome} ({self.status})",
                style=OUTCOME_STYLES.get(self.outcome, style),
            ),
        )


async def deliveries_of(pool: asyncpg.Pool, bot_id: str) -> list[Delivery]:
    """Every delivery for the bot, oldest first. A final fact is kept under two ids (the
    delivery's and `fact:<event>:<bot>`, which catches the same fact resent under a new id); only
    the delivery's is shown."""
    rows = await pool.fetch(
        "SELECT received_at, provider, event_type, delivery_id, 200 AS status,"
        " coalesce(outcome, 'accepted') AS outcome"
        " FROM webhook_deliveries WHERE bot_id = $1 AND delivery_id NOT LIKE 'fact:%'"
        " UNION ALL"
        " SELECT received_at, provider, event_type, delivery_id, status, outcome"
        " FROM webhook_receipts WHERE bot_id = $1"
        " ORDER BY received_at",
        bot_id,
    )
    return [Delivery(**dict(r)) for r in rows]


def print_deliveries(deliveries: list[Delivery], title: str) -> None:
    """The deliveries as a table, oldest first (`webhooks show`, `recordings show`)."""
    table = Table(title=title, title_justify="left")
    for column in ("Received", "Provider", "Event", "Delivery", "Outcome"):
        table.add_column(column, overflow="fold")
    for delivery in deliveries:
        table.add_row(*delivery.cells())
    show_table(table)


async def show(settings: CliSettings, bot_id: str) -> list[Delivery]:
    async with connect(settings) as c:
        return await deliveries_of(c.pool, bot_id)


@app.command("show")
def show_command(
    bot_id: Annotated[str, typer.Argument(metavar="BOT_ID", help="The bot's id.")],
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per delivery and line.")
    ] = False,
) -> None:
    """Every delivery received for BOT_ID, oldest first: when, from which provider, which event,
    its delivery id, and what ingest did (published, ignored, deleted, duplicate, or refused
    with the reason and status)."""
    checked_ref(bot_id)
    config = load_settings(CliSettings)
    found = run(show(config, bot_id))
    if json_output:
        json_lines(d.as_json() for d in found)
        return
    print_deliveries(found, f"Webhooks for bot {bot_id}: {len(found)}")
    if not found:
        out.print(
            "Nothing received for this bot. Check the provider's webhook settings and ingest's"
            " log (a delivery refused before its bot could be read is only there).",
            style="yellow",
        )
