"""Prometheus metrics (``/metrics``), counted in plain Python on the request path and handed to prometheus-client only
when scraped.

prometheus-client's own counters and histograms take a lock and look up their labels at every call (a few
microseconds each, three or four calls a request); here a request costs a dict increment and a bisect, and the
exposition (a registry of the host's own, so two hosts in one test process stay apart) reads the counts at scrape
time. Counted as answers are built: requests by kind and response code, their latency, frames rejected by the field
that failed to decode, ledger commit latency. Read when scraped: open connections, signed-on terminals, the outbox.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from iso_host.core.outcome import Exchange
from iso_host.errors import WireError

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Timings:
    """A histogram's counts: one per bucket (the last one past every bound), their sum."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.total)


class Metrics(Collector):
    """The host's metrics; ``exchange``, ``rejected`` and ``committed`` are called on the request path."""

    def __init__(self, *, connections: Callable[[], int | None], signed_on: Callable[[], int]) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.latency = Timings()
        self.rejected_frames: Counter[str] = Counter()
        self.commits = Timings()
        self.outbox_depth: int | None = None
        self._connections = connections
        self._signed_on = signed_on
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def exchange(self, exchange: Exchange, latency_s: float) -> None:
        self.requests[exchange.kind or "unclassified", exchange.response_code or "none"] += 1
        self.latency.observe(latency_s)

    def rejected(self, error: WireError) -> None:
        self.rejected_frames[error.field] += 1

    def committed(self, seconds: float) -> None:
        self.commits.observe(seconds)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily("iso_host_requests", "Requests answered, by kind and response code",
                                       labels=("kind", "response_code"))  # fmt: skip
        for (kind, code), count in sorted(self.requests.items()):
            requests.add_metric((kind, code), count)
        yield requests
        yield self.latency.family("iso_host_request_latency_seconds", "From a frame's arrival to its answer")
        rejected = CounterMetricFamily("iso_host_frames_rejected", "Frames that did not decode, by the failing field",
                                       labels=("field",))  # fmt: skip
        for field_id, count in sorted(self.rejected_frames.items()):
            rejected.add_metric((field_id,), count)
        yield rejected
        yield self.commits.family("iso_host_ledger_commit_seconds", "A request's ledger commit, as the host waited")
        connections = self._connections()
        if connections is not None:
            yield GaugeMetricFamily("iso_host_open_connections", "Client connections open now (this process's edge)",
                                    value=connections)  # fmt: skip
        yield GaugeMetricFamily("iso_host_signed_on_terminals", "Configured terminals signed on now",
                                value=self._signed_on())  # fmt: skip
        if self.outbox_depth is not None:
            yield GaugeMetricFamily("iso_host_outbox_depth", "Events in the outbox the broker has not acknowledged",
                                    value=self.outbox_depth)  # fmt: skip

    def render(self, outbox_depth: int | None) -> bytes:
        """The text exposition format, with the gauges read now."""
        self.outbox_depth = outbox_depth
        return generate_latest(self.registry)
