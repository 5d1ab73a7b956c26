"""Writes to `meetings`: only the media columns, only on notetaker rows, only when they change,
never once the meeting's media was deleted (`media_deleted_at`: `MeetingMediaDeleted`).

Every write is keyed by bot_id and sets absolute values, so repeating it changes nothing; the
`IS DISTINCT FROM` guards keep a repeat from even touching `updated_at`. Fathom rows are never
matched (`source = 'notetaker'`). A write that changes the row puts its `meeting.synced` into the
outbox in the same transaction (`outbox.py`): the change and its announcement are one fact.

`join_state` reads back what the join needs to decide an event for a meeting whose join state
was deleted once it was complete (`join.py`).

Transcription jobs: the bot's `transcription_jobs` row is the intent, written in the same
transaction as the video it is owed for (`write_video`), so rows holding a video always say
whether a transcript is awaited; it is written once per bot (a recording). `start_transcription_job`
marks a submit as tried before the provider is asked, and the provider's job id goes in once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from notetaker.common.events import MeetingSynced, Utterance
from notetaker.common.failures import Permanent
from notetaker.common.s3 import parse_s3_location
from notetaker.transcript_sync import outbox
from notetaker.transcript_sync.join import JoinState, MeetingDetails


class MeetingMediaDeleted(Permanent):
    """The meeting's media was deleted (`media_deleted_at`): nothing is written for it again.
    Not an error of the event: the join drops it (see `app.py`), it is never dead-lettered."""


class MeetingNotFound(Permanent):
    """No notetaker meeting has this bot: the scheduler links a bot to its meeting before the bot
    exists, so an event about a bot without one (a Fathom bot, a bot we never deployed) can never
    be applied."""


@dataclass(frozen=True)
class MeetingMedia:
    id: uuid.UUID
    org_id: uuid.UUID
    has_video: bool
    has_transcript: bool
    has_thumbnail: bool
    changed: bool


_RETURNING = """RETURNING id, org_id, video_url IS NOT NULL AS has_video,
    transcript_text IS NOT NULL AS has_transcript, thumbnail_url IS NOT NULL AS has_thumbnail"""


@dataclass(frozen=True)
class JobIntent:
    """A transcription job owed for a video: written with it (`write_video`)."""

    provider: str
    request_id: uuid.UUID
    token_expires_at: datetime


async def _update(
    pool: asyncpg.Pool,
    source: str,
    bot_id: str,
    assignments: str,
    *args: Any,
    intent: JobIntent | None = None,
) -> MeetingMedia:
    """Apply `assignments` ($2.. are args) if any value differs, with its `meeting.synced` in the
    outbox (`source`: the CloudEvent source); report the row either way. `intent`: the bot's
    transcription job row is written in the same transaction (kept if it has one)."""
    columns = [part.split("=")[0].strip() for part in assignments.split(",")]
    differs = " OR ".join(f"{c} IS DISTINCT FROM ${i + 2}" for i, c in enumerate(columns))
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"UPDATE meetings SET {assignments}, updated_at = now()"  # noqa: S608 - fixed columns
            f" WHERE bot_id = $1 AND source = 'notetaker' AND media_deleted_at IS NULL"
            f" AND ({differs}) {_RETURNING}",
            bot_id,
            *args,
        )
        changed = row is not None
        if row is None:
            row = await conn.fetchrow(
                "SELECT id, org_id, video_url IS NOT NULL AS has_video,"
                " transcript_text IS NOT NULL AS has_transcript,"
                " thumbnail_url IS NOT NULL AS has_thumbnail,"
                " media_deleted_at IS NOT NULL AS deleted"
                " FROM meetings WHERE bot_id = $1 AND source = 'notetaker'",
                bot_id,
            )
            if row is not None and row["deleted"]:
                raise MeetingMediaDeleted(f"the media of bot {bot_id}'s meeting was deleted")
        if row is None:
            raise MeetingNotFound(f"no notetaker meeting row for bot {bot_id}")
        if intent is not None:
            await _write_intent(conn, bot_id, intent)
        media = MeetingMedia(
            id=row["id"],
            org_id=row["org_id"],
            has_video=row["has_video"],
            has_transcript=row["has_transcript"],
            has_thumbnail=row["has_thumbnail"],
            changed=changed,
        )
        if changed:
            synced = MeetingSynced(
                bot_id=bot_id,
                meeting_id=media.id,
                org_id=media.org_id,
                has_video=media.has_video,
                has_transcript=media.has_transcript,
                has_thumbnail=media.has_thumbnail,
            )
            await outbox.add(conn, synced, source)
    return media


async def write_video(
    pool: asyncpg.Pool,
    source: str,
    bot_id: str,
    video_url: str | None,
    audio_url: str | None,
    *,
    transcription: JobIntent | None = None,
    details: MeetingDetails | None = None,
) -> MeetingMedia:
    """The video and audio (an audio-only recording: no video); `transcription`: a transcript
    is owed for them, its job's intent written in the same transaction; `details`: what the
    provider said about the meeting (a field it did not give keeps what the row has)."""
    assignments, args = _with_given(
        ["video_url", "audio_url", "recording_status"],
        [video_url, audio_url, "available"],
        {
            "duration_seconds": details.duration_seconds if details else None,
            "participants": details.participants if details else None,
            "speakers": details.speakers if details else None,
        },
    )
    return await _update(pool, source, bot_id, assignments, *args, intent=transcription)


def _with_given(
    columns: list[str], values: list[Any], optional: dict[str, Any]
) -> tuple[str, list[Any]]:
    """`column = $n` assignments ($2 on) of `columns`, then of each optional column given."""
    given = [(c, v) for c, v in optional.items() if v is not None]
    names = columns + [c for c, _ in given]
    assignments = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(names))
    return assignments, values + [v for _, v in given]


async def write_transcript(
    pool: asyncpg.Pool,
    source: str,
    bot_id: str,
    provider: str,
    utterances: list[Utterance],
    ref: str,
    *,
    language: str | None = None,
    summary: str | None = None,
) -> MeetingMedia:
    """The transcript's text and utterances, with which transcript it is (`ref`, the join's
    `transcript_id`), and its language and summary when its provider gave them."""
    text = "\n".join(f"{u.speaker}: {u.text}" if u.speaker else u.text for u in utterances)
    assignments, args = _with_given(
        ["transcript_text", "transcript_json", "transcript_provider", "transcript_ref"],
        [text, [u.model_dump() for u in utterances], provider, ref],
        {"language": language, "summary": summary},
    )
    return await _update(pool, source, bot_id, assignments, *args)


async def write_thumbnail(
    pool: asyncpg.Pool, source: str, bot_id: str, thumbnail_url: str
) -> MeetingMedia:
    return await _update(pool, source, bot_id, "thumbnail_url = $2", thumbnail_url)


FAILED = "failed: "  # how `mark_failed` starts the status


async def mark_failed(pool: asyncpg.Pool, source: str, bot_id: str, error: str) -> MeetingMedia:
    return await _update(pool, source, bot_id, "recording_status = $2", f"{FAILED}{error}"[:1000])


async def media_deleted(pool: asyncpg.Pool, bot_id: str) -> bool:
    """Whether the bot's meeting (or its recording) had its media deleted: then no event about
    it changes anything any more."""
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM meetings WHERE bot_id = $1 AND source = 'notetaker'"
            " AND media_deleted_at IS NOT NULL) OR EXISTS (SELECT 1 FROM recordings"
            " WHERE bot_id = $1 AND media_deleted_at IS NOT NULL)",
            bot_id,
        )
    )


async def keep_transcript_ref(pool: asyncpg.Pool, bot_id: str, ref: str) -> None:
    """Name the transcript of a row written before `transcript_ref` existed (`ref`: the join
    state's `transcript_id`, the transcript it wrote), before that state is deleted. Not a change
    of the meeting's media: `updated_at` stays, nothing is announced."""
    await pool.execute(
        "UPDATE meetings SET transcript_ref = $2 WHERE bot_id = $1 AND source = 'notetaker'"
        " AND transcript_ref IS NULL AND transcript_text IS NOT NULL",
        bot_id,
        ref,
    )


async def join_state(pool: asyncpg.Pool, bot_id: str) -> JoinState:
    """The join state the rows say the bot's meeting is in: the media written, the failure
    marked, the transcript written (which one: `transcript_ref`; a row from before that column
    counts as a transcript no event matches), whether one is awaited (the provider has one, or a
    Gladia job was asked for). A bot without a notetaker meeting has the empty state."""
    row = await pool.fetchrow(
        "SELECT m.org_id, m.video_url, m.audio_url, m.thumbnail_url, m.recording_status,"
        " m.transcript_provider, m.transcript_ref, m.transcript_text IS NOT NULL AS transcribed,"
        " r.id AS recording_id, coalesce(r.provider_transcript, false) AS provider_transcript,"
        " EXISTS (SELECT 1 FROM transcription_jobs j WHERE j.bot_id = m.bot_id) AS requested"
        " FROM meetings m LEFT JOIN recordings r ON r.bot_id = m.bot_id"
        " WHERE m.bot_id = $1 AND m.source = 'notetaker'",
        bot_id,
    )
    if row is None:
        return JoinState()
    bucket = video_key = audio_key = thumbnail_key = None
    if row["video_url"] is not None:
        bucket, video_key = parse_s3_location(row["video_url"])
    if row["audio_url"] is not None:
        audio_bucket, audio_key = parse_s3_location(row["audio_url"])
        bucket = bucket or audio_bucket
    if row["thumbnail_url"] is not None:
        thumbnail_key = parse_s3_location(row["thumbnail_url"])[1]
    status = row["recording_status"] or ""
    transcript = row["transcript_ref"]
    if transcript is None and row["transcribed"]:
        transcript = f"{row['transcript_provider']}:"  # which one is not known: none matches
    return JoinState(
        bucket=bucket,
        recording_id=row["recording_id"],
        org_id=row["org_id"],
        video_key=video_key,
        audio_key=audio_key,
        transcript_id=transcript,
        thumbnail_key=thumbnail_key,
        failure=status.removeprefix(FAILED) if status.startswith(FAILED) else None,
        gladia_requested=row["requested"],
        awaiting_transcript=row["provider_transcript"] or row["requested"],
    )


@dataclass(frozen=True)
class TranscriptionJob:
    """The bot's `transcription_jobs` row: what we asked for, and what the provider answered."""

    request_id: uuid.UUID
    job_id: str | None
    token_expires_at: datetime | None


async def _write_intent(conn: asyncpg.Connection, bot_id: str, intent: JobIntent) -> None:
    await conn.execute(
        "INSERT INTO transcription_jobs (request_id, bot_id, provider, token_expires_at)"
        " SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM recordings"
        " WHERE bot_id = $2 AND media_deleted_at IS NOT NULL)"
        " ON CONFLICT (bot_id) DO NOTHING",
        intent.request_id,
        bot_id,
        intent.provider,
        intent.token_expires_at,
    )


@dataclass(frozen=True)
class SubmitStart:
    """What `start_transcription_job` found: the row, whether a submit was tried before (its job
    may exist already), and whether the last one is unanswered and younger than the settle time
    (Gladia may still be creating its job)."""

    job: TranscriptionJob
    tried: bool
    unsettled: bool


async def start_transcription_job(
    pool: asyncpg.Pool, bot_id: str, intent: JobIntent, settle_seconds: float = 0.0
) -> SubmitStart:
    """Before the job is submitted: the bot's job row (written as `intent` if the video's write
    did not write one: a row from before intents), marked as tried and its callback token renewed
    to `intent.token_expires_at` unless the provider's job id is known. From now on a callback
    naming its request id is one we asked for (ingest refuses the others), and an overdue job can
    be polled once its provider id is known. The submit counts as unanswered until
    `record_transcription_job` or `answered_without_job` says otherwise. A recording whose media
    was deleted gets none: `MeetingMediaDeleted`."""
    async with pool.acquire() as conn, conn.transaction():
        await _write_intent(conn, bot_id, intent)
        row = await conn.fetchrow(
            "SELECT j.request_id, j.job_id, j.token_expires_at,"
            " j.submitted_at IS NOT NULL AS tried,"
            " coalesce(j.unanswered_at > now() - make_interval(secs => $2), false) AS unsettled,"
            " EXISTS (SELECT 1 FROM recordings r"
            " WHERE r.bot_id = j.bot_id AND r.media_deleted_at IS NOT NULL) OR EXISTS"
            " (SELECT 1 FROM meetings m WHERE m.bot_id = j.bot_id AND m.source = 'notetaker'"
            " AND m.media_deleted_at IS NOT NULL) OR j.status = 'deleted' AS deleted"
            " FROM transcription_jobs j WHERE j.bot_id = $1 FOR UPDATE OF j",
            bot_id,
            settle_seconds,
        )
        # Checked under the row's lock: an intent written with the video before the media was
        # deleted is never submitted. The deletion takes the same lock to close an intent never
        # tried (status 'deleted', read here from the row as the lock gives it), so it sees
        # either this submit as tried or closes an intent that is then never submitted.
        if row is None or row["deleted"]:
            raise MeetingMediaDeleted(f"the media of bot {bot_id}'s meeting was deleted")
        job = TranscriptionJob(row["request_id"], row["job_id"], row["token_expires_at"])
        unsettled = job.job_id is None and row["unsettled"]
        if job.job_id is None and not unsettled:
            await conn.execute(
                "UPDATE transcription_jobs SET submitted_at = coalesce(submitted_at, now()),"
                " unanswered_at = now(), requested_at = now(), token_expires_at = $2"
                " WHERE request_id = $1",
                job.request_id,
                intent.token_expires_at,
            )
            job = TranscriptionJob(job.request_id, None, intent.token_expires_at)
    return SubmitStart(job, row["tried"], unsettled)


async def answered_without_job(pool: asyncpg.Pool, request_id: uuid.UUID) -> None:
    """Gladia answered the submit under `request_id` with a refusal: no job of it is coming."""
    await pool.execute(
        "UPDATE transcription_jobs SET unanswered_at = NULL WHERE request_id = $1", request_id
    )


async def record_transcription_job(pool: asyncpg.Pool, request_id: uuid.UUID, job_id: str) -> None:
    """The provider's id of the job asked for under `request_id`: callbacks must name it."""
    await pool.execute(
        "UPDATE transcription_jobs SET job_id = $2, unanswered_at = NULL WHERE request_id = $1",
        request_id,
        job_id,
    )


async def complete_transcription_job(pool: asyncpg.Pool, bot_id: str) -> None:
    await pool.execute(
        "UPDATE transcription_jobs SET completed_at = now(), status = 'done'"
        " WHERE bot_id = $1 AND completed_at IS NULL",
        bot_id,
    )
