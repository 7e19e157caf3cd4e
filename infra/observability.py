"""Health, readiness and Prometheus metrics for every long-running service.

One small HTTP server per process (``ICU_METRICS_PORT``; off unless set, so tests and `icu up`
never clash on a port) serves:

- ``/healthz``: 200 while the service's loop has ticked within ``ICU_HEALTH_STALE_S`` (the
  process is alive *and* making progress; a wedged poll loop or a blocked event loop fails it,
  and the orchestrator restarts the process);
- ``/readyz``: 200 once every readiness condition the service registered holds (broker reached
  and topics present, database schema current, model loaded, ...), with a JSON body naming each;
- ``/metrics``: the Prometheus text format.

Services keep counting in their own stats objects; :meth:`Observability.gauge_from` and
:meth:`Observability.counter_from` read them at scrape time, so the hot paths gain no work.
Only what cannot be derived from a running total (latency histograms, counts by label) is
observed directly. The server runs on a daemon thread and works the same for threaded and
asyncio services.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from icu.settings import ObservabilitySettings
from infra.errors import InfraError

if TYPE_CHECKING:
    from icu.kafka import ConsumeLoop

log = logging.getLogger(__name__)

HEALTH_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"
METRICS_PATH: Final = "/metrics"
PATHS: Final = frozenset({HEALTH_PATH, READY_PATH, METRICS_PATH})
"""Every path the server answers; the deployment tests check the probes against it."""

LATENCY_BUCKETS_S: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

Samples = Iterable[tuple[Sequence[str], float]]
"""(label values, value) pairs, one per series of a metric."""


class Health:
    """Liveness (a loop that ticks) and readiness (named conditions that must all hold)."""

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self._last_tick = time.monotonic()
        self._lock = threading.Lock()
        self._conditions: dict[str, tuple[bool, str]] = {}
        self._checks: dict[str, Callable[[], tuple[bool, str]]] = {}

    def tick(self) -> None:
        """Called by the service's main loop each round: it is alive and not stuck."""
        self._last_tick = time.monotonic()

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        """Set a readiness condition, e.g. ``set("kafka", True, "topics present")``."""
        with self._lock:
            self._conditions[name] = (ok, detail)

    def check(self, name: str, probe: Callable[[], tuple[bool, str]]) -> None:
        """A readiness condition evaluated at each request (must be cheap and thread-safe)."""
        with self._lock:
            self._checks[name] = probe

    def live(self) -> tuple[bool, dict[str, Any]]:
        silent = time.monotonic() - self._last_tick
        ok = silent <= self.stale_after_s
        return ok, {"status": "ok" if ok else "stale", "last_tick_s": round(silent, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            conditions = dict(self._conditions)
            checks = dict(self._checks)
        for name, probe in checks.items():
            try:
                conditions[name] = probe()
            except Exception as exc:  # a failing probe means not ready, never a crashed server
                conditions[name] = (False, f"{type(exc).__name__}: {exc}")
        live, _ = self.live()
        ok = bool(conditions) and live and all(state for state, _ in conditions.values())
        body = {name: {"ok": state, "detail": detail} for name, (state, detail) in sorted(conditions.items())}
        return ok, {"status": "ready" if ok else "not ready", "live": live, "conditions": body}


@dataclass(frozen=True)
class _CallbackMetric(Collector):
    """A metric whose series are read from the service's own stats at scrape time."""

    name: str
    documentation: str
    kind: Literal["counter", "gauge"]
    labels: tuple[str, ...]
    read: Callable[[], Samples]

    def collect(self) -> Iterable[Metric]:
        family: CounterMetricFamily | GaugeMetricFamily
        if self.kind == "counter":
            family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        else:
            family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, value in self.read():
            family.add_metric(list(values), value)
        yield family

    def describe(self) -> Iterable[Metric]:
        return []  # series are only known at scrape time


class Observability:
    """The registry, the health state and (when a port is set) the HTTP server of one service."""

    def __init__(self, service: str, *, stale_after_s: float = 30.0) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=False)
        self.health = Health(stale_after_s)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- metrics ------------------------------------------------------------------------------

    def counter_from(
        self, name: str, documentation: str, read: Callable[[], Samples], labels: Sequence[str] = ()
    ) -> None:
        """A counter read from a running total the service already keeps (``name`` without ``_total``)."""
        self.registry.register(_CallbackMetric(name, documentation, "counter", tuple(labels), read))

    def gauge_from(
        self, name: str, documentation: str, read: Callable[[], Samples], labels: Sequence[str] = ()
    ) -> None:
        self.registry.register(_CallbackMetric(name, documentation, "gauge", tuple(labels), read))

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, documentation, labelnames=tuple(labels), registry=self.registry)

    def histogram(
        self, name: str, documentation: str, buckets: Sequence[float] = LATENCY_BUCKETS_S, labels: Sequence[str] = ()
    ) -> Histogram:
        return Histogram(name, documentation, labelnames=tuple(labels), buckets=tuple(buckets), registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- the server ---------------------------------------------------------------------------

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_address[1])

    def serve(self, host: str, port: int) -> Observability:
        """Serve /healthz, /readyz and /metrics on ``host:port`` from a daemon thread."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == METRICS_PATH:
                    self._send(200, owner.render(), CONTENT_TYPE_LATEST)
                elif path in (HEALTH_PATH, READY_PATH):
                    ok, body = owner.health.live() if path == HEALTH_PATH else owner.health.ready()
                    payload = json.dumps({"service": owner.service, **body}).encode()
                    self._send(200 if ok else 503, payload, "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would bury the service's own log

        try:
            server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise InfraError(
                f"cannot serve metrics on {host}:{port} (ICU_METRICS_HOST/ICU_METRICS_PORT): {exc.strerror}"
            ) from None
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="observability", daemon=True)
        self._thread.start()
        log.info("health and metrics on http://%s:%d (%s, %s, %s)", host, self.port, HEALTH_PATH, READY_PATH,
                 METRICS_PATH)  # fmt: skip
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def start_observability(settings: ObservabilitySettings, service: str) -> Observability:
    """The service's observability; the HTTP server runs only when ``ICU_METRICS_PORT`` is set."""
    observability = Observability(service, stale_after_s=settings.health_stale_s)
    if settings.metrics_port:
        observability.serve(settings.metrics_host, settings.metrics_port)
    return observability


