"""Gladia job ids, in process: only a plain id ever goes into Gladia's API path with our key."""

from __future__ import annotations

import pytest

from notetaker.common import gladia

JOB = "45463597-20b7-4af7-b3b3-f5fb778203ab"


@pytest.mark.parametrize("job_id", [JOB, "a", "A_b-9", "x" * 100])
def test_a_plain_id_is_one_and_its_url_is_the_job(job_id: str) -> None:
    assert gladia.is_job_id(job_id)
    assert gladia.job_url("https://api.gladia.io", job_id) == (
        f"https://api.gladia.io/v2/pre-recorded/{job_id}"
    )


@pytest.mark.parametrize(
    "job_id",
    [
        "",
        "x" * 101,
        "..",
        ".",
        "../v2/pre-recorded",
        "a/b",
        "a?b=c",
        "a#b",
        "a%2Fb",
        "a b",
        f"{JOB}\n",
        "job\x00",
        "jöb",
        "\ud885",
    ],
)
def test_anything_else_is_refused_before_a_url_exists(job_id: str) -> None:
    assert not gladia.is_job_id(job_id)
    with pytest.raises(ValueError, match="not a plain Gladia job id"):
        gladia.job_url("https://api.gladia.io", job_id)


@pytest.mark.parametrize("value", [None, 42, [JOB], {"id": JOB}, JOB.encode()])
def test_a_value_that_is_not_a_string_is_no_job_id(value: object) -> None:
    assert not gladia.is_job_id(value)


def test_a_refusal_quotes_at_most_100_characters_of_what_was_presented() -> None:
    with pytest.raises(ValueError, match="not a plain Gladia job id") as refused:
        gladia.job_url("https://api.gladia.io", "/" * 500)
    assert str(refused.value) == f"not a plain Gladia job id: {'/' * 100!r}"
