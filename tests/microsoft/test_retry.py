from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest
import stamina
from stamina.instrumentation import RetryDetails

from bot.microsoft.errors import MicrosoftUnavailable
from bot.microsoft.retry import RetryPolicy, parse_retry_after
from bot.ops.inflight import InFlight
from tests.microsoft_cloud import recording_retries


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("-3") == 0.0
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("soon") is None


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="durations"):
        RetryPolicy(max_total_seconds=0)


class Answers:
    """Answers ``statuses`` in turn (then the last one forever), counting the calls."""

    def __init__(self, *statuses: int, headers: dict[str, str] | None = None) -> None:
        self.statuses = list(statuses)
        self.headers = headers or {}
        self.calls = 0

    async def __call__(self) -> httpx.Response:
        self.calls += 1
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return httpx.Response(status, headers=self.headers)


def failing(error: Exception) -> Callable[[], Awaitable[httpx.Response]]:
    async def call() -> httpx.Response:
        raise error

    return call


@pytest.fixture
def scheduled() -> Iterator[list[RetryDetails]]:
    """Every retry stamina scheduled."""
    seen: list[RetryDetails] = []
    with recording_retries(seen.append):
        yield seen


async def test_retry_after_is_the_wait_stamina_takes(scheduled: list[RetryDetails]) -> None:
    # Out of testing mode for once, with waits short enough to really take.
    with stamina.set_testing(False):
        answers = Answers(429, 429, 200, headers={"Retry-After": "0.01"})
        response = await RetryPolicy().send(answers)
    assert response.status_code == 200
    assert [d.wait_for for d in scheduled] == [0.01, 0.01]
    assert all(isinstance(d.caused_by, MicrosoftUnavailable) for d in scheduled)


async def test_backoff_without_retry_after_grows_and_is_capped(
    scheduled: list[RetryDetails],
) -> None:
    with stamina.set_testing(False):
        policy = RetryPolicy(base_delay=0.01, max_delay=0.02, jitter=0)
        response = await policy.send(Answers(500, 502, 504, 200))
    assert response.status_code == 200
    assert [round(d.wait_for, 6) for d in scheduled] == [0.01, 0.02, 0.02]


async def test_gives_up_when_retry_after_exceeds_budget(delays: list[float]) -> None:
    answers = Answers(429, headers={"Retry-After": "120"})
    with pytest.raises(MicrosoftUnavailable) as caught:
        await RetryPolicy(max_total_seconds=60).send(answers)
    assert caught.value.retry_after == 120
    assert answers.calls == 1
    assert delays == []


async def test_attempts_are_capped(delays: list[float]) -> None:
    answers = Answers(503, headers={"Retry-After": "3"})
    with pytest.raises(MicrosoftUnavailable) as caught:
        await RetryPolicy(max_attempts=4).send(answers, what="Microsoft Graph")
    assert answers.calls == 4
    assert delays == [3.0, 3.0, 3.0]
    assert caught.value.retry_after == 3
    assert "Microsoft Graph unavailable after 4 attempt(s): HTTP 503" in str(caught.value)


async def test_total_time_is_capped() -> None:
    answers = Answers(500)
    policy = RetryPolicy(
        max_attempts=10_000, max_total_seconds=0.05, base_delay=0.01, max_delay=0.01, jitter=0
    )
    with stamina.set_testing(False), pytest.raises(MicrosoftUnavailable):
        await policy.send(answers)
    assert answers.calls < 10_000  # the time ran out, not the attempts


async def test_non_idempotent_retries_only_unprocessed() -> None:
    policy = RetryPolicy()
    response = await policy.send(Answers(503, 500), idempotent=False)
    assert response.status_code == 500
    response = await policy.send(Answers(500, 200), idempotent=True)
    assert response.status_code == 200


async def test_network_errors(delays: list[float]) -> None:
    refused = httpx.ConnectError("refused")
    with pytest.raises(MicrosoftUnavailable, match="after 5 attempt"):
        await RetryPolicy().send(failing(refused), idempotent=False)  # never reached Microsoft
    assert len(delays) == 4
    delays.clear()
    dropped = httpx.ReadTimeout("no answer")
    with pytest.raises(MicrosoftUnavailable, match="may have been processed") as caught:
        await RetryPolicy().send(failing(dropped), idempotent=False)
    assert caught.value.__cause__ is dropped
    assert delays == []


async def test_a_call_waiting_on_microsoft_lends_its_work_slot() -> None:
    """Sixteen clicks waiting seconds for Graph must not hold every other listener in line."""
    inflight = InFlight(at_once=1, busy_for=0)
    asked, answer = asyncio.Event(), asyncio.Event()
    others: list[str] = []

    async def slow_answer() -> httpx.Response:
        asked.set()
        await answer.wait()
        return httpx.Response(200)

    async def asks_microsoft() -> int:
        await inflight.take_slot()
        return (await RetryPolicy().send(slow_answer)).status_code

    async def other_work() -> None:
        await inflight.take_slot()
        others.append("went on")

    asking = asyncio.create_task(asks_microsoft())
    await asked.wait()
    await asyncio.wait_for(asyncio.create_task(other_work()), timeout=5)
    assert others == ["went on"]
    answer.set()
    assert await asking == 200
    assert inflight.free_slots == 1
