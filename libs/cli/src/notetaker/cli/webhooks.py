"""`notetaker webhooks show BOT_ID`: every delivery ingest received for a bot, and its outcome.

Accepted deliveries are `webhook_deliveries` rows (published, ignored, or deleted: the bot's
media was deleted, so nothing was published); duplicates and refusals (401, 404, 422, 503, ...)
are `webhook_receipts` rows, kept 30 days. A delivery refused before ingest could tell which bot
it was about (no bot in its body) is in neither: look in ingest's log for its delivery id.

An accepted delivery's raw body is kept (`webhook_bodies`, sealed with NOTETAKER_SOURCE_URL_KEYS)
for NOTETAKER_WEBHOOK_BODY_RETENTION_DAYS (30), and deleted with the bot's media:
`webhooks show BOT_ID --body DELIVERY_ID` prints it as received, and `webhooks reapply
DELIVERY_ID` runs it through ingest's parse, map and publish again (`notetaker.ingest.reapply`:
always publishes, marked as a replay, recorded as a delivery `reapply:...`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import asyncpg
import typer
from pydantic import SecretStr
from rich.table import Table
from rich.text import Text

from notetaker.cli.connections import checked_ref, connect, json_lines
from notetaker.cli.connections import show as show_table
from notetaker.cli.dead_letters import operator
from notetaker.cli.events import Stop, out, run
from notetaker.cli.settings import CliSettings
from notetaker.common.logs import get_logger
from notetaker.common.sealing import SourceUrlCipher
from notetaker.common.settings import load_settings

if TYPE_CHECKING:
    from notetaker.ingest.reapply import Reapplied

log = get_logger(__name__)

app = typer.Typer(
    help="Webhooks: whether a provider's delivery arrived, and what ingest did with it.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

OUTCOME_STYLES = {
    "published": "green",
    "duplicate": "dim",
    "ignored": "dim",
    "deleted": "yellow",
    "reapplied": "cyan",
}


@dataclass(frozen=True)
class Delivery:
    received_at: datetime
    provider: str
    event_type: str | None
    delivery_id: str | None
    status: int
    outcome: str
    body_kept: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "received_at": self.received_at.astimezone(UTC).isoformat(),
            "provider": self.provider,
            "event_type": self.event_type,
            "delivery_id": self.delivery_id,
            "status": self.status,
            "outcome": self.outcome,
            "body_kept": self.body_kept,
        }

    def cells(self) -> tuple[str, str, str, str, Text, str]:
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
            "kept" if self.body_kept else "-",
        )


async def deliveries_of(pool: asyncpg.Pool, bot_id: str) -> list[Delivery]:
    """Every delivery for the bot, oldest first. A final fact is kept under two ids (the
    delivery's and `fact:<event>:<bot>`, which catches the same fact resent under a new id); only
    the delivery's is shown."""
    rows = await pool.fetch(
        "SELECT d.received_at, d.provider, d.event_type, d.delivery_id, 200 AS status,"
        " coalesce(d.outcome, 'accepted') AS outcome, b.provider IS NOT NULL AS body_kept"
        " FROM webhook_deliveries d LEFT JOIN webhook_bodies b USING (provider, delivery_id)"
        " WHERE d.bot_id = $1 AND d.delivery_id NOT LIKE 'fact:%'"
        " UNION ALL"
        " SELECT received_at, provider, event_type, delivery_id, status, outcome, false"
        " FROM webhook_receipts WHERE bot_id = $1"
        " ORDER BY received_at",
        bot_id,
    )
    return [Delivery(**dict(r)) for r in rows]


def print_deliveries(deliveries: list[Delivery], title: str) -> None:
    """The deliveries as a table, oldest first (`webhooks show`, `recordings show`)."""
    table = Table(title=title, title_justify="left")
    for column in ("Received", "Provider", "Event", "Delivery", "Outcome", "Body"):
        table.add_column(column, overflow="fold")
    for delivery in deliveries:
        table.add_row(*delivery.cells())
    show_table(table)


async def show(settings: CliSettings, bot_id: str) -> list[Delivery]:
    async with connect(settings) as c:
        return await deliveries_of(c.pool, bot_id)


def cipher_of(settings: CliSettings) -> SourceUrlCipher:
    keys: list[SecretStr] = settings.source_url_keys
    if not keys:
        raise Stop(
            "NOTETAKER_SOURCE_URL_KEYS is not set: the kept webhook bodies are sealed with"
            " ingest's key ring, give the same keys"
        )
    return SourceUrlCipher(keys)


async def kept_body(
    settings: CliSettings, bot_id: str, delivery_id: str, provider: str | None
) -> bytes:
    # ingest's code (FastAPI with it) is imported by the commands that need it only.
    from notetaker.ingest.reapply import NotReapplied, kept_delivery

    cipher = cipher_of(settings)
    async with connect(settings) as c:
        try:
            delivery = await kept_delivery(
                c.pool, cipher, delivery_id, provider=provider, bot_id=bot_id
            )
        except (NotReapplied, ValueError) as exc:
            raise Stop(str(exc)) from exc
    return delivery.body


def print_body(body: bytes, raw: bool) -> None:
    """The body as received: pretty JSON when it parses (unless `raw`), else its exact bytes."""
    if not raw:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            pass
        else:
            sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            return
    sys.stdout.buffer.write(body)
    sys.stdout.buffer.flush()


@app.command("show")
def show_command(
    bot_id: Annotated[str, typer.Argument(metavar="BOT_ID", help="The bot's id.")],
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per delivery and line.")
    ] = False,
    body_of: Annotated[
        str | None,
        typer.Option(
            "--body",
            metavar="DELIVERY_ID",
            help="Print this delivery's body as received instead (pretty JSON when it parses).",
        ),
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="With --body: the exact bytes received, unformatted.")
    ] = False,
    provider: Annotated[
        str | None,
        typer.Option(help="With --body: the provider, when two share the delivery id."),
    ] = None,
) -> None:
    """Every delivery received for BOT_ID, oldest first: when, from which provider, which event,
    its delivery id, what ingest did (published, ignored, deleted, duplicate, reapplied, or
    refused with the reason and status) and whether its body is kept. With `--body DELIVERY_ID`:
    that delivery's body as received (kept NOTETAKER_WEBHOOK_BODY_RETENTION_DAYS, deleted with the
    bot's media)."""
    checked_ref(bot_id)
    config = load_settings(CliSettings)
    if body_of is not None:
        checked_ref(body_of)
        print_body(run(kept_body(config, bot_id, body_of, provider)), raw)
        return
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


