"""The health/readiness/metrics server every service runs (infra/observability.py), in process."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from icu.settings import ObservabilitySettings, load_settings
from infra.observability import (
    HEALTH_PATH,
    METRICS_PATH,
    READY_PATH,
    Observability,
    by_label,
    scrape_metric,
    start_observability,
)
from infra.ports import free_port
from tests.http import http_get


@pytest.fixture
def served():
    observability = Observability("test", stale_after_s=0.3).serve("127.0.0.1", free_port())
    yield observability
    observability.close()


def test_off_unless_a_port_is_set(monkeypatch):
    monkeypatch.delenv("ICU_METRICS_PORT", raising=False)
    assert start_observability(load_settings(ObservabilitySettings), "x").port is None
    monkeypatch.setenv("ICU_METRICS_PORT", "0")
    assert start_observability(load_settings(ObservabilitySettings), "x").port is None


def test_health_follows_the_loop_ticks(served):
    served.health.tick()
    status, body = http_get(served.port, HEALTH_PATH)
    assert status == 200
    assert json.loads(body)["service"] == "test"
    time.sleep(0.4)  # longer than stale_after_s without a tick: a wedged loop
    assert http_get(served.port, HEALTH_PATH)[0] == 503
    served.health.tick()
    assert http_get(served.port, HEALTH_PATH)[0] == 200
    assert http_get(served.port, "/nope")[0] == 404


def test_ready_needs_every_condition(served):
    served.health.tick()
    assert http_get(served.port, READY_PATH)[0] == 503  # nothing registered yet: not ready
    served.health.set("kafka", True, "topics present")
    database = {"up": False}
    served.health.check("database", lambda: (database["up"], "checked"))
    status, body = http_get(served.port, READY_PATH)
    assert status == 503
    assert json.loads(body)["conditions"]["database"] == {"ok": False, "detail": "checked"}
    database["up"] = True
    assert http_get(served.port, READY_PATH)[0] == 200
    served.health.check("broken", lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    status, body = http_get(served.port, READY_PATH)
    assert status == 503
    assert "ZeroDivisionError" in json.loads(body)["conditions"]["broken"]["detail"]


def test_metrics_read_the_services_own_counters(served):
    stats = {"handled": 0}
    versions: Counter[tuple[str, str]] = Counter()
    served.counter_from("icu_test_handled", "Handled.", lambda: [((), stats["handled"])])
    served.counter_from("icu_test_versions", "By code.", lambda: by_label(versions), ("code", "priority"))
    latency = served.histogram("icu_test_latency_seconds", "Latency.")
    stats["handled"] = 7
    versions[("NEWS2", "high")] += 2
    latency.observe(0.2)
    status, text = http_get(served.port, METRICS_PATH)
    assert status == 200
    assert "icu_test_handled_total 7.0" in text
    assert 'icu_test_versions_total{code="NEWS2",priority="high"} 2.0' in text
    assert 'icu_test_latency_seconds_bucket{le="0.25"} 1.0' in text
    assert "icu_test_latency_seconds_count 1.0" in text


def test_scrape_metric_reads_one_series_and_says_none_when_nothing_answers(served):
    served.counter_from("icu_test_handled", "Handled.", lambda: [((), 7.0)])
    served.gauge_from("icu_test_beds", "Beds.", lambda: [(("w1",), 3.0)], ("worker",))
    assert scrape_metric(served.port, "icu_test_handled_total") == 7.0
    assert scrape_metric(served.port, "icu_test_beds") == 3.0  # labelled series
    assert scrape_metric(served.port, "icu_test_handled") is None  # a name is matched whole
    assert scrape_metric(served.port, "icu_test_missing") is None
    assert scrape_metric(free_port(), "icu_test_handled_total") is None  # no server on the port
