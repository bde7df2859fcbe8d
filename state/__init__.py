"""Redis persistence: sessions, tenant locks, idempotency markers and audit streams."""
