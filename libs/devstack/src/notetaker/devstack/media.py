"""Real recordings for the simulator and tests: an H.264/AAC MP4 and a FLAC, made with PyAV.

Like a real meeting recording, the first half second is black; after it the picture is bright
and moving, so a thumbnail taken a few seconds in shows something. `noise=True` fills frames with
random pixels, which barely compress: use it to get large files (about 2 MB per second at
640x480, so 10 s ≈ 20 MB).
"""

from __future__ import annotations

import array
import hashlib
import io
import math
import os
from dataclasses import dataclass
from functools import cache

import av

AUDIO_RATE = 16_000
_AUDIO_FRAME = 1024


@dataclass(frozen=True)
class Recording:
    video: bytes
    audio: bytes

    @property
    def video_sha256(self) -> str:
        return hashlib.sha256(self.video).hexdigest()

    @property
    def audio_sha256(self) -> str:
        return hashlib.sha256(self.audio).hexdigest()


def _picture(
    index: int, fps: int, width: int, height: int, noise: bool, dark_frames: int
) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    bright = index >= dark_frames
    for plane_index, plane in enumerate(frame.planes):
        rows = height if plane_index == 0 else height // 2
        columns = width if plane_index == 0 else width // 2
        padding = bytes(plane.line_size - columns)
        if noise and bright:
            plane.update(b"".join(os.urandom(columns) + padding for _ in range(rows)))
            continue
        if plane_index == 0:
            row = bytes(((x + index * 4) % 200 + 40) if bright else 16 for x in range(columns))
        else:
            shade = (index * 3 if plane_index == 1 else 255 - index * 3) % 256
            row = bytes([shade if bright else 128]) * columns
        plane.update((row + padding) * rows)
    frame.pts = index
    return frame


def _tone(seconds: float) -> list[av.AudioFrame]:
    frames = []
    total = int(seconds * AUDIO_RATE)
    for start in range(0, total - _AUDIO_FRAME + 1, _AUDIO_FRAME):
        samples = array.array(
            "h",
            (
                int(6000 * math.sin(2 * math.pi * 440 * (start + k) / AUDIO_RATE))
                for k in range(_AUDIO_FRAME)
            ),
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=_AUDIO_FRAME)
        frame.sample_rate = AUDIO_RATE
        frame.planes[0].update(samples.tobytes())
        frame.pts = start
        frames.append(frame)
    return frames


def _audio_stream(container: av.container.OutputContainer, codec: str) -> av.AudioStream:
    stream = container.add_stream(codec, rate=AUDIO_RATE)
    stream.layout = "mono"  # type: ignore[union-attr]
    return stream  # type: ignore[return-value]


def _encode(
    container: av.container.OutputContainer, stream: av.AudioStream, frames: list[av.AudioFrame]
) -> None:
    for frame in frames:
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def make_recording(
    seconds: float = 6.0,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    noise: bool = False,
    dark_seconds: float = 0.5,
) -> Recording:
    """An mp4 (H.264 + AAC) and a FLAC of a tone: black for `dark_seconds`, then moving bars."""
    audio_frames = _tone(seconds)
    video_out = io.BytesIO()
    with av.open(video_out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        audio = _audio_stream(container, "aac")  # every stream exists before the first packet
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if noise:
            stream.bit_rate = 20_000_000
        for index in range(int(seconds * fps)):
            picture = _picture(index, fps, width, height, noise, int(dark_seconds * fps))
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        _encode(container, audio, audio_frames)
    audio_out = io.BytesIO()
    with av.open(audio_out, "w", format="flac") as container:
        _encode(container, _audio_stream(container, "flac"), audio_frames)
    return Recording(video=video_out.getvalue(), audio=audio_out.getvalue())


@cache
def demo_recording() -> Recording:
    """The recording every simulated bot serves (made once per process)."""
    return make_recording()
