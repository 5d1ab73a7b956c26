"""Provider data at rest: provider URLs carry the provider's signature and webhook bodies carry
URLs, transcripts and names, so both are kept encrypted (Fernet: AES-128-CBC with HMAC-SHA256)
with the keys of NOTETAKER_SOURCE_URL_KEYS. The first key encrypts, every key decrypts, so a key
rotates without re-encrypting rows at once: put the new key first, keep the old one second until
the rows it sealed are gone (bodies: their retention; URLs: their recordings' uploads).

`python -m notetaker.uploader.keys` prints a new key.
"""

from __future__ import annotations

import zlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

KEYS_SETTING = "NOTETAKER_SOURCE_URL_KEYS"


def fernet_keys(keys: list[SecretStr]) -> list[SecretStr]:
    """The keys, each checked to be a Fernet key (a settings validator; an empty list passes)."""
    for key in keys:
        try:
            Fernet(key.get_secret_value())
        except ValueError:
            raise ValueError(
                "holds a key that is not a Fernet key (url-safe base64 of 32 bytes)"
            ) from None
    return keys


class SourceUrlCipher:
    """The key ring: seals and opens provider URLs (text) and webhook bodies (bytes)."""

    def __init__(self, keys: list[SecretStr]) -> None:
        self._fernet = MultiFernet([Fernet(k.get_secret_value()) for k in keys])

    def seal(self, url: str | None) -> str | None:
        return None if url is None else self._fernet.encrypt(url.encode()).decode()

    def open(self, sealed: str | None) -> str | None:
        """The URL, or an error naming no part of it when no key opens it."""
        if sealed is None:
            return None
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ValueError(
                f"a stored provider URL opens with none of {KEYS_SETTING}"
                " (a key removed too early?)"
            ) from None

    def seal_body(self, body: bytes) -> bytes:
        """`body` compressed (zlib), then encrypted: what `webhook_bodies.sealed` holds."""
        return self._fernet.encrypt(zlib.compress(body, 6))

    def open_body(self, sealed: bytes) -> bytes:
        """The exact bytes `seal_body` was given, or an error naming no part of them."""
        try:
            return zlib.decompress(self._fernet.decrypt(sealed))
        except InvalidToken:
            raise ValueError(
                f"a kept webhook body opens with none of {KEYS_SETTING}"
                " (a key removed before the bodies it sealed were pruned?)"
            ) from None
