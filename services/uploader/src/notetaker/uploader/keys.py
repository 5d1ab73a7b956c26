"""Provider URLs at rest: they carry the provider's signature, so the recordings row keeps them
encrypted with the key ring of NOTETAKER_SOURCE_URL_KEYS (`notetaker.common.sealing`, which
ingest also seals the webhook bodies it keeps with); the first encrypts, every key decrypts, so
a key rotates without re-encrypting rows at once.

`python -m notetaker.uploader.keys` prints a new key.
"""

from __future__ import annotations

from cryptography.fernet import Fernet

from notetaker.common.sealing import SourceUrlCipher

__all__ = ["SourceUrlCipher"]

if __name__ == "__main__":
    print(Fernet.generate_key().decode())
