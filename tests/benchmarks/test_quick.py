"""The benchmark harness (``python -m benchmarks``) cannot rot: its quick mode's smallest part
runs against today's product and yields its figures, and a wrk pool reaches the anchor. Only
behaviour is asserted (what was counted, that nothing failed), never a time or a ratio."""

from __future__ import annotations

from pathlib import Path

from benchmarks.__main__ import QUICK, run
from benchmarks.ack import EffectCounter
from benchmarks.load import form_template, run_wrk, write_pool
from benchmarks.world import ADMIN, CHANNEL, world


async def test_the_quick_redis_part_counts_every_interaction_of_a_provisioning(
    tmp_path: Path,
) -> None:
    rows = await run(["redis"], QUICK, workdir=tmp_path, log=lambda _: None)
    measures = {row.measure: row for row in rows}
    server = next(r for m, r in measures.items() if "Redis commands (server" in m)
    client = measures["whole provisioning: Redis round trips (client)"]
    assert server.value > 0
    assert client.value > 0
    per_interaction = [r for m, r in measures.items() if m.endswith("before the ack")]
    names = {r.measure.removesuffix(": round trips before the ack") for r in per_interaction}
    assert {
        "command /provision-inline",
        "start form submitted",
        "click Verify",
        "click Submit",
    } <= (names)
    # Every click is claimed by the duplicate filter before its ack: at least one round trip.
    assert all(r.value >= 1 for r in per_interaction if r.measure.startswith("click "))
    assert all(r.part.startswith("3") for r in rows)


async def test_a_pool_of_signed_commands_reaches_the_anchor_once_each(tmp_path: Path) -> None:
    async with world(tmp_path) as here:
        anchor = await here.start_anchor()
        command = here.driver.build_slash_command(user_id=ADMIN, channel_id=CHANNEL, text="status")
        template = form_template(
            "command",
            {k: str(v) for k, v in command.payload.items()},
            {"channel_id": CHANNEL, "user_id": ADMIN},
        )
        pool = write_pool(here, template, 8000, tmp_path / "pool.txt")
        counter = EffectCounter(here.slack, lambda call: call.method == "response_url")
        result = await run_wrk(anchor.events_url, pool, connections=2, duration=1, workdir=tmp_path)
        assert result.requests > 0
        assert result.errors == {}  # every signed request was verified and acked (200)
        assert result.wrapped == 0
        assert counter.update() == 0  # the anchor only acks: nothing reaches Slack
        assert anchor.log_problems() == []
