"""One-time OAuth ``state`` values (DESIGN §6): random, single-use, expiring, bound to a session.

Only a SHA-256 of the state is used as a key, so reading Redis does not yield working links.
A state is valid for ``lifetime`` seconds, but its record is kept for a day so that a late or
repeated redirect can be told apart from a forged one, and the user can be told which it was:

- ``pi:oauth:{<sha>}``       the binding (session, tenant, purpose, expiry), taken with GETDEL
- ``pi:oauth-used:{<sha>}``  the binding once used, so a replay is recognised as a replay;
  without its sealed part (a used state needs nothing to complete a sign-in, so keeps nothing)
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from enum import StrEnum

from state.connection import RedisClient
from state.patience import TRANSIENT, RedisUnavailable

__all__ = ["OAuthState", "OAuthStates", "Redemption", "RedemptionStatus"]

_KEEP_RECORDS_SECONDS = 24 * 3600


@dataclass(frozen=True)
class OAuthState:
    session_id: str
    tenant_id: str
    purpose: str  # e.g. "mailflow" or "dirsync" (which consent), "role" (the delegated sign-in)
    issued_at: float
    expires_at: float
    opened_by: str | None = None  # the Slack user who clicked the link, once known
    # Sealed data the redirect needs (the sign-in's PKCE verifier): encrypted by the caller,
    # so Redis never holds it in the clear.
    sealed: str | None = None


class RedemptionStatus(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Redemption:
    status: RedemptionStatus
    binding: OAuthState | None = None  # absent only for UNKNOWN


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _key(digest: str) -> str:
    return f"pi:oauth:{{{digest}}}"


def _used_key(digest: str) -> str:
    return f"pi:oauth-used:{{{digest}}}"


class OAuthStates:
    def __init__(self, redis: RedisClient, *, lifetime: int = 15 * 60) -> None:
        self._redis = redis
        self.lifetime = lifetime

    async def issue(
        self,
        *,
        session_id: str,
        tenant_id: str,
        purpose: str,
        now: float,
        state: str | None = None,
        sealed: str | None = None,
        opened_by: str | None = None,
    ) -> str:
        """Bind a state to a session; ``state`` when a library made one (MSAL's sign-in)."""
        state = state or secrets.token_urlsafe(32)
        binding = OAuthState(
            session_id=session_id,
            tenant_id=tenant_id,
            purpose=purpose,
            issued_at=now,
            expires_at=now + self.lifetime,
            opened_by=opened_by,
            sealed=sealed,
        )
        await self._redis.set(
            _key(_digest(state)), json.dumps(asdict(binding)), ex=_KEEP_RECORDS_SECONDS
        )
        return state

    async def note_opened(self, state: str, user_id: str) -> bool:
        """Remember who clicked the link (the consent redirect does not say who signed in)."""
        key = _key(_digest(state))
        raw = await self._redis.get(key)
        if raw is None:
            return False
        binding = OAuthState(**json.loads(raw))
        if binding.opened_by is None:
            updated = OAuthState(**{**asdict(binding), "opened_by": user_id})
            await self._redis.set(key, json.dumps(asdict(updated)), keepttl=True, xx=True)
        return True

    async def redeem(self, state: str, *, now: float) -> Redemption:
        """Take the state (once). Expired states are taken too: they name their session."""
        digest = _digest(state)
        raw = await self._redis.getdel(_key(digest))
        if raw is None:
            used = await self._redis.get(_used_key(digest))
            if used is None:
                return Redemption(RedemptionStatus.UNKNOWN)
            return Redemption(RedemptionStatus.REPLAYED, OAuthState(**json.loads(used)))
        binding = OAuthState(**json.loads(raw))
        spent = OAuthState(**{**asdict(binding), "sealed": None})
        try:
            await self._redis.set(
                _used_key(digest), json.dumps(asdict(spent)), ex=_KEEP_RECORDS_SECONDS
            )
        except TRANSIENT as error:  # taken but not recorded: this link cannot work again
            raise RedisUnavailable(
                "OAuth state taken, its use not recorded", consumed=True
            ) from error
        if now > binding.expires_at:
            return Redemption(RedemptionStatus.EXPIRED, binding)
        return Redemption(RedemptionStatus.VALID, binding)
