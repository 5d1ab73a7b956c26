"""Streaming upload, HTTP source to S3, against boto3's own multipart upload of the same bytes.

A 1 GiB file (by default) is served over HTTP on loopback by a separate process that sends it with
sendfile(2), so the source costs the machine next to no CPU, as a provider's CDN costs it none.
Each side runs in a child process of its own, so its peak RSS and CPU are its own: ours streams the
URL into S3 with `stream_to_s3` (5 MiB parts, 4 in flight); boto3's `upload_fileobj` sends the same
bytes from the local file with the same part size, concurrency and SHA-256 part checksums, to the
same endpoint. Each round runs both sides back to back, in turn first (the order alternates),
after one uncounted warm-up round (the endpoint's first large uploads are slower for whichever
side meets them). The ratio is the median of the rounds' ratios (paired, so the machine's drift
between rounds cancels), with the best of each side beside it.
The S3 endpoint's own CPU during each side is printed too: on the embedded stack moto works
about as many CPU seconds as the copy lasts, so it sets the pace of both sides, and most of the
spread between rounds is its own.
Target (docs/architecture.md §12): ratio >= 0.9, peak memory < 64 MiB for 1 GiB. The memory
printed against the target is what the copy adds to the process (its peak RSS minus its RSS just
before the copy):
the interpreter, aioboto3 and its S3 client hold about 80 MiB before any byte moves, in boto3's
process as in ours, so no process on this stack has a peak under 64 MiB whatever it uploads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from notetaker.devstack.stack import LocalProcess, Stack, free_port, start_stack

MIB = 1024 * 1024


def rss_now_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kib() -> int:
    """This process's own peak RSS (VmHWM). Not getrusage's ru_maxrss: Linux carries the peak of
    the image a process replaced at exec into it, so a child's ru_maxrss is never below the RSS
    its parent had when it forked, and this harness's parent outgrows a copy's own peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


async def child_ours(url: str, key: str, part: int, in_flight: int) -> dict[str, Any]:
    from notetaker.common.settings import NotetakerSettings
    from notetaker.uploader.transfer import copy_clients, stream_to_s3

    settings = NotetakerSettings()
    async with copy_clients(settings, 60) as (s3, http):
        before = rss_now_kib()
        started = time.perf_counter()
        stored = await stream_to_s3(
            http,
            s3,
            url=url,
            bucket=settings.s3_bucket,
            key=key,
            content_type="video/mp4",
            part_size=part,
            parts_in_flight=in_flight,
        )
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": stored.size_bytes, "rss_before_kib": before}


def child_boto3(path: str, key: str, part: int, in_flight: int) -> dict[str, Any]:
    import boto3  # type: ignore[import-untyped]
    from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
    from botocore.config import Config

    from notetaker.common.settings import NotetakerSettings

    settings = NotetakerSettings()
    assert settings.s3_access_key_id is not None
    assert settings.s3_secret_access_key is not None
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id.get_secret_value(),
        aws_secret_access_key=settings.s3_secret_access_key.get_secret_value(),
        # As ours: the SHA-256 part checksums stand for the SigV4 payload hash.
        config=Config(s3={"payload_signing_enabled": False}),
    )
    config = TransferConfig(
        multipart_threshold=part, multipart_chunksize=part, max_concurrency=in_flight
    )
    before = rss_now_kib()
    started = time.perf_counter()
    with open(path, "rb") as source:
        # Same integrity as ours: S3's SHA-256 additional checksums on every part.
        s3.upload_fileobj(
            source,
            settings.s3_bucket,
            key,
            Config=config,
            ExtraArgs={"ChecksumAlgorithm": "SHA256"},
        )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": os.path.getsize(path), "rss_before_kib": before}


