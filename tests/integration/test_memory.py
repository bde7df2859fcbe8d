"""What one session costs in Redis (issue 12): at most 4 KiB while active (measured at the plan
shown for a tenant with 20 domains, outbox included) and at most 1 KiB once finished. The audit
stream is counted apart (it is capped); ``MEMORY USAGE`` of every key the session owns."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.workflow import Phase
from tests.integration.conftest import CONTOSO_ID, Harness
from tests.integration.test_apply import plan_shown, submit_and_finish

ACTIVE_LIMIT = 4 * 1024
FINISHED_LIMIT = 1024


async def footprint(redis: Redis, session_id: str, tenant_id: str) -> dict[str, int]:
    """Bytes per key of the session (its audit stream left out), the tenant lock included."""
    keys = [key.decode() for key in await redis.keys(f"pi:{{{session_id}}}:*")]
    keys.append(f"pi:tenant:{{{tenant_id}}}")
    sizes = {}
    for key in keys:
        if key.endswith(":audit"):
            continue
        used = await redis.memory_usage(key, samples=0)
        if used is not None:
            sizes[key] = int(used)
    return sizes


async def test_a_session_costs_at_most_4_kib_active_and_1_kib_finished(harness: Harness) -> None:
    tenant = harness.microsoft.tenant(CONTOSO_ID)
    tenant.domains.extend(f"brand{n:02d}.contoso.com" for n in range(19))
    root_ts, session_id = await plan_shown(harness)
    session = await harness.store.require(session_id)
    assert session.plan is not None
    assert len(session.plan.domains) == 20

    active = await footprint(harness.redis, session_id, session.tenant_id)
    assert sum(active.values()) <= ACTIVE_LIMIT, active

    assert await submit_and_finish(harness, root_ts, session_id) is Phase.PROTECTED
    finished = await footprint(harness.redis, session_id, session.tenant_id)
    assert sum(finished.values()) <= FINISHED_LIMIT, finished
    assert await harness.redis.xlen(f"pi:{{{session_id}}}:audit") > 10  # the decisions stay
