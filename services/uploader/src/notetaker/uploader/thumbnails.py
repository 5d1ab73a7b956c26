"""Thumbnails: a frame a few seconds into the stored video, as a scaled JPEG beside it.

The video is read through S3 range requests (a seekable file for PyAV), so only the container
index and the frames around the chosen moment are fetched, never the whole recording.

Nothing is made for a recording whose media was deleted, and a thumbnail stored while it was
being deleted is deleted again: the recording is checked before and after the JPEG is written
(a deletion marks the recording before it lists its objects, so a thumbnail written before the
mark is listed, and one written after it is seen here).

A stored thumbnail is charged: it is recorded and counted in the org's stored level by its own
`storage.usage` event (`later_objects.record_later_object`, kind `thumbnail`), before
`thumbnail.generated` is announced; a regenerated one moves the level by the difference in size.
The record refuses a recording deleted since the check (the deletion takes off what was recorded
before its mark), and the thumbnail is then deleted again, counted nowhere.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import asyncpg
import av
from prometheus_client import Counter

from notetaker.common.deletion import media_deleted
from notetaker.common.envelope import Envelope
from notetaker.common.events import ThumbnailGenerated, ThumbnailRequested
from notetaker.common.kafka import EventPublisher
from notetaker.common.later_objects import record_later_object
from notetaker.common.logs import get_logger
from notetaker.common.s3 import S3Client

log = get_logger(__name__)

THUMBNAIL_BYTES_READ = Counter(
    "notetaker_thumbnailer_source_bytes_read_total", "Video bytes fetched to make thumbnails."
)
THUMBNAIL_FAILURES = Counter(
    "notetaker_thumbnailer_failures_total",
    "Videos no thumbnail can be made of, by reason.",
    ["reason"],
)

# A frame darker than this (mean luma, 0-255) is taken as black: try a later one.
_BLACK_LUMA = 16.0


class NoDecodableFrame(Exception):
    """The video has no frame we can decode (corrupt, audio-only, or all black)."""


class S3RangeFile(io.RawIOBase):
    """A read-only, seekable file over an S3 object, read in blocks by range requests.

    Used from a worker thread: each block is fetched on the event loop that owns the client.
    """

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        size: int,
        loop: asyncio.AbstractEventLoop,
        block: int = 256 * 1024,
    ) -> None:
        self.s3, self.bucket, self.key, self.size = s3, bucket, key, size
        self.loop, self.block = loop, block
        self.position = 0
        self.bytes_read = 0
        self._cache: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def _block(self, index: int) -> bytes:
        if index not in self._cache:
            start = index * self.block
            end = min(self.size, start + self.block) - 1
            self._cache[index] = asyncio.run_coroutine_threadsafe(
                self._get(start, end), self.loop
            ).result()
            self.bytes_read += len(self._cache[index])
            if len(self._cache) > 64:  # bounded memory: forget the oldest block
                del self._cache[next(iter(self._cache))]
        return self._cache[index]

    async def _get(self, start: int, end: int) -> bytes:
        answer = await self.s3.get_object(
            Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end}"
        )
        async with answer["Body"] as body:
            data: bytes = await body.read()
        return data

    def read(self, size: int = -1) -> bytes:
        if self.position >= self.size:
            return b""
        if size < 0:
            size = self.size - self.position
        out = bytearray()
        while size > 0 and self.position < self.size:
            index, offset = divmod(self.position, self.block)
            data = self._block(index)[offset : offset + size]
            out += data
            self.position += len(data)
            size -= len(data)
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass(frozen=True)
class Thumbnail:
    jpeg: bytes
    width: int
    height: int


def _luma(frame: av.VideoFrame) -> float:
    """Mean brightness of a small grey copy of the frame."""
    small = frame.reformat(width=64, height=36, format="gray")
    data = bytes(small.planes[0])
    return sum(data) / len(data)


@dataclass(frozen=True)
class Budget:
    """How much one thumbnail may cost, whatever the video: frames decoded after the chosen
    moment, wall time, and bytes fetched from S3. A video dark for longer gets the least dark
    frame found within it."""

    frames: int = 150
    seconds: float = 10.0
    bytes: int = 32 * 1024 * 1024


def render_thumbnail(
    source: Any, at_seconds: float, width: int, budget: Budget = Budget()
) -> Thumbnail:
    """Decode the first non-black frame at or after `at_seconds` (or, when the budget runs out
    first, the least dark one seen) and encode it as a JPEG."""
    started = time.monotonic()
    try:
        container = av.open(source, mode="r")
    except av.FFmpegError as exc:
        raise NoDecodableFrame(f"cannot open video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise NoDecodableFrame("the recording has no video stream")
        stream = container.streams.video[0]
        duration = float(container.duration / av.time_base) if container.duration else None
        target = min(at_seconds, duration / 2) if duration else at_seconds
        if stream.time_base is not None and target > 0:
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
        chosen, brightest, decoded = None, -1.0, 0
        try:
            for frame in container.decode(stream):
                if frame.time is not None and frame.time + 0.001 < target:
                    continue
                luma = _luma(frame)
                if luma > brightest:
                    chosen, brightest = frame, luma
                decoded += 1
                if luma >= _BLACK_LUMA or (
                    decoded >= budget.frames
                    or time.monotonic() - started > budget.seconds
                    or getattr(source, "bytes_read", 0) > budget.bytes
                ):
                    break
        except av.FFmpegError as exc:
            if chosen is None:
                raise NoDecodableFrame(f"decoding failed: {exc}") from exc
        if chosen is None:
            raise NoDecodableFrame("no decodable frame after the chosen time")
    height = max(2, round(chosen.height * width / chosen.width / 2) * 2)
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = chosen.time_base or Fraction(1, 25)
    scaled = chosen.reformat(width=width, height=height, format="yuvj420p")
    packets = [*encoder.encode(scaled), *encoder.encode(None)]
    return Thumbnail(jpeg=b"".join(bytes(p) for p in packets), width=width, height=height)


class Thumbnailer:
    def __init__(
        self,
        s3: S3Client,
        publisher: EventPublisher,
        pool: asyncpg.Pool,
        *,
        width: int,
        at_seconds: float,
    ) -> None:
        self.s3, self.publisher, self.pool = s3, publisher, pool
        self.width, self.at_seconds = width, at_seconds

    async def handle(self, envelope: Envelope) -> None:
        event = envelope.event
        if not isinstance(event, ThumbnailRequested):
            return
        if await self._deleted(event):
            return
        head = await self.s3.head_object(Bucket=event.bucket, Key=event.video_key)
        source = S3RangeFile(
            self.s3,
            event.bucket,
            event.video_key,
            head["ContentLength"],
            asyncio.get_running_loop(),
        )
        try:
            thumbnail = await asyncio.to_thread(
                render_thumbnail, source, self.at_seconds, self.width
            )
        except NoDecodableFrame as exc:
            # Permanent: retrying the same bytes cannot help. The meeting keeps its video.
            THUMBNAIL_FAILURES.labels("no_decodable_frame").inc()
            log.error(
                "thumbnail.impossible",
                bot_id=event.bot_id,
                recording_id=str(event.recording_id),
                video_key=event.video_key,
                error=str(exc),
                hint="the stored video cannot be decoded; check its source",
            )
            return
        finally:
            THUMBNAIL_BYTES_READ.inc(source.bytes_read)
        digest = base64.b64encode(hashlib.sha256(thumbnail.jpeg).digest()).decode()
        await self.s3.put_object(
            Bucket=event.bucket,
            Key=event.thumbnail_key,
            Body=thumbnail.jpeg,
            ContentType="image/jpeg",
            ServerSideEncryption="AES256",
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=digest,
        )
        if await self._deleted(event):
            return
        counted = await record_later_object(
            self.pool,
            self.publisher,
            bot_id=event.bot_id,
            org_id=event.org_id,
            recording_id=event.recording_id,
            kind="thumbnail",
            key=event.thumbnail_key,
            size=len(thumbnail.jpeg),
            checksum=f"sha256:{digest}",
        )
        if not counted:  # deleted between the check and the record: nothing is counted
            await self._delete_thumbnail(event)
            return
        log.info(
            "thumbnail.stored",
            bot_id=event.bot_id,
            key=event.thumbnail_key,
            bytes_read=source.bytes_read,
            video_bytes=head["ContentLength"],
        )
        await self.publisher.publish(
            ThumbnailGenerated(
                bot_id=event.bot_id,
                recording_id=event.recording_id,
                bucket=event.bucket,
                thumbnail_key=event.thumbnail_key,
                width=thumbnail.width,
                height=thumbnail.height,
                size_bytes=len(thumbnail.jpeg),
            )
        )

    async def _deleted(self, event: ThumbnailRequested) -> bool:
        """Whether the recording's media was deleted; if so its thumbnail is deleted too (one
        stored after the deletion listed the recording's objects)."""
        if not await media_deleted(self.pool, event.recording_id):
            return False
        await self._delete_thumbnail(event)
        return True

    async def _delete_thumbnail(self, event: ThumbnailRequested) -> None:
        await self.s3.delete_object(Bucket=event.bucket, Key=event.thumbnail_key)
        log.info(
            "thumbnail.media_deleted",
            bot_id=event.bot_id,
            recording_id=str(event.recording_id),
            key=event.thumbnail_key,
        )