async def reapply_kept(
    settings: CliSettings, delivery_id: str, provider: str | None, by: str
) -> Reapplied:
    from notetaker.ingest.reapply import NotReapplied, kept_delivery, reapply

    cipher = cipher_of(settings)
    async with connect(settings, kafka=True) as c:
        try:
            delivery = await kept_delivery(c.pool, cipher, delivery_id, provider=provider)
            done = await reapply(c.pool, c.need_publisher(), delivery)
        except (NotReapplied, ValueError) as exc:
            raise Stop(str(exc)) from exc
    # The audit line: who re-applied which delivery, and what it published.
    log.warning(
        "webhook.reapplied",
        by=by,
        provider=done.delivery.provider,
        delivery_id=done.delivery.delivery_id,
        reapply_id=done.reapply_id,
        bot_id=done.delivery.bot_id,
        event_type=done.delivery.event_type,
        events=[e.type for e in done.events],
    )
    return done


@app.command("reapply")
def reapply_command(
    delivery_id: Annotated[
        str, typer.Argument(metavar="DELIVERY_ID", help="An accepted delivery (webhooks show).")
    ],
    provider: Annotated[
        str | None, typer.Option(help="The provider, when two share the delivery id.")
    ] = None,
    by: Annotated[str | None, typer.Option(help="Who re-applies it (default: user@host).")] = None,
) -> None:
    """Re-apply an accepted delivery from its kept body: ingest's parse, map and publish run
    again on the body as received (no signature or timestamp check: it was authenticated when
    accepted), with the delivery's original receipt time. It always publishes, each event marked
    `notetaker_replayed_from: webhook:<provider>:<delivery id>` (same event ids when the mapping is
    unchanged: the consumers apply them idempotently), and is recorded as a delivery
    `reapply:<delivery id>:<n>` with outcome `reapplied`. Refused for a bot whose media was
    deleted, and when the body is no longer kept."""
    checked_ref(delivery_id)
    config = load_settings(CliSettings)
    done = run(reapply_kept(config, delivery_id, provider, by or operator()))
    events = ", ".join(e.type for e in done.events) or "none (the body maps to no event)"
    out.print(
        f"Re-applied {done.delivery.provider} delivery {done.delivery.delivery_id}"
        f" (bot {done.delivery.bot_id or '-'}, {done.delivery.event_type}) as"
        f" {done.reapply_id}; published: {events}"
    )
