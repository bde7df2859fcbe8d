"""``/metrics`` through ``prometheus_client``: requests, acks (with latency), errors, duplicates,
sessions by state.

Each ``Metrics`` has its own ``CollectorRegistry`` (a process may build several runtimes: tests
do), so nothing lands in the library's global registry.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

__all__ = ["ACK_BUCKETS", "Metrics"]

#: Slack wants an ack within 3 seconds.
ACK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0)


class Metrics:
    """The process's counters; ``render`` gives the exposition for one scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "provision_inline_requests",
            "Slack requests received, by payload kind.",
            ["kind"],
            registry=self.registry,
        )
        self._acks = Counter(
            "provision_inline_acks",
            "Acknowledgements sent to Slack, by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self._requests_of: dict[str, Counter] = {}
        self._acks_of: dict[int, Counter] = {}
        self._ack_seconds = Histogram(
            "provision_inline_ack_seconds",
            "Time from request to acknowledgement.",
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        self._errors = Counter(
            "provision_inline_errors",
            "Unexpected errors reaching the error handler.",
            ["type"],
            registry=self.registry,
        )
        self._duplicates = Counter(
            "provision_inline_duplicates",
            "Slack deliveries dropped as duplicates.",
            registry=self.registry,
        )
        self._sessions = Gauge(
            "provision_inline_sessions",
            "Active sessions by state.",
            ["state"],
            registry=self.registry,
        )
        self._outbox = Gauge(
            "provision_inline_outbox_sessions",
            "Sessions whose Slack messages are waiting to be posted (pending), or could not be "
            "posted and were given up on (undelivered: /provision-inline status says why).",
            ["state"],
            registry=self.registry,
        )

    def observe_ack(self, kind: str, status: int, seconds: float) -> None:
        """One Slack request of ``kind`` acknowledged with ``status`` after ``seconds``."""
        # A labelled child is looked up once: ``labels()`` costs more than the count itself,
        # and this runs on every ack.
        requests = self._requests_of.get(kind)
        if requests is None:
            requests = self._requests_of[kind] = self._requests.labels(kind=kind)
        acks = self._acks_of.get(status)
        if acks is None:
            acks = self._acks_of[status] = self._acks.labels(status=str(status))
        requests.inc()
        acks.inc()
        self._ack_seconds.observe(seconds)

    def count_error(self, error_type: str) -> None:
        """An unexpected error (by class name) reached the error handler."""
        self._errors.labels(type=error_type).inc()

    def count_duplicate(self) -> None:
        """A Slack delivery was dropped as a duplicate of one already handled."""
        self._duplicates.inc()

    def render(
        self,
        sessions_by_phase: Mapping[str, int],
        accept: str = "",
        *,
        outbox: Mapping[str, int] | None = None,
    ) -> tuple[bytes, str]:
        """The exposition (body, content type) in the format ``accept`` asks for (Prometheus
        text by default), with the active sessions (and the outbox) counted just now."""
        # No await in between: a concurrent scrape never sees the gauge half set.
        self._sessions.clear()
        for phase, count in sessions_by_phase.items():
            self._sessions.labels(state=phase).set(count)
        for state, count in (outbox or {}).items():
            self._outbox.labels(state=state).set(count)
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
