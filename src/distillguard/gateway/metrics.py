"""The gateway's Prometheus metrics (prometheus_client, one registry per gateway).

Counters are counters (names end in ``_total``; a scraper's ``rate()`` needs to know that they
only go up), the one latency histogram is a histogram, and what is read from elsewhere at scrape
time (the exchange log's counts, the verdicts loaded) is collected then, typed by what it is.

The request path only adds to plain numbers (``Metrics.request``); they become metric families
when /metrics is scraped. A prometheus_client ``Counter`` or ``Histogram`` child takes a lock per
increment and the histogram walks its buckets in Python, which cost the request path more than
the rest of its counting together; the families rendered are the same.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

#: seconds; the floors are about the first milliseconds, so the low buckets are fine
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: the histogram's bucket labels, +Inf last (as prometheus_client writes them)
_LE: tuple[str, ...] = (*(floatToGoString(b) for b in BUCKETS), "+Inf")


@dataclass
class _Latency:
    """One route's latency histogram: the count per bucket (an observation lands in the first
    bucket whose bound it does not exceed, +Inf last) and the sum of the seconds observed."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0


class _Requests(Collector):
    """The request path's counts (Metrics.request) as Prometheus families, built at scrape time."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.actions: dict[str, int] = {}
        self.latency: dict[str, _Latency] = {}

    def collect(self):
        requests = CounterMetricFamily("distillguard_requests", "Requests answered, by route and status.",
                                       labels=["route", "status"])
        for (route, status), count in list(self.requests.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        actions = CounterMetricFamily("distillguard_actions", "Requests by the enforcement action applied.",
                                      labels=["action"])
        for action, count in list(self.actions.items()):
            actions.add_metric([action], count)
        yield actions
        latency = HistogramMetricFamily("distillguard_request_duration_seconds",
                                        "Time from request to last byte sent.", labels=["route"])
        for route, histogram in list(self.latency.items()):
            running, buckets = 0, []
            for le, count in zip(_LE, list(histogram.counts)):
                running += count
                buckets.append((le, running))
            latency.add_metric([route], buckets, histogram.total)
        yield latency


class _ReadAtScrape(Collector):
    """Values kept by other parts of the gateway, read when /metrics is scraped."""

    def __init__(self) -> None:
        self.counters: dict[str, tuple[str, Callable[[], float]]] = {}
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def collect(self):
        for name, (help_text, read) in sorted(self.counters.items()):
            family = CounterMetricFamily(name.removesuffix("_total"), help_text)
            family.add_metric([], read())
            yield family
        for name, (help_text, read) in sorted(self.gauges.items()):
            family = GaugeMetricFamily(name, help_text)
            family.add_metric([], read())
            yield family


class Metrics:
    """``request`` on the request path: a few dictionary updates, no lock (the gateway counts on
    its event loop, where /metrics is rendered too)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counts = _Requests()
        self.registry.register(self._counts)
        self._read = _ReadAtScrape()
        self.registry.register(self._read)

    def request(self, route: str, status: int, action: str, seconds: float) -> None:
        counts = self._counts
        key = (route, status)
        counts.requests[key] = counts.requests.get(key, 0) + 1
        counts.actions[action] = counts.actions.get(action, 0) + 1
        histogram = counts.latency.get(route)
        if histogram is None:
            histogram = counts.latency[route] = _Latency()
        histogram.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        histogram.total += seconds

    def counter(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A count kept elsewhere that only goes up (``name`` ends in ``_total``)."""
        assert name.endswith("_total"), name
        self._read.counters[name] = (help_text, read)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self._read.gauges[name] = (help_text, read)

    def render(self) -> str:
        return generate_latest(self.registry).decode()
