"""Prometheus metrics of one app instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "http_requests", "HTTP requests by route, task and status code", ["route", "task", "status"], registry=r
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Request latency by route and task",
            ["route", "task"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # gRPC calls, under the names of go-grpc-prometheus (what gRPC dashboards and alerts expect).
        self.grpc_handled = Counter(
            "grpc_server_handled",
            "gRPC calls completed, by service, method and status code",
            ["grpc_service", "grpc_method", "grpc_code"],
            registry=r,
        )
        self.grpc_latency = Histogram(
            "grpc_server_handling_seconds",
            "gRPC call latency by service and method",
            ["grpc_service", "grpc_method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter("images_classified", "Images classified by task", ["task"], registry=r)
        self.batch_size = Histogram("batch_size", "Images per model call", ["task"], buckets=_BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "batch_queue_wait_seconds",
            "Time an image waited for its model call",
            ["task"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("batch_queue_depth", "Images waiting for a model call", ["task"], registry=r)
        self.inference = Histogram(
            "model_inference_seconds", "Duration of one model call", ["task"], buckets=_FAST_BUCKETS, registry=r
        )
        self.decode = Histogram(
            "image_decode_seconds",
            "Decode, orient and resize time per image",
            ["task"],
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.large_decodes = Counter(
            "image_large_decodes", "Images decoded in the one-at-a-time lane for large decodes", registry=r
        )
        self.large_decode_waiting = Gauge(
            "image_large_decode_waiting", "Large images waiting for (or in) the large-decode lane", registry=r
        )
        self.spans_dropped = Counter(
            "trace_spans_dropped",
            "Trace spans lost: the export queue was full, or the collector failed or did not answer",
            ["reason"],
            registry=r,
        )
        self.model_ready = Gauge(
            "model_ready", "1 when the task's model is loaded and warmed", ["task", "version"], registry=r
        )
        # --- flagged uploads (app.core.flagged) ----------------------------------------------------------
        self.flagged_saved = Counter(
            "flagged_uploads_saved", "Flagged uploads written to the flagged store, by task", ["task"], registry=r
        )
        self.flagged_repeated = Counter(
            "flagged_uploads_repeated",
            "Flagged uploads already stored (same content): their JSON refreshed, by task",
            ["task"],
            registry=r,
        )
        self.flagged_dropped = Counter(
            "flagged_uploads_dropped",
            "Flagged uploads not stored, by reason: queue_full, too_large, write_error, shutdown",
            ["reason"],
            registry=r,
        )
        self.flagged_errors = Counter(
            "flagged_store_errors",
            "Errors writing or pruning the flagged store, by kind (errno name, or exception class)",
            ["kind"],
            registry=r,
        )
        self.flagged_evicted = Counter(
            "flagged_uploads_evicted", "Stored flagged uploads deleted, oldest first, to stay under the cap", registry=r
        )
        self.flagged_bytes = Gauge("flagged_store_bytes", "Bytes the flagged store takes (images and JSON)", registry=r)
        self.flagged_pending = Gauge("flagged_queue_depth", "Flagged uploads waiting to be written", registry=r)
        # --- end flagged uploads ------------------------------------------------------------------------
        self.load_failures = Counter(
            "model_load_failures",
            "Model versions refused at load (logged once, tried again when they change)",
            ["task"],
            registry=r,
        )

    def watch_drift(self, monitor: Any, models: Callable[[], list[Any]]) -> None:
        """Export every served model's drift (`app.core.drift.Monitor.assess`) as gauges, computed at scrape."""
        self.registry.register(_DriftCollector(monitor, models))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _DriftCollector(Collector):
    """Drift, flagged share and estimated accuracy per served version, as Prometheus reads them: computed from
    the window when scraped (a few scipy tests per model), absent while the window is too small."""

    def __init__(self, monitor: Any, models: Callable[[], list[Any]]) -> None:
        self._monitor, self._models = monitor, models

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["task", "version"]
        families = {
            "drift": GaugeMetricFamily(
                "model_drift", "1 when the recent traffic drifted from validation, 0 when not", labels=labels
            ),
            "images": GaugeMetricFamily("model_drift_window_images", "Images in the drift window", labels=labels),
            "flagged": GaugeMetricFamily(
                "model_flagged_share", "Share of the window's images flagged out of distribution", labels=labels
            ),
            "expected": GaugeMetricFamily(
                "model_expected_flagged_share", "Share of genuine images the threshold flags on average", labels=labels
            ),
            "estimated": GaugeMetricFamily(
                "model_estimated_accuracy",
                "Mean calibrated top-class confidence of the window's unflagged images",
                labels=labels,
            ),
            "test": GaugeMetricFamily("model_test_accuracy", "Test accuracy recorded at export", labels=labels),
            "p": GaugeMetricFamily("model_drift_p_value", "p-value of each drift test", labels=[*labels, "test"]),
        }
        for model in self._models():
            report = self._monitor.assess(model)
            key = [report["task"], str(report["version"])]
            families["images"].add_metric(key, report["window"]["images"])
            if report["drift"] is not None:
                families["drift"].add_metric(key, 1.0 if report["drift"] else 0.0)
            if report["flagged_share"] is not None:
                families["flagged"].add_metric(key, report["flagged_share"])
            if report["expected_flagged_share"] is not None:
                families["expected"].add_metric(key, report["expected_flagged_share"])
            estimated = report["estimated_accuracy"]
            if estimated["value"] is not None:
                families["estimated"].add_metric(key, estimated["value"])
            if isinstance(estimated["test_accuracy"], int | float):
                families["test"].add_metric(key, float(estimated["test_accuracy"]))
            for name, test in report["tests"].items():
                families["p"].add_metric([*key, name], test["p_value"])
        yield from families.values()
