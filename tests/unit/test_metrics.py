"""``/metrics`` exposition: each runtime's own registry, the same names as always."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from bot.ops.metrics import Metrics


def samples(metrics: Metrics, phases: dict[str, int] | None = None) -> dict[tuple[str, str], float]:
    body, content_type = metrics.render(phases or {})
    assert content_type.startswith("text/plain; version=0.0.4")
    return {
        (sample.name, ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_counts_acks_errors_duplicates_and_sessions() -> None:
    metrics = Metrics()
    metrics.observe_ack("slash_command", 200, 0.07)
    metrics.observe_ack("interactive", 200, 2.5)
    metrics.observe_ack("interactive", 401, 0.01)
    metrics.count_error("KeyError")
    metrics.count_duplicate()
    seen = samples(metrics, {"started": 2, "verifying": 1})
    assert seen[("provision_inline_requests_total", "kind=interactive")] == 2
    assert seen[("provision_inline_requests_total", "kind=slash_command")] == 1
    assert seen[("provision_inline_acks_total", "status=200")] == 2
    assert seen[("provision_inline_acks_total", "status=401")] == 1
    assert seen[("provision_inline_ack_seconds_count", "")] == 3
    assert seen[("provision_inline_ack_seconds_bucket", "le=0.05")] == 1
    assert seen[("provision_inline_ack_seconds_bucket", "le=0.1")] == 2
    assert seen[("provision_inline_ack_seconds_bucket", "le=2.0")] == 2
    assert seen[("provision_inline_ack_seconds_bucket", "le=3.0")] == 3
    assert seen[("provision_inline_errors_total", "type=KeyError")] == 1
    assert seen[("provision_inline_duplicates_total", "")] == 1
    assert seen[("provision_inline_sessions", "state=started")] == 2
    assert seen[("provision_inline_sessions", "state=verifying")] == 1


def test_sessions_are_those_counted_at_the_scrape() -> None:
    metrics = Metrics()
    samples(metrics, {"started": 2, "verifying": 1})
    seen = samples(metrics, {"applying": 1})
    assert seen[("provision_inline_sessions", "state=applying")] == 1
    assert ("provision_inline_sessions", "state=started") not in seen


def test_each_runtime_counts_for_itself() -> None:
    first, second = Metrics(), Metrics()
    first.count_duplicate()
    assert samples(first)[("provision_inline_duplicates_total", "")] == 1
    assert samples(second)[("provision_inline_duplicates_total", "")] == 0


def test_openmetrics_when_asked() -> None:
    metrics = Metrics()
    metrics.count_duplicate()
    body, content_type = metrics.render({}, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")
