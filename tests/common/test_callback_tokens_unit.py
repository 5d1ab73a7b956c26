"""Callback secrets and tokens, in process: what the scheduler and transcript-sync mint is what
ingest accepts, for that subject only (a MeetingBaaS meeting, a Gladia request and its expiry),
under any current key, never across purposes, and a presented string of any shape is refused
quietly."""

from __future__ import annotations

import hmac

import pytest

from notetaker.common import callback_tokens

# HMAC-SHA256("k1", "bot-1") and HMAC-SHA256("k2", "bot-1"), hex: a token minted today must
# still verify after an upgrade, so the algorithm and encoding are pinned by value.
K1_BOT_1 = "e09a08f7d2c30f23496b44cfcb3e252cc5fa2bfd866b5ea302d5ac4550664c6a"
K2_BOT_1 = "dd7d14c7d0bb724c77a871962b61b0c9f6c9177c5a3121bb6e80a03225a21be2"
# A subject with a lone surrogate (what a garbled query string decodes to) still mints.
K1_SURROGATE = "61f86417bf0dd7f9028f36d90df64e5e839dfa6d2966360ef4b89f7f8a6f1f74"

MEETING = "7d2f9a3e-1c4b-4e8a-9f60-2b5d8c1e4a7f"
REQUEST = "3b0c5e1a-8d2f-4c7b-a914-6e2f0d9b7c31"
EXPIRES = 1767225600
# Computed with `openssl dgst -sha256 -hmac <key>` over the subject, not with this module:
# HMAC-SHA256(k, "meetingbaas-callback:" + MEETING) under k1 and k2, and
# HMAC-SHA256("k1", "gladia-job:" + REQUEST + ":" + EXPIRES).
K1_MEETING = "d8ab2be4a0c2f79912aaaa198f7a3eeeefa44443e810d5a6c2dea713a18f4bba"
K2_MEETING = "842ac8ef147d8c58514241bcde70b493bb346564bebcf2941a52835c648c6ffd"
K1_REQUEST = "6111d8d14da2e792b16599963aa480a300e38981acc94ada7a62f6eb54412308"


def test_a_token_is_the_hex_hmac_sha256_of_its_subject() -> None:
    assert callback_tokens.mint("k1", "bot-1") == K1_BOT_1
    assert callback_tokens.mint("k2", "bot-1") == K2_BOT_1
    assert callback_tokens.mint("k1", "bøt-\ud885") == K1_SURROGATE


def test_the_minted_token_is_valid_for_its_subject_only() -> None:
    assert callback_tokens.is_valid(["k1"], "bot-1", K1_BOT_1)
    assert not callback_tokens.is_valid(["k1"], "bot-2", K1_BOT_1)
    assert not callback_tokens.is_valid(["k1"], "bot-1", K1_BOT_1.upper())
    assert not callback_tokens.is_valid(["k1"], "bot-1", K1_BOT_1[:-1])


def test_any_current_key_accepts_during_a_rotation() -> None:
    assert callback_tokens.is_valid(["k1", "k2"], "bot-1", K1_BOT_1)
    assert callback_tokens.is_valid(["k1", "k2"], "bot-1", K2_BOT_1)
    assert callback_tokens.is_valid(iter(["k2", "k1"]), "bot-1", K1_BOT_1)  # any iterable
    # once the old key is retired, its tokens stop working
    assert not callback_tokens.is_valid(["k2"], "bot-1", K1_BOT_1)
    assert not callback_tokens.is_valid([], "bot-1", K1_BOT_1)


def test_every_key_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)  # the module callback_tokens calls
    for token in (K1_BOT_1, K2_BOT_1, "nope"):
        compared.clear()
        callback_tokens.is_valid(["k1", "k2", "k3"], "bot-1", token)
        # no early exit: the time taken does not tell which key matched
        assert compared == [token.encode()] * 3


@pytest.mark.parametrize("token", ["", "ü", "\ud885", "x" * 500, K1_BOT_1 + "\x00"])
def test_a_token_of_any_shape_is_refused_without_error(token: str) -> None:
    assert not callback_tokens.is_valid(["k1"], "bot-1", token)


def test_a_surrogate_subject_verifies_its_own_token() -> None:
    assert callback_tokens.is_valid(["k1"], "bøt-\ud885", K1_SURROGATE)
    assert not callback_tokens.is_valid(["k1"], "bøt-\ud885", K1_BOT_1)


# --- the subjects: one purpose each --------------------------------------------------------------


def test_a_bot_callback_secret_is_derived_from_its_meeting_only() -> None:
    subject = callback_tokens.meetingbaas_callback_subject(MEETING)
    assert subject == f"meetingbaas-callback:{MEETING}"
    assert callback_tokens.mint("k1", subject) == K1_MEETING
    assert callback_tokens.mint("k2", subject) == K2_MEETING
    assert callback_tokens.is_valid(["k2", "k1"], subject, K1_MEETING)
    other = callback_tokens.meetingbaas_callback_subject(MEETING.replace("7d2f", "7d2e"))
    assert not callback_tokens.is_valid(["k1", "k2"], other, K1_MEETING)


def test_a_gladia_token_signs_the_request_and_its_expiry() -> None:
    subject = callback_tokens.gladia_job_subject(REQUEST, EXPIRES)
    assert subject == f"gladia-job:{REQUEST}:{EXPIRES}"
    assert callback_tokens.mint("k1", subject) == K1_REQUEST
    later = callback_tokens.gladia_job_subject(REQUEST, EXPIRES + 1)  # a moved expiry
    assert not callback_tokens.is_valid(["k1"], later, K1_REQUEST)
    other = callback_tokens.gladia_job_subject(REQUEST.replace("3b0c", "3b0d"), EXPIRES)
    assert not callback_tokens.is_valid(["k1"], other, K1_REQUEST)


def test_what_is_minted_for_one_purpose_never_passes_for_another() -> None:
    # One key for both, the worst case: the domain prefixes still keep them apart.
    meeting = callback_tokens.meetingbaas_callback_subject(REQUEST)
    job = callback_tokens.gladia_job_subject(REQUEST, EXPIRES)
    assert not callback_tokens.is_valid(["k1"], job, callback_tokens.mint("k1", meeting))
    assert not callback_tokens.is_valid(["k1"], meeting, callback_tokens.mint("k1", job))
    # nor does a bare id, what the tokens of old signed
    assert not callback_tokens.is_valid(["k1"], meeting, callback_tokens.mint("k1", REQUEST))
    assert not callback_tokens.is_valid(["k1"], job, callback_tokens.mint("k1", REQUEST))
