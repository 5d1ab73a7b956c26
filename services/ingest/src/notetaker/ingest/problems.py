"""Errors as RFC 9457 problem details, each counted by reason."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel

REJECTED = Counter(
    "notetaker_ingest_webhooks_rejected_total",
    "Webhook deliveries refused, by provider and reason.",
    ["provider", "reason"],
)

PROBLEM_JSON = "application/problem+json"


class ProblemBody(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    instance: str
    detail: str | None = None


class Problem(Exception):
    def __init__(self, status: int, reason: str, title: str, detail: str = "") -> None:
        super().__init__(title)
        self.status = status
        self.reason = reason
        self.title = title
        self.detail = detail

    def response(self, instance: str) -> JSONResponse:
        body = ProblemBody(
            type=f"urn:notetaker:problem:{self.reason}",
            title=self.title,
            status=self.status,
            instance=instance,
            detail=self.detail or None,
        )
        return JSONResponse(
            body.model_dump(exclude_none=True), status_code=self.status, media_type=PROBLEM_JSON
        )


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problems an endpoint can answer."""
    meaning = {
        400: "Body is not valid JSON",
        401: "Authentication failed (the reason is logged, not returned)",
        404: "The bot is not one of ours",
        413: "Body larger than the configured limit",
        415: "Body is not application/json",
        422: "Payload or parameters do not match the provider's format",
        503: "Kafka or the database is unavailable: retry later",
    }
    schema = ProblemBody.model_json_schema()
    return {
        status: {"description": meaning[status], "content": {PROBLEM_JSON: {"schema": schema}}}
        for status in statuses
    }
