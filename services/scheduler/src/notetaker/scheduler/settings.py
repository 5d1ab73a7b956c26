"""Scheduler settings: how often it looks, how it reaches MeetingBaaS, how it backs off."""

from __future__ import annotations

from pydantic import Field, PositiveFloat

from notetaker.common.settings import NotetakerSettings, Secret, Secrets


class SchedulerSettings(NotetakerSettings):
    service_name: str = Field("scheduler", description="Name used in logs and CloudEvent source.")
    http_port: int = Field(8004, description="Port of /healthz, /readyz and /metrics.")
    scheduler_interval_seconds: float = Field(30.0, description="Time between two rounds of jobs.")
    bot_join_lead_seconds: int = Field(
        120, description="Deploy a bot this long before its meeting starts."
    )
    bot_name: str = Field("60 Notetaker", description="Name the bot shows in the meeting.")
    bot_transcription: bool = Field(
        True, description="Ask MeetingBaaS for its transcript (false: transcribe with Gladia)."
    )
    meetingbaas_api_url: str = Field(
        "https://api.meetingbaas.com", description="MeetingBaaS API base URL."
    )
    meetingbaas_api_key: Secret | None = Field(None, description="MeetingBaaS API key.")
    meetingbaas_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest a MeetingBaaS request may take, in all."
    )
    bot_deploy_retry_delays_seconds: list[PositiveFloat] = Field(
        [30, 60, 120, 300],
        min_length=1,
        description="Wait before each new try of a failed bot deploy (JSON; the last repeats).",
    )
    meetingbaas_callback_keys: Secrets = Field(
        default_factory=list,
        description="Keys deriving each bot's callback secret (1st signs; shared with ingest).",
    )
    gladia_api_url: str = Field("https://api.gladia.io", description="Gladia API base URL.")
    gladia_api_key: Secret | None = Field(
        None, description="Gladia API key; empty turns polling of overdue jobs off."
    )
    gladia_poll_after_seconds: float = Field(
        600.0, description="A job's callback is overdue this long after the job was asked for."
    )
    gladia_poll_every_seconds: float = Field(
        60.0, description="Time between two polls of the same overdue job."
    )
    webhook_body_retention_days: int = Field(
        30, ge=1, description="How long ingest's kept raw webhook bodies are kept, in days."
    )
    webhook_base_url: str = Field(
        "http://127.0.0.1:8000", description="Public base URL of ingest (the bots' callback URL)."
    )
