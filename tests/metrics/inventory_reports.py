"""S3 Inventory reports as AWS delivers them (CSV format), for tests: a dated folder holding
manifest.json and manifest.checksum (the MD5 of manifest.json), and gzip CSV data files without
a header row whose keys are URL-encoded, under
`<prefix>/<source-bucket>/<config-id>/` of the destination bucket."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote_plus

from notetaker.common.s3 import S3Client

SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag"


def csv_gz(rows: Sequence[Sequence[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return gzip.compress(text.getvalue().encode())


def row(
    source_bucket: str,
    key: str,
    size: int,
    *,
    latest: bool = True,
    delete_marker: bool = False,
) -> list[str]:
    """A data file's row of SCHEMA for an object (or a noncurrent version, or a delete marker)."""
    return [
        source_bucket,
        quote_plus(key, safe="/"),
        uuid.uuid4().hex,
        "true" if latest else "false",
        "true" if delete_marker else "false",
        "" if delete_marker else str(size),
        "2026-01-01T00:00:00.000Z",
        "" if delete_marker else hashlib.md5(key.encode()).hexdigest(),  # noqa: S324
    ]


async def write_report(
    s3: S3Client,
    destination: str,
    prefix: str,
    source_bucket: str,
    config_id: str,
    created: datetime,
    files: Sequence[Sequence[Sequence[str]]],
    *,
    schema: str = SCHEMA,
    manifest: bytes | None = None,
) -> str:
    """Deliver a report made at `created` with one data file per entry of `files`; the key of
    its manifest.json. `manifest` replaces the manifest's bytes (its checksum still matches)."""
    folder = "/".join(p for p in (prefix, source_bucket, config_id) if p)
    entries = []
    for rows in files:
        body = csv_gz(rows)
        key = f"{folder}/data/{uuid.uuid4()}.csv.gz"
        await s3.put_object(Bucket=destination, Key=key, Body=body)
        entries.append(
            {"key": key, "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()}  # noqa: S324
        )
    stamp = created.strftime("%Y-%m-%dT%H-%MZ")
    document = (
        manifest
        or json.dumps(
            {
                "sourceBucket": source_bucket,
                "destinationBucket": f"arn:aws:s3:::{destination}",
                "version": "2016-11-30",
                "creationTimestamp": str(int(created.timestamp() * 1000)),
                "fileFormat": "CSV",
                "fileSchema": schema,
                "files": entries,
            }
        ).encode()
    )
    manifest_key = f"{folder}/{stamp}/manifest.json"
    await s3.put_object(Bucket=destination, Key=manifest_key, Body=document)
    await s3.put_object(
        Bucket=destination,
        Key=f"{folder}/{stamp}/manifest.checksum",
        Body=hashlib.md5(document).hexdigest().encode(),  # noqa: S324
    )
    return manifest_key
