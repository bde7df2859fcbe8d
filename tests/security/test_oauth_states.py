"""A used OAuth state keeps nothing sealed: only what tells a replay from a forgery."""

from __future__ import annotations

from redis.asyncio import Redis

from state.oauth import OAuthStates, RedemptionStatus

SEALED = "sealed-pkce-flow-0123456789"


async def test_a_redeemed_state_keeps_no_sealed_flow(redis: Redis) -> None:
    states = OAuthStates(redis)
    state = await states.issue(
        session_id="s1", tenant_id="t1", purpose="role", now=100.0, sealed=SEALED
    )
    stored = [await redis.get(key) for key in await redis.keys("pi:oauth*")]
    assert any(SEALED.encode() in value for value in stored if value)  # the flow was kept…

    first = await states.redeem(state, now=101.0)
    assert first.status is RedemptionStatus.VALID
    assert first.binding is not None
    assert first.binding.sealed == SEALED  # …for exactly one redemption

    stored = [await redis.get(key) for key in await redis.keys("pi:oauth*")]
    assert stored
    assert not any(SEALED.encode() in value for value in stored if value)
    replay = await states.redeem(state, now=102.0)
    assert replay.status is RedemptionStatus.REPLAYED
    assert replay.binding is not None
    assert replay.binding.session_id == "s1"
    assert replay.binding.sealed is None
