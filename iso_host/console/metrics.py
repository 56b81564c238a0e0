"""Prometheus metrics (``/metrics``), in a registry of the host's own (two hosts in one test process stay apart).

Counted as answers are built (``Monitor`` passes each exchange on): requests by kind and response code, their
latency, frames rejected by the field that failed to decode, ledger commit latency. Read when scraped: open
connections, signed-on terminals, the outbox's depth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from iso_host.core.pipeline import Exchange
from iso_host.errors import WireError

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The host's metrics; ``exchange``, ``rejected`` and ``committed`` are called on the request path."""

    def __init__(self, *, connections: Callable[[], int | None], signed_on: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("iso_host_requests", "Requests answered, by kind and response code",
                                ("kind", "response_code"), registry=self.registry)  # fmt: skip
        self.latency = Histogram("iso_host_request_latency_seconds", "From a frame's arrival to its answer",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.rejected_frames = Counter("iso_host_frames_rejected", "Frames that did not decode, by the failing field",
                                       ("field",), registry=self.registry)  # fmt: skip
        self.commits = Histogram("iso_host_ledger_commit_seconds", "A request's ledger commit, as the host waited",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.connections = Gauge("iso_host_open_connections", "Client connections open now (this process's edge)",
                                 registry=self.registry)  # fmt: skip
        self.signed_on = Gauge("iso_host_signed_on_terminals", "Configured terminals signed on now",
                               registry=self.registry)  # fmt: skip
        self.outbox = Gauge("iso_host_outbox_depth", "Events in the outbox not yet acknowledged by the broker",
                            registry=self.registry)  # fmt: skip
        self._connections = connections
        self._signed_on = signed_on

    def exchange(self, exchange: Exchange, latency_s: float) -> None:
        self.requests.labels(exchange.kind or "unclassified", exchange.response_code or "none").inc()
        self.latency.observe(latency_s)

    def rejected(self, error: WireError) -> None:
        self.rejected_frames.labels(error.field).inc()

    def committed(self, seconds: float) -> None:
        self.commits.observe(seconds)

    def render(self, outbox_depth: int | None) -> bytes:
        """The text exposition format, with the gauges read now."""
        connections = self._connections()
        if connections is not None:
            self.connections.set(connections)
        self.signed_on.set(self._signed_on())
        if outbox_depth is not None:
            self.outbox.set(outbox_depth)
        return generate_latest(self.registry)
