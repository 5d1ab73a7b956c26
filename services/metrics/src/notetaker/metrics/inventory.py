"""S3 Inventory reports as the source of a reconciliation's listing (docs/architecture.md §8).

Where the bucket has an S3 Inventory configuration (CSV format), AWS delivers a report a day (or a
week) into a destination bucket, laid out as AWS documents it:

    <prefix>/<source-bucket>/<config-id>/<YYYY-MM-DDTHH-MMZ>/manifest.json
    <prefix>/<source-bucket>/<config-id>/<YYYY-MM-DDTHH-MMZ>/manifest.checksum
    <prefix>/<source-bucket>/<config-id>/data/<uuid>.csv.gz

`manifest.json` names the source bucket, the report's `creationTimestamp` (ms since the epoch),
its `fileFormat`, its `fileSchema` (the CSV's columns, in order, without a header row) and its
`files` (each gzip CSV data file's `key`, `size` and `MD5checksum`); `manifest.checksum` is the MD5
of `manifest.json`. Reading a report costs a few requests whatever the number of objects
(a listing costs one per 1,000).

`read_report` finds the newest dated folder, checks the manifest (its checksum, the source bucket,
CSV, a schema with Bucket, Key and Size), then streams each data file (a chunk at a time: a report
is never held in memory whole), decoding the keys (URL-encoded in inventory CSVs) and keeping the
current versions (`IsLatest`, where the schema has it) that are not delete markers, under the
recordings prefix, as a `Listing` whose time is the report's creation time. Anything unexpected is
an `InventoryError` naming what and where.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

from notetaker.common.s3 import RECORDINGS_PREFIX, S3Client
from notetaker.metrics.reconcile import Listing

REQUIRED_FIELDS = ("Bucket", "Key", "Size")
DATED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z$")
CHUNK = 1 << 16


class InventoryError(Exception):
    """A report that cannot be used: missing, incomplete or not in the expected format."""


@dataclass(frozen=True)
class InventorySource:
    """Where the inventory configuration delivers its reports, and how old one may be."""

    bucket: str
    prefix: str
    config_id: str
    max_age: timedelta

    def folder(self, source_bucket: str) -> str:
        head = self.prefix.strip("/")
        return "/".join(p for p in (head, source_bucket, self.config_id) if p) + "/"


@dataclass(frozen=True)
class Manifest:
    key: str
    created_at: datetime
    fields: tuple[str, ...]
    files: tuple[str, ...]
    checksums: tuple[str | None, ...]


async def newest_manifest_key(s3: S3Client, source: InventorySource, source_bucket: str) -> str:
    """The key of the newest report's manifest.json (its dated folder sorts last)."""
    folder = source.folder(source_bucket)
    dated: list[str] = []
    token: str | None = None
    while True:
        args: dict[str, Any] = {"Bucket": source.bucket, "Prefix": folder, "Delimiter": "/"}
        if token:
            args["ContinuationToken"] = token
        page = await s3.list_objects_v2(**args)
        for common in page.get("CommonPrefixes", []):
            name = common["Prefix"][len(folder) :].rstrip("/")
            if DATED.match(name):
                dated.append(name)
        if not page.get("IsTruncated"):
            break
        token = page.get("NextContinuationToken")
    if not dated:
        raise InventoryError(f"no inventory report under s3://{source.bucket}/{folder}")
    return f"{folder}{max(dated)}/manifest.json"


