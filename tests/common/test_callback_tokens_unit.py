"""Gladia callback tokens, in process: what transcript-sync mints is what ingest accepts, for
that bot only, under any current key, and a presented token of any shape is refused quietly."""

from __future__ import annotations

import pytest

from notetaker.common import callback_tokens

# HMAC-SHA256("k1", "bot-1") and HMAC-SHA256("k2", "bot-1"), hex: a token minted today must
# still verify after an upgrade, so the algorithm and encoding are pinned by value.
K1_BOT_1 = "e09a08f7d2c30f23496b44cfcb3e252cc5fa2bfd866b5ea302d5ac4550664c6a"
K2_BOT_1 = "dd7d14c7d0bb724c77a871962b61b0c9f6c9177c5a3121bb6e80a03225a21be2"
# A subject with a lone surrogate (what a garbled query string decodes to) still mints.
K1_SURROGATE = "61f86417bf0dd7f9028f36d90df64e5e839dfa6d2966360ef4b89f7f8a6f1f74"


def test_a_token_is_the_hex_hmac_sha256_of_the_bot_id() -> None:
    assert callback_tokens.mint("k1", "bot-1") == K1_BOT_1
    assert callback_tokens.mint("k2", "bot-1") == K2_BOT_1
    assert callback_tokens.mint("k1", "bøt-\ud885") == K1_SURROGATE


def test_the_minted_token_is_valid_for_its_bot_only() -> None:
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


@pytest.mark.parametrize("token", ["", "ü", "\ud885", "x" * 500, K1_BOT_1 + "\x00"])
def test_a_token_of_any_shape_is_refused_without_error(token: str) -> None:
    assert not callback_tokens.is_valid(["k1"], "bot-1", token)


def test_a_surrogate_subject_verifies_its_own_token() -> None:
    assert callback_tokens.is_valid(["k1"], "bøt-\ud885", K1_SURROGATE)
    assert not callback_tokens.is_valid(["k1"], "bøt-\ud885", K1_BOT_1)
