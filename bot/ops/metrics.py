"""Prometheus text exposition for ``/metrics``: requests, acks, errors, sessions by state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Metrics"]

_ACK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class Metrics:
    requests: Counter[str] = field(default_factory=Counter)  # by payload kind
    acks: Counter[str] = field(default_factory=Counter)  # by HTTP status of the ack
    errors: Counter[str] = field(default_factory=Counter)  # by error class
    duplicates: int = 0
    ack_bucket_counts: list[int] = field(default_factory=lambda: [0] * len(_ACK_BUCKETS))
    ack_seconds_sum: float = 0.0
    ack_count: int = 0

    def observe_ack(self, kind: str, status: int, seconds: float) -> None:
        self.requests[kind] += 1
        self.acks[str(status)] += 1
        self.ack_seconds_sum += seconds
        self.ack_count += 1
        for index, bound in enumerate(_ACK_BUCKETS):
            if seconds <= bound:
                self.ack_bucket_counts[index] += 1

    def render(self, sessions_by_phase: Mapping[str, int]) -> str:
        lines = [
            "# HELP provision_inline_requests_total Slack requests received, by payload kind.",
            "# TYPE provision_inline_requests_total counter",
            *(
                f'provision_inline_requests_total{{kind="{_escape(kind)}"}} {count}'
                for kind, count in sorted(self.requests.items())
            ),
            "# HELP provision_inline_acks_total Acknowledgements sent to Slack, by HTTP status.",
            "# TYPE provision_inline_acks_total counter",
            *(
                f'provision_inline_acks_total{{status="{status}"}} {count}'
                for status, count in sorted(self.acks.items())
            ),
            "# HELP provision_inline_ack_seconds Time from request to acknowledgement.",
            "# TYPE provision_inline_ack_seconds histogram",
            *(
                f'provision_inline_ack_seconds_bucket{{le="{bound}"}} {count}'
                for bound, count in zip(_ACK_BUCKETS, self.ack_bucket_counts, strict=True)
            ),
            f'provision_inline_ack_seconds_bucket{{le="+Inf"}} {self.ack_count}',
            f"provision_inline_ack_seconds_sum {self.ack_seconds_sum:.6f}",
            f"provision_inline_ack_seconds_count {self.ack_count}",
            "# HELP provision_inline_errors_total Unexpected errors reaching the error handler.",
            "# TYPE provision_inline_errors_total counter",
            *(
                f'provision_inline_errors_total{{type="{_escape(kind)}"}} {count}'
                for kind, count in sorted(self.errors.items())
            ),
            "# HELP provision_inline_duplicates_total Slack deliveries dropped as duplicates.",
            "# TYPE provision_inline_duplicates_total counter",
            f"provision_inline_duplicates_total {self.duplicates}",
            "# HELP provision_inline_sessions Active sessions by state.",
            "# TYPE provision_inline_sessions gauge",
            *(
                f'provision_inline_sessions{{state="{phase}"}} {count}'
                for phase, count in sorted(sessions_by_phase.items())
            ),
        ]
        return "\n".join(lines) + "\n"
