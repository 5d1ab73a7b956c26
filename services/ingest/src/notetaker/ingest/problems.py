"""Errors as RFC 9457 problem details, each counted by reason."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from prometheus_client import Counter

REJECTED = Counter(
    "notetaker_ingest_webhooks_rejected_total",
    "Webhook deliveries refused, by provider and reason.",
    ["provider", "reason"],
)


class Problem(Exception):
    def __init__(self, status: int, reason: str, title: str, detail: str = "") -> None:
        super().__init__(title)
        self.status = status
        self.reason = reason
        self.title = title
        self.detail = detail

    def response(self, instance: str) -> JSONResponse:
        body = {
            "type": f"urn:notetaker:problem:{self.reason}",
            "title": self.title,
            "status": self.status,
            "instance": instance,
        }
        if self.detail:
            body["detail"] = self.detail
        return JSONResponse(body, status_code=self.status, media_type="application/problem+json")
