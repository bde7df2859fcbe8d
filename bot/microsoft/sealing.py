"""Sealing short-lived sign-in data (MSAL's flow: the PKCE verifier, the nonce) for Redis.

The flow must survive until Microsoft redirects back, possibly to another replica, so it goes to
Redis; encrypted (Fernet: AES-CBC + HMAC) with a key derived from a credential every replica
already holds, so what Redis keeps is useless to whoever reads it.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["Sealer", "UnsealError"]


class UnsealError(Exception):
    """The sealed data was altered, or sealed with another key (another deployment)."""


class Sealer:
    def __init__(self, key_material: bytes) -> None:
        digest = hashlib.sha256(b"provision-inline sealed sign-in flow v1\0" + key_material)
        self._fernet = Fernet(base64.urlsafe_b64encode(digest.digest()))

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def unseal(self, sealed: str, *, max_age_seconds: int) -> str:
        try:
            return self._fernet.decrypt(sealed.encode(), ttl=max_age_seconds).decode()
        except InvalidToken as error:
            raise UnsealError("sealed sign-in data is invalid or too old") from error
