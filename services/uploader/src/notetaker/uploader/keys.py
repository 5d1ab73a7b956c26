"""Provider URLs at rest: they carry the provider's signature, so the recordings row keeps them
encrypted (Fernet: AES-128-CBC with HMAC-SHA256) with keys from NOTETAKER_SOURCE_URL_KEYS; the
first encrypts, every key decrypts, so a key rotates without re-encrypting rows at once.

`python -m notetaker.uploader.keys` prints a new key.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr


class SourceUrlCipher:
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
                "a stored provider URL opens with none of NOTETAKER_SOURCE_URL_KEYS"
                " (a key removed too early?)"
            ) from None


if __name__ == "__main__":
    print(Fernet.generate_key().decode())