def child(argv: list[str]) -> None:
    side, where, key, part, in_flight = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    result = (
        asyncio.run(child_ours(where, key, part, in_flight))
        if side == "ours"
        else child_boto3(where, key, part, in_flight)
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["rss_peak_kib"] = peak_rss_kib()
    result["cpu"] = f"{usage.ru_utime:.1f} s user + {usage.ru_stime:.1f} s system"
    print(json.dumps(result), flush=True)


def run_side(
    stack: Stack, side: str, where: str, key: str, part: int, in_flight: int
) -> dict[str, Any]:
    env = {**os.environ, **stack.env()}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.upload",
            "--child",
            side,
            where,
            key,
            str(part),
            str(in_flight),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{side} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def verify(stack: Stack, key: str, size: int) -> None:
    from notetaker.common.s3 import s3_client

    async with s3_client(stack.settings()) as s3:
        head = await s3.head_object(Bucket=stack.s3_bucket, Key=key)
        await s3.delete_object(Bucket=stack.s3_bucket, Key=key)  # moto keeps objects in memory
    if head["ContentLength"] != size:
        raise RuntimeError(f"{key} holds {head['ContentLength']} bytes, expected {size}")


def cpu_seconds(process: LocalProcess | None) -> float | None:
    """User + system CPU a process of the stack has used so far (None: not ours to read)."""
    if process is None or process.process is None:
        return None
    with open(f"/proc/{process.process.pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def describe(name: str, result: dict[str, Any]) -> str:
    rate = result["bytes"] / MIB / result["seconds"]
    endpoint = result.get("endpoint_cpu_seconds")
    return (
        f"{name:>24}: {rate:7.1f} MiB/s  ({result['seconds']:.1f} s)  peak RSS "
        f"{result['rss_peak_kib'] / 1024:6.1f} MiB  (before the copy "
        f"{result['rss_before_kib'] / 1024:.1f} MiB)  process CPU {result['cpu']}"
        + (f"  S3 endpoint CPU {endpoint:.1f} s" if endpoint is not None else "")
    )


async def main(size_mib: int, rounds: int, warmup: int, part: int, in_flight: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="notetaker-bench-upload-"))
    path = workdir / "recording.mp4"
    print(
        f"writing a {size_mib} MiB file; parts of {part // MIB} MiB, {in_flight} in flight",
        flush=True,
    )
    with path.open("wb") as out:
        for _ in range(size_mib // 8):
            out.write(os.urandom(8 * MIB))
    size = path.stat().st_size
    stack = await start_stack()
    port = free_port()
    server = LocalProcess(
        "http source",
        [sys.executable, "-m", "bench.file_server", str(port), str(workdir)],
        workdir / "http.log",
        port,
    )
    server.start()
    url = f"http://127.0.0.1:{port}/{path.name}"
    best: dict[str, dict[str, Any]] = {}
    ratios: list[float] = []
    added_mib: list[float] = []
    try:
        for n in range(-warmup, rounds):
            # The order alternates so neither side always meets the endpoint first in a round.
            order = (("ours", url), ("boto3", str(path)))
            seconds: dict[str, float] = {}
            for side, where in order if n % 2 == 0 else order[::-1]:
                label = f"warm-up {n + warmup + 1}" if n < 0 else f"round {n + 1}"
                print(f"{label}: {side} ...", flush=True)
                key = f"bench/{side}-{n}.mp4"
                endpoint_before = cpu_seconds(stack.processes.get("s3"))
                result = run_side(stack, side, where, key, part, in_flight)
                endpoint_after = cpu_seconds(stack.processes.get("s3"))
                if endpoint_before is not None and endpoint_after is not None:
                    result["endpoint_cpu_seconds"] = endpoint_after - endpoint_before
                await verify(stack, key, size)
                print(describe(side, result), flush=True)
                if n < 0:
                    continue  # the endpoint's first large uploads, not counted
                if side not in best or result["seconds"] < best[side]["seconds"]:
                    best[side] = result
                seconds[side] = result["seconds"]
                if side == "ours":
                    added_mib.append((result["rss_peak_kib"] - result["rss_before_kib"]) / 1024)
            if n >= 0:
                ratios.append(seconds["boto3"] / seconds["ours"])
    finally:
        server.stop()
        stack.stop()
        path.unlink(missing_ok=True)
    ours, boto = best["ours"], best["boto3"]
    print("\nbest of each:")
    print(describe("streaming upload (ours)", ours))
    print(describe("boto3 upload_fileobj", boto) + "  [SHA-256 checksums, like ours]")
    print(
        f"\nthroughput ratio ours / boto3, median of {len(ratios)} rounds:"
        f" {statistics.median(ratios):.2f} (target >= 0.90)"
    )
    print("ratio in each round: " + ", ".join(f"{r:.2f}" for r in ratios))
    print(f"ratio of the best of each: {boto['seconds'] / ours['seconds']:.2f}")
    print(
        f"memory the streaming upload added, most in any round: {max(added_mib):.1f} MiB"
        f" (target < 64 MiB); process peak {ours['rss_peak_kib'] / 1024:.1f} MiB,"
        f" {ours['rss_before_kib'] / 1024:.1f} MiB of it there before the copy"
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--warmup", type=int, default=1, help="uncounted rounds before the measured ones"
    )
    parser.add_argument("--part-mib", type=int, default=5, help="part size, both sides")
    parser.add_argument("--in-flight", type=int, default=4, help="parts in flight, both sides")
    args = parser.parse_args([a for a in sys.argv[1:] if a != "upload"])
    sys.exit(
        asyncio.run(
            main(args.size_mib, args.rounds, args.warmup, args.part_mib * MIB, args.in_flight)
        )
    )
