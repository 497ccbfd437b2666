"""The gateway's Prometheus metrics (prometheus_client, one registry per gateway).

Counters are Counters (names end in ``_total``; a scraper's ``rate()`` needs to know that they
only go up), the one latency histogram is a Histogram, and what is read from elsewhere at scrape
time (the exchange log's counts, the verdicts loaded) is collected then, typed by what it is.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

#: seconds; the floors are about the first milliseconds, so the low buckets are fine
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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
    """``request`` on the request path (a few dictionary lookups and three increments)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter("distillguard_requests", "Requests answered, by route and status.",
                                 ["route", "status"], registry=self.registry)
        self._actions = Counter("distillguard_actions", "Requests by the enforcement action applied.",
                                ["action"], registry=self.registry)
        self._latency = Histogram("distillguard_request_duration_seconds", "Time from request to last byte sent.",
                                  ["route"], buckets=BUCKETS, registry=self.registry)
        self._read = _ReadAtScrape()
        self.registry.register(self._read)
        # the labelled children, looked up once: labels() costs more than the increment
        self._children: dict[tuple, tuple] = {}

    def request(self, route: str, status: int, action: str, seconds: float) -> None:
        key = (route, status, action)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self._requests.labels(route, str(status)),
                                              self._actions.labels(action), self._latency.labels(route))
        children[0].inc()
        children[1].inc()
        children[2].observe(seconds)

    def counter(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A count kept elsewhere that only goes up (``name`` ends in ``_total``)."""
        assert name.endswith("_total"), name
        self._read.counters[name] = (help_text, read)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self._read.gauges[name] = (help_text, read)

    def render(self) -> str:
        return generate_latest(self.registry).decode()
