"""Prometheus metrics of one server process (prometheus_client, one registry per app).

With several uvicorn workers each process answers /metrics for itself; scrape each replica, or
sum per `instance` in Prometheus.
"""

from __future__ import annotations

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The server's counters, histograms and gauges; `render()` is the text exposition format."""

    def __init__(self, queue_depth, inflight, admitted, cached_supports, encodes):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # the *_created series only double the output

        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "edgefss_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "edgefss_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predict = Histogram(
            "edgefss_predict_seconds",
            "model time of one prediction (Segmenter.predict)",
            ["bundle"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "edgefss_rejected", "requests refused with 429 by reason", ["reason"], registry=r
        )
        self.frames = Counter("edgefss_stream_frames", "frames sent on MJPEG streams", registry=r)
        Gauge("edgefss_queue_depth", "admitted requests waiting for a compute slot", registry=r).set_function(
            queue_depth
        )
        Gauge("edgefss_inflight", "predictions running now", registry=r).set_function(inflight)
        Gauge(
            "edgefss_admitted",
            "requests admitted to compute routes (running, waiting or still uploading)",
            registry=r,
        ).set_function(admitted)
        Gauge(
            "edgefss_support_sets_cached", "support sets encoded and cached in this process", registry=r
        ).set_function(cached_supports)
        Gauge(
            "edgefss_support_encodes", "support sets encoded by this process since start", registry=r
        ).set_function(encodes)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