def scrape_metric(port: int, name: str, *, host: str = "127.0.0.1", timeout_s: float = 2.0) -> float | None:
    """The value of ``name``'s first series (any labels) on a service's /metrics; None while the
    server does not answer or has no such series (benchmarks and tests watching a process)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{METRICS_PATH}", timeout=timeout_s) as response:
            body = response.read().decode()
    except OSError:  # refused while the process starts, or an HTTP error status
        return None
    found = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", body, re.MULTILINE)
    return float(found.group(1)) if found else None


def by_label(counts: Mapping[Any, float]) -> Samples:
    """Samples from a mapping of label value (or tuple of them) to value."""
    return [((key,) if isinstance(key, str) else tuple(key), float(value)) for key, value in list(counts.items())]


def stat_sample(stats: object, field: str) -> Samples:
    """The one unlabelled sample of a counter kept as ``stats.<field>``."""
    return [((), float(getattr(stats, field)))]


def watch_consume_loop(observability: Observability, loop: ConsumeLoop, stage: str) -> None:
    """Liveness from the loop's polls, and the metrics every consume loop has: records handled,
    dead letters, retried batches, lag per partition (``stage`` labels them)."""
    loop.heartbeat = observability.health.tick
    stats = loop.stats
    labels = ("stage",)
    observability.counter_from(
        "icu_consumed_records", "Records handled by the stage.", lambda: [((stage,), stats.handled)], labels
    )
    observability.counter_from(
        "icu_dead_letters", "Records sent to the dead-letter topic.", lambda: [((stage,), stats.dead_lettered)], labels
    )
    observability.counter_from(
        "icu_batch_retries", "Batch attempts that failed and were retried.", lambda: [((stage,), stats.retries)], labels
    )
    observability.gauge_from(
        "icu_consumer_lag",
        "Records behind the high watermark after the last batch, per owned partition.",
        lambda: [((stage, tp.topic, str(tp.partition)), float(lag)) for tp, lag in list(loop.lag.items())],
        ("stage", "topic", "partition"),
    )
