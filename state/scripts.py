"""Small pieces every Redis store here shares: answers as text, and the lock scripts."""

from __future__ import annotations

__all__ = ["RELEASE_IF_HELD", "RENEW_IF_HELD", "as_text", "session_key"]

# KEYS: a lock. ARGV: its holder. Deletes the lock only if that holder still holds it.
RELEASE_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: a lock. ARGV: its holder, ttl in seconds. Extends the lock only if that holder holds it.
RENEW_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def as_text(value: bytes | str | None) -> str:
    """redis-py answers bytes or str depending on ``decode_responses``; we want str."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def session_key(session_id: str, part: str) -> str:
    """The key of one part of a session: every part shares the session's hash tag, so the
    scripts that touch several of them run on one Redis Cluster slot."""
    return f"pi:{{{session_id}}}:{part}"
