"""What a copy holds in memory is its parts in flight, whatever the recording's size.

The copy runs in a process of its own, with the source served from this one, so that what is
counted is the copy's: Python's allocations traced by tracemalloc from just before the copy to
its end (received chunks, part buffers, what asyncio's transports keep of a request body).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from notetaker.common.s3 import S3Client
from notetaker.devstack.sources import RecordingSource
from notetaker.devstack.stack import Stack

MIB = 1024 * 1024
PART, IN_FLIGHT = 5 * MIB, 2

COPY = """
import asyncio, json, sys, tracemalloc
from notetaker.common.settings import NotetakerSettings
from notetaker.uploader.transfer import copy_clients, stream_to_s3

async def main(url, key, part, in_flight):
    settings = NotetakerSettings()
    async with copy_clients(settings, 30) as (s3, http):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        stored = await stream_to_s3(
            http, s3, url=url, bucket=settings.s3_bucket, key=key, content_type="video/mp4",
            part_size=part, parts_in_flight=in_flight,
        )
        peak = tracemalloc.get_traced_memory()[1]
    print(json.dumps({"size": stored.size_bytes, "parts": stored.parts, "added": peak - before}))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


async def copy_in_child(stack: Stack, url: str, key: str) -> dict[str, int]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        COPY,
        url,
        key,
        str(PART),
        str(IN_FLIGHT),
        env={**os.environ, **stack.env()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate()
    assert child.returncode == 0, err.decode()[-2000:]
    result: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_a_copy_holds_its_parts_in_flight_and_no_more_whatever_the_size(
    stack: Stack, s3: S3Client, source: RecordingSource
) -> None:
    # The part buffers (those in flight and the one being filled), and room for what the HTTP
    # clients hold: the source's read-ahead (aiohttp's, up to 2 x read_bufsize) and a slice of
    # each part in its S3 connection's transport. Copying whole parts, as a `bytes` body would
    # be, costs about twice this.
    bound = (IN_FLIGHT + 1) * PART + 8 * MIB
    added = {}
    for size_mib in (40, 160):
        name = f"memory-{size_mib}.mp4"
        source.files[name] = os.urandom(size_mib * MIB)
        result = await copy_in_child(stack, source.url(name), f"t/{name}")
        assert (result["size"], result["parts"]) == (size_mib * MIB, -(-size_mib * MIB // PART))
        added[size_mib] = result["added"]
        await s3.delete_object(Bucket=stack.s3_bucket, Key=f"t/{name}")
        del source.files[name]
    assert max(added.values()) < bound, f"bytes held by the copy: {added}, bound {bound}"
    # Four times the bytes, the same memory: the copy streams, it does not accumulate.
    assert added[160] < added[40] + 2 * MIB, added
