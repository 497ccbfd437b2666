"""Prometheus text exposition of the gateway's counters, without a client library: a handful
of counters and one latency histogram, rendered on demand."""

from __future__ import annotations

import bisect
from collections import Counter

#: seconds; the floors are about the first milliseconds, so the low buckets are fine
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in pairs) + "}"


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[tuple[str, str], ...]] = Counter()
        self.actions: Counter[tuple[tuple[str, str], ...]] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.gauges: dict[str, tuple[str, callable]] = {}

    def request(self, route: str, status: int, action: str, seconds: float) -> None:
        self.requests[(("route", route), ("status", str(status)))] += 1
        self.actions[(("action", action),)] += 1
        self.latency.setdefault(route, Histogram()).observe(seconds)

    def gauge(self, name: str, help_text: str, read) -> None:
        self.gauges[name] = (help_text, read)

    def render(self) -> str:
        out = ["# HELP distillguard_requests_total Requests answered, by route and status.",
               "# TYPE distillguard_requests_total counter"]
        out += [f"distillguard_requests_total{_labels(k)} {v}" for k, v in sorted(self.requests.items())]
        out += ["# HELP distillguard_actions_total Requests by the enforcement action applied.",
                "# TYPE distillguard_actions_total counter"]
        out += [f"distillguard_actions_total{_labels(k)} {v}" for k, v in sorted(self.actions.items())]
        out += ["# HELP distillguard_request_duration_seconds Time from request to last byte sent.",
                "# TYPE distillguard_request_duration_seconds histogram"]
        for route, h in sorted(self.latency.items()):
            running = 0
            for bound, count in zip((*BUCKETS, float("inf")), h.counts):
                running += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                out.append(f"distillguard_request_duration_seconds_bucket{_labels((('route', route), ('le', le)))} "
                           f"{running}")
            out.append(f"distillguard_request_duration_seconds_sum{_labels((('route', route),))} {h.total:.6f}")
            out.append(f"distillguard_request_duration_seconds_count{_labels((('route', route),))} {h.n}")
        for name, (help_text, read) in sorted(self.gauges.items()):
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {read()}"]
        return "\n".join(out) + "\n"
