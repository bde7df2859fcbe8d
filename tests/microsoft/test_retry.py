from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest

from bot.microsoft.errors import MicrosoftUnavailable
from bot.microsoft.retry import RetryPolicy, parse_retry_after


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("-3") == 0.0
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("soon") is None


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=5, jitter=0.5, random=lambda: 1.0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [1.5, 2.5, 4.5, 5]


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def answers(
    *statuses: int, headers: dict[str, str] | None = None
) -> Callable[[], Awaitable[httpx.Response]]:
    queue = list(statuses)

    async def call() -> httpx.Response:
        return httpx.Response(queue.pop(0), headers=headers or {})

    return call


async def test_gives_up_when_retry_after_exceeds_budget() -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(max_total_seconds=60, sleep=record)
    with pytest.raises(MicrosoftUnavailable) as caught:
        await policy.send(answers(429, headers={"Retry-After": "120"}))
    assert caught.value.retry_after == 120
    assert waits == []


async def test_total_time_is_capped() -> None:
    now = [0.0]

    async def advance(seconds: float) -> None:
        now[0] += seconds

    policy = RetryPolicy(
        max_attempts=100,
        max_total_seconds=10,
        base_delay=1,
        jitter=0,
        sleep=advance,
        clock=lambda: now[0],
    )
    with pytest.raises(MicrosoftUnavailable):
        await policy.send(answers(*[500] * 100))
    assert now[0] <= 10


async def test_non_idempotent_retries_only_unprocessed() -> None:
    async def nowait(seconds: float) -> None:
        return None

    policy = RetryPolicy(sleep=nowait)
    response = await policy.send(answers(503, 500), idempotent=False)
    assert response.status_code == 500
    response = await policy.send(answers(500, 200), idempotent=True)
    assert response.status_code == 200