def parse_manifest(key: str, body: bytes, checksum: str | None, source_bucket: str) -> Manifest:
    """The manifest's parts a reconciliation needs, once it is checked."""
    if checksum is not None and hashlib.md5(body).hexdigest() != checksum.strip().lower():  # noqa: S324
        raise InventoryError(f"{key}: does not match its manifest.checksum")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise InventoryError(f"{key}: not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise InventoryError(f"{key}: not a JSON object")
    if doc.get("sourceBucket") != source_bucket:
        raise InventoryError(
            f"{key}: reports on bucket {doc.get('sourceBucket')!r}, not {source_bucket!r}"
        )
    if str(doc.get("fileFormat", "")).upper() != "CSV":
        raise InventoryError(f"{key}: fileFormat {doc.get('fileFormat')!r}; only CSV is read")
    fields = tuple(f.strip() for f in str(doc.get("fileSchema", "")).split(",") if f.strip())
    missing = [f for f in REQUIRED_FIELDS if f not in fields]
    if missing:
        raise InventoryError(f"{key}: fileSchema lacks {', '.join(missing)}")
    try:
        created = datetime.fromtimestamp(int(doc["creationTimestamp"]) / 1000, UTC)
        files = doc["files"]
        keys = tuple(str(f["key"]) for f in files)
        sums = tuple(f.get("MD5checksum") for f in files)
    except (KeyError, TypeError, ValueError) as exc:
        raise InventoryError(f"{key}: no creationTimestamp or files[].key ({exc!r})") from exc
    return Manifest(key, created, fields, keys, sums)


async def read_manifest(
    s3: S3Client, source: InventorySource, key: str, source_bucket: str
) -> Manifest:
    body = await _get(s3, source.bucket, key)
    checksum_key = key.removesuffix("manifest.json") + "manifest.checksum"
    try:
        checksum = (await _get(s3, source.bucket, checksum_key)).decode()
    except InventoryError as exc:
        raise InventoryError(f"{key}: no manifest.checksum: the report is incomplete") from exc
    return parse_manifest(key, body, checksum, source_bucket)


async def _get(s3: S3Client, bucket: str, key: str) -> bytes:
    try:
        answer = await s3.get_object(Bucket=bucket, Key=key)
        async with answer["Body"] as body:
            data: bytes = await body.read()
            return data
    except Exception as exc:  # NoSuchKey and the like: the report is not there
        raise InventoryError(f"s3://{bucket}/{key}: {exc}") from exc


class RowReader:
    """Rows of one gzip CSV data file, fed a compressed chunk at a time."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._rest = b""

    def feed(self, chunk: bytes) -> Iterator[list[str]]:
        try:
            data = self._rest + self._inflate.decompress(chunk)
        except zlib.error as exc:
            raise InventoryError(f"{self.where}: not gzip ({exc})") from exc
        *lines, self._rest = data.split(b"\n")
        return self._rows(lines)

    def close(self) -> Iterator[list[str]]:
        if not self._inflate.eof:
            raise InventoryError(f"{self.where}: truncated gzip")
        lines, self._rest = [self._rest], b""
        return self._rows([line for line in lines if line.strip()])

    def _rows(self, lines: list[bytes]) -> Iterator[list[str]]:
        try:
            text = [line.decode() for line in lines]
        except UnicodeDecodeError as exc:
            raise InventoryError(f"{self.where}: not UTF-8 CSV ({exc})") from exc
        return csv.reader(text)


def add_row(
    listing: Listing, fields: tuple[str, ...], row: list[str], source_bucket: str, where: str
) -> None:
    """Add a data file's row to the listing when it is a current object of the recordings
    prefix (as ListObjectsV2 would list it)."""
    if not row:
        return
    if len(row) != len(fields):
        raise InventoryError(f"{where}: a row of {len(row)} fields, the schema has {len(fields)}")
    value = dict(zip(fields, row, strict=True))
    if value["Bucket"] != source_bucket:
        raise InventoryError(f"{where}: a row of bucket {value['Bucket']!r}")
    if value.get("IsLatest", "true").lower() == "false":
        return
    if value.get("IsDeleteMarker", "false").lower() == "true":
        return
    key = unquote_plus(value["Key"])
    if not key.startswith(RECORDINGS_PREFIX):
        return
    try:
        size = int(value["Size"] or 0)
    except ValueError as exc:
        raise InventoryError(f"{where}: Size {value['Size']!r} of {key}") from exc
    listing.add(key, size)


async def read_report(
    s3: S3Client, source: InventorySource, manifest: Manifest, source_bucket: str
) -> Listing:
    """The report's objects under the recordings prefix, as a listing made at its creation."""
    listing = Listing(
        started_at=manifest.created_at, requests=2, source="inventory", manifest_key=manifest.key
    )
    for key, expected in zip(manifest.files, manifest.checksums, strict=True):
        where = f"s3://{source.bucket}/{key}"
        try:
            answer = await s3.get_object(Bucket=source.bucket, Key=key)
        except Exception as exc:
            raise InventoryError(f"{where}: {exc}") from exc
        listing.requests += 1
        rows = RowReader(where)
        digest = hashlib.md5()  # noqa: S324  (AWS's checksum of the file)
        stream = answer["Body"]  # aiobotocore's StreamingBody: read a chunk at a time
        async with stream:
            while chunk := await stream.read(CHUNK):
                digest.update(chunk)
                for row in rows.feed(chunk):
                    add_row(listing, manifest.fields, row, source_bucket, where)
        if expected and digest.hexdigest() != str(expected).lower():
            raise InventoryError(f"{where}: does not match the manifest's MD5checksum")
        for row in rows.close():
            add_row(listing, manifest.fields, row, source_bucket, where)
    return listing
