"""Prometheus metrics in the text exposition format: requests and latencies per route,
collection sizes, insert job progress."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Metrics", "BUCKETS"]

#: Latency histogram buckets, in seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._latency: dict[tuple[str, str], list[int]] = {}
        self._latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self._latency_count: dict[tuple[str, str], int] = defaultdict(int)
        self.gauges: list[Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]] = []

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            key = (method, route)
            buckets = self._latency.setdefault(key, [0] * (len(BUCKETS) + 1))
            buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            self._latency_sum[key] += seconds
            self._latency_count[key] += 1

    def render(self) -> str:
        lines: list[str] = [
            "# HELP lookalike_http_requests_total HTTP requests by method, route and status.",
            "# TYPE lookalike_http_requests_total counter",
        ]
        with self._lock:
            requests = dict(self._requests)
            latency = {k: list(v) for k, v in self._latency.items()}
            sums = dict(self._latency_sum)
            counts = dict(self._latency_count)
        for (method, route, status), count in sorted(requests.items()):
            lines.append(
                f'lookalike_http_requests_total{{method="{method}",route="{_label(route)}",status="{status}"}} {count}'
            )
        lines += [
            "# HELP lookalike_http_request_duration_seconds Request latency by method and route.",
            "# TYPE lookalike_http_request_duration_seconds histogram",
        ]
        for (method, route), buckets in sorted(latency.items()):
            labels = f'method="{method}",route="{_label(route)}"'
            running = 0
            for bound, count in zip(BUCKETS, buckets, strict=False):
                running += count
                lines.append(f'lookalike_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {running}')
            running += buckets[-1]
            lines.append(f'lookalike_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {running}')
            lines.append(f"lookalike_http_request_duration_seconds_sum{{{labels}}} {sums[(method, route)]:.6f}")
            lines.append(f"lookalike_http_request_duration_seconds_count{{{labels}}} {counts[(method, route)]}")
        seen: set[str] = set()
        for gauge in self.gauges:
            for name, help_text, gauge_labels, value in gauge():
                if name not in seen:
                    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
                    seen.add(name)
                rendered = ",".join(f'{k}="{_label(v)}"' for k, v in gauge_labels.items())
                lines.append(f"{name}{{{rendered}}} {value}" if rendered else f"{name} {value}")
        return "\n".join(lines) + "\n"


def route_of(scope: dict[str, Any]) -> str:
    """The route template of a request (bounded cardinality), or "unmatched"."""
    template = scope.get("path_template")
    return str(template) if template else "unmatched"
