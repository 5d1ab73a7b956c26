"""S3 Inventory reports read without S3: the manifest's checks and the gzip CSV data files, fed
in chunks as they stream, decoded into the listing reconciliation compares."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from notetaker.common.s3 import recording_key
from notetaker.metrics.inventory import InventoryError, RowReader, add_row, parse_manifest
from notetaker.metrics.reconcile import Listing
from tests.metrics.inventory_reports import SCHEMA, csv_gz, row

BUCKET = "recordings"
ORG, USER, REC = (uuid.UUID(int=n) for n in (1, 2, 3))
KEY = "inv/recordings/daily/2026-01-02T01-00Z/manifest.json"


def manifest(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "sourceBucket": BUCKET,
        "destinationBucket": "arn:aws:s3:::inv",
        "version": "2016-11-30",
        "creationTimestamp": "1767315600000",  # 2026-01-02T01:00:00Z
        "fileFormat": "CSV",
        "fileSchema": SCHEMA,
        "files": [{"key": "inv/recordings/daily/data/a.csv.gz", "size": 1, "MD5checksum": "x"}],
    }
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324


def test_a_manifest_names_its_time_columns_and_data_files() -> None:
    body = manifest()
    found = parse_manifest(KEY, body, md5(body), BUCKET)
    assert found.created_at == datetime(2026, 1, 2, 1, tzinfo=UTC)
    assert found.fields[:6] == ("Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size")
    assert found.files == ("inv/recordings/daily/data/a.csv.gz",)


@pytest.mark.parametrize(
    ("body", "checksum", "says"),
    [
        (b"{not json", None, "not JSON"),
        (manifest(), "0" * 32, "manifest.checksum"),
        (manifest(sourceBucket="other"), None, "'other'"),
        (manifest(fileFormat="Parquet"), None, "only CSV"),
        (manifest(fileSchema="Bucket, Key, LastModifiedDate"), None, "lacks Size"),
        (manifest(creationTimestamp=None), None, "creationTimestamp"),
        (manifest(files=[{"size": 3}]), None, "files[].key"),
    ],
)
def test_a_manifest_that_cannot_be_used_says_why(
    body: bytes, checksum: str | None, says: str
) -> None:
    with pytest.raises(InventoryError, match=KEY) as raised:
        parse_manifest(KEY, body, checksum if checksum else md5(body), BUCKET)
    assert says in str(raised.value)


def read(data: bytes, chunk: int, fields: tuple[str, ...]) -> Listing:
    listing = Listing(started_at=datetime(2026, 1, 2, tzinfo=UTC))
    rows = RowReader("test")
    for start in range(0, len(data), chunk):
        for r in rows.feed(data[start : start + chunk]):
            add_row(listing, fields, r, BUCKET, "test")
    for r in rows.close():
        add_row(listing, fields, r, BUCKET, "test")
    return listing


FIELDS = tuple(f.strip() for f in SCHEMA.split(","))


@pytest.mark.parametrize("chunk", [7, 64, 1 << 16])
def test_data_files_stream_into_the_listing_as_list_objects_would_list(chunk: int) -> None:
    video = recording_key(ORG, USER, REC, "video", "mp4")
    odd = f"meeting-recordings/{ORG}/{USER}/{REC}/a file+name%.json"  # encoded on the way in
    data = csv_gz(
        [
            row(BUCKET, video, 1_000),
            row(BUCKET, odd, 20),
            row(BUCKET, video, 999_999, latest=False),  # a noncurrent version
            row(
                BUCKET,
                f"meeting-recordings/{ORG}/{USER}/{uuid.uuid4()}/x.mp4",
                0,
                delete_marker=True,
            ),
            row(BUCKET, "elsewhere/thumbnail.jpg", 5),  # outside the recordings prefix
        ]
    )
    listing = read(data, chunk, FIELDS)
    assert (listing.objects, listing.bytes) == (2, 1_020)
    assert listing.keys == {video, odd}
    assert listing.by_org == {ORG: 1_020}
    assert listing.by_recording == {REC: (ORG, 1_020)}


def test_a_schema_without_versions_keeps_every_row() -> None:
    fields = ("Bucket", "Key", "Size")
    key = recording_key(ORG, USER, REC, "video", "mp4")
    listing = read(
        csv_gz([[BUCKET, key, "10"], [BUCKET, key.replace("video", "audio"), "5"]]), 9, fields
    )
    assert listing.by_org == {ORG: 15}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"plain text, not gzip\n", "not gzip"),
        (csv_gz([["recordings", "meeting-recordings/k", "1"]])[:-6], "truncated"),
        (csv_gz([["recordings", "meeting-recordings/k"]]), "2 fields"),
        (csv_gz([["another", "meeting-recordings/k", "1"]]), "'another'"),
        (csv_gz([["recordings", "meeting-recordings/k", "many"]]), "Size 'many'"),
    ],
)
def test_a_data_file_that_cannot_be_read_says_why(data: bytes, says: str) -> None:
    with pytest.raises(InventoryError) as raised:
        read(data, 1 << 16, ("Bucket", "Key", "Size"))
    assert says in str(raised.value)
