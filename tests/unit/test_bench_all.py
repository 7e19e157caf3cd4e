"""`icu bench all`'s table: rows from each stage's result, ratios worked by hand, failures as rows.

The result dicts below have exactly the keys the stage benchmarks return (infra/bench.py,
simulator/bench.py, ingest/bench.py, inference/bench.py, alerts/bench.py, dashboard/bench.py);
the broker, sim and ingest ones are copied from a real `icu bench all --quick` run.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from icu.cli import main
from infra.bench_all import STAGES, Row, bench_all, format_table, rows_from

BROKER: dict[str, Any] = {
    "broker_start_ms_median": 10.7,
    "topics_create_ms_median": 14.9,
    "topics": 10,
    "partitions_total": 75,
    "repeats": 3,
    "runs": {"broker_start_ms": [10.7, 10.9, 10.1], "topics_create_ms": [14.9, 15.2, 14.1]},
}
DB: dict[str, Any] = {
    "backend": "plain",
    "rows": 200_000,
    "batch": 5_000,
    "repeats": 5,
    "raw_copy_rows_per_s_median": 340_000,
    "write_path_rows_per_s_median": 244_800,
    "write_path_over_raw_copy": 0.72,
    "redelivered_rows_per_s_median": 140_000,
    "redelivered_over_raw_copy": 0.412,
    "runs": {"raw_copy": [340_000], "write_path": [244_800], "redelivered": [140_000]},
    "database": "127.0.0.1",
}
SIM: dict[str, Any] = {
    "size": "320x240",
    "frames_per_repeat": 300,
    "repeats": 3,
    "render_ms_per_frame_median": 1.083,
    "render_ms_per_frame_runs": [1.111, 1.005, 1.083],
    "render_target_ms": 2.0,
    "render_ratio_to_target": 0.542,
    "jpeg_encode_ms_per_frame_median": 0.198,
    "h264_encode_ms_per_frame_median": 0.883,
    "beds_per_core_at_10fps_render_plus_jpeg": 78.0,
}
INGEST: dict[str, Any] = {
    "cameras": 32,
    "fps_per_camera": 10.0,
    "frame_size": "320x240",
    "repeats": 1,
    "seconds_per_run": 5.0,
    "realtime": {
        "frames_per_s_offered": 320.0,
        "frames_per_s_delivered": 321.2,
        "delivered_ratio": 1.004,
        "dropped_per_s": 0.0,
        "cpu_cores": 0.446,
        "cpu_per_camera_cores": 0.0139,
        "cameras_per_core_at_fps": 71.8,
        "target_cameras_per_core": 32,
        "capture_to_broker_p50_ms": 15.5,
        "capture_to_broker_p99_ms": 27.8,
    },
    "unpaced": {"frames_per_s": 1200.8, "cpu_cores": 1.326, "frames_per_s_per_core": 905.7},
    "raw_producer": {"message_bytes": 10366, "msgs_per_s": 9226.6, "unpaced_ingest_over_raw_producer": 0.13},
    "runs": {"realtime_frames_per_s": [321.2]},
}
INFERENCE: dict[str, Any] = {
    "device": "cpu",
    "model": "temporal-small",
    "torch_threads": 2,
    "beds": 8,
    "fps_per_bed": 10,
    "raw": {
        # The best batch is not the largest: the table must take the maximum, not the last.
        "encode_frames_per_s_by_batch": {"1": 120.0, "8": 300.0, "32": 365.0, "128": 360.0},
        "heads_windows_per_s_by_batch": {"1": 310.0, "8": 1500.0, "32": 1811.0},
    },
    "worker_live": {
        "frames_sent": 1600,
        "frames_processed": 1600,
        "frames_processed_per_s": 79.6,
        "detections": 128,
        "encode_ms_per_frame": 2.7,
        "baseline_ms_per_frame": 1.5,
        "frames_offered_per_s": 80.0,
        "window_latency_p50_ms": 204.0,
        "window_latency_p99_ms": 405.0,
    },
    "worker_unpaced": {
        "frames_sent": 1600,
        "frames_processed": 1600,
        "frames_processed_per_s": 146.0,
        "detections": 128,
        "encode_ms_per_frame": 2.6,
        "baseline_ms_per_frame": 1.4,
    },
    "worker_unpaced_over_raw_model": 0.4,
    "beds_at_10fps_sustainable": 14.6,
    "live_kept_up": True,
}
ALERTS: dict[str, Any] = {
    "beds": 100,
    "seconds_of_data": 300.0,
    "worker_messages": 60_000,
    "worker_messages_per_s": 1873.0,
    "raw_consume_produce_messages_per_s": 8283.0,
    "worker_over_raw": 0.226,
    "faust_noop_messages_per_s": 4100.0,
    "worker_over_faust_noop": 0.457,
    "latency_alerts": 40,
    "vitals_to_alert_p50_ms": 528.0,
    "vitals_to_alert_p99_ms": 955.0,
    "targets": {"messages_per_s": 5000, "p99_ms": 1000},
}
DASHBOARD: dict[str, Any] = {
    "backend": "plain",
    "beds": 32,
    "hours": 4.0,
    "rows": {"vitals": 460_800, "detections": 460_800, "camera_status": 46_080},
    "seed_s": 20.1,
    "ward_render_s_median": 0.66,
    "ward_target_s": 1.5,
    "ward_within_target": True,
    "patient_render_s_median": 0.74,
    "patient_span": "24 h",
    "repeats": 5,
    "runs": {"ward_s": [0.66, 0.64, 0.87], "patient_s": [0.74, 0.62, 0.81]},
    "screenshots": [],
}


def all_results() -> dict[str, dict[str, Any]]:
    return copy.deepcopy({"broker": BROKER, "db": DB, "sim": SIM, "ingest": INGEST, "inference": INFERENCE,
                          "alerts": ALERTS, "dashboard": DASHBOARD})  # fmt: skip


def row(rows: list[Row], stage: str, figure_start: str, limit_start: str = "") -> Row:
    (found,) = [
        r
        for r in rows
        if r.stage == stage and r.figure.startswith(figure_start) and r.limit_label.startswith(limit_start)
    ]
    return found


def test_every_stage_has_rows_in_order_then_end_to_end() -> None:
    rows = rows_from(all_results())
    stages = list(dict.fromkeys(r.stage for r in rows))
    assert stages == [*STAGES, "end-to-end"]
    assert not [r for r in rows if r.failed]


def test_raw_limits_measured_in_the_same_run() -> None:
    rows = rows_from(all_results())

    write = row(rows, "db", "write path, new")
    assert (write.value, write.limit, write.unit) == (244_800, 340_000, "rows/s")
    assert write.ratio == pytest.approx(0.72)  # 244,800 / 340,000
    assert write.limit_label == "raw COPY 340,000 rows/s (same run)"
    assert write.target_met is None  # a raw limit is not a target
    assert row(rows, "db", "write path, redelivered").ratio == pytest.approx(140_000 / 340_000)

    unpaced = row(rows, "ingest", "unpaced")
    assert unpaced.ratio == pytest.approx(0.13014, abs=1e-5)  # 1,200.8 / 9,226.6
    assert unpaced.limit_label == "raw producer 9,227 msg/s (same run)"

    worker = row(rows, "inference", "worker unpaced", "raw encoder")
    assert worker.limit == 365.0  # batch 32's, the best, not batch 128's
    assert worker.ratio == pytest.approx(0.4)  # 146 / 365
    assert row(rows, "inference", "raw model").figure == "raw model (cpu): per-frame encoder, batch 32"

    alerts = row(rows, "alerts", "one alerts worker", "raw loop")
    assert alerts.ratio == pytest.approx(0.22613, abs=1e-5)  # 1,873 / 8,283
    assert alerts.limit_label == "raw loop 8,283 msg/s (same run)"
    ceiling = row(rows, "alerts", "one alerts worker", "Faust's ceiling")
    assert ceiling.ratio == pytest.approx(0.45683, abs=1e-5)  # 1,873 / 4,100
    assert ceiling.note.startswith("Faust's ceiling: a Faust app")
    older = rows_from({**all_results(), "alerts": {k: v for k, v in ALERTS.items() if "faust" not in k}})
    assert not [r for r in older if r.limit_label.startswith("Faust's ceiling")]  # absent, not a failure row

    paced = row(rows, "inference", "worker, 8 beds")
    assert paced.ratio == pytest.approx(0.995)  # 79.6 of 80 offered
    assert paced.note.startswith("kept up")  # live_kept_up: the bench's own test
    delivered = row(rows, "ingest", "32 cameras at 10 fps")
    assert delivered.ratio == pytest.approx(1.00375)  # 321.2 of 320 offered


def test_targets_say_whether_they_are_met() -> None:
    rows = rows_from(all_results())

    cameras = row(rows, "ingest", "cameras per core")
    assert cameras.ratio == pytest.approx(2.24375)  # 71.8 / 32
    assert (cameras.limit_label, cameras.target_met) == ("target >= 32 cameras/core", True)

    cpu = row(rows, "inference", "worker unpaced", "target")
    assert cpu.limit == 80.0  # 8 beds at 10 fps
    assert cpu.ratio == pytest.approx(1.825)  # 146 / 80
    assert cpu.limit_label == "target >= 8 beds at 10 fps = 80 frames/s (CPU)"
    assert cpu.target_met is True

    throughput = row(rows, "alerts", "one alerts worker", "target")
    assert throughput.ratio == pytest.approx(0.3746)  # 1,873 / 5,000
    assert (throughput.limit_label, throughput.target_met) == ("target >= 5,000 msg/s", False)

    # Lower is better: the ratio is still value / limit, met at <= 1.
    ward = row(rows, "dashboard", "ward page")
    assert ward.figure == "ward page render, 32 beds x 4 h"
    assert ward.ratio == pytest.approx(0.44)  # 0.66 / 1.5
    assert (ward.limit_label, ward.target_met) == ("target <= 1.50 s", True)
    render = row(rows, "sim", "render")
    assert render.ratio == pytest.approx(0.5415)  # 1.083 / 2
    assert render.target_met is True


def test_inference_target_on_a_gpu_is_300_beds() -> None:
    results = {"inference": {**copy.deepcopy(INFERENCE), "device": "cuda"}}
    results["inference"]["worker_unpaced"]["frames_processed_per_s"] = 3051.0
    target = row(rows_from(results), "inference", "worker unpaced", "target")
    assert target.limit == 3000.0
    assert target.ratio == pytest.approx(1.017)  # 3,051 / 3,000
    assert target.limit_label == "target >= 300 beds at 10 fps = 3,000 frames/s (GPU)"


def test_with_a_grimace_detector_the_raw_limit_is_the_encoder_and_the_detector_per_frame() -> None:
    results = {"inference": copy.deepcopy(INFERENCE)}
    results["inference"]["raw"]["grimace_frames_per_s_by_batch"] = {"1": 100.0, "32": 365.0, "128": 300.0}
    worker = row(rows_from(results), "inference", "worker unpaced", "raw encoder")
    assert worker.limit == pytest.approx(182.5)  # 1 / (1/365 + 1/365)
    assert worker.ratio == pytest.approx(146 / 182.5)
    assert worker.limit_label == "raw encoder + grimace detector 182 frames/s (same run)"


def test_end_to_end_latencies() -> None:
    rows = [r for r in rows_from(all_results()) if r.stage == "end-to-end"]
    assert [(r.figure, r.value, r.unit) for r in rows] == [
        ("frame capture -> detection, p50", 204.0, "ms"),
        ("frame capture -> detection, p99", 405.0, "ms"),
        ("threshold-crossing vital -> alert, p50", 528.0, "ms"),
        ("threshold-crossing vital -> alert, p99", 955.0, "ms"),
    ]
    p99 = rows[3]
    assert p99.ratio == pytest.approx(0.955)  # 955 / 1,000
    assert (p99.limit_label, p99.target_met) == ("p99 target <= 1,000 ms", True)
    assert "window's newest frame" in rows[0].note
    assert rows[2].note.startswith("40 NEWS2 alerts")


def test_a_failed_stage_is_a_row_not_a_crash() -> None:
    results = all_results()
    results["inference"] = {"error": "RuntimeError: the worker did not start"}
    rows = rows_from(results)
    (failed,) = [r for r in rows if r.stage == "inference"]
    assert failed.failed
    assert failed.note == "failed: RuntimeError: the worker did not start"
    frame = [r for r in rows if r.stage == "end-to-end" and r.figure.startswith("frame")]
    assert [r.note for r in frame] == ["failed: inference stage: RuntimeError: the worker did not start"]
    table = format_table(rows)
    assert "| inference | (stage) | failed: RuntimeError: the worker did not start |  |  |" in table


def test_a_missing_key_fails_only_its_row() -> None:
    results = {"ingest": copy.deepcopy(INGEST)}
    del results["ingest"]["realtime"]["cameras_per_core_at_fps"]
    del results["ingest"]["raw_producer"]
    rows = rows_from(results)
    assert row(rows, "ingest", "cameras per core").note == "failed: missing 'realtime.cameras_per_core_at_fps'"
    assert row(rows, "ingest", "unpaced").note == "failed: missing 'raw_producer.msgs_per_s'"
    assert row(rows, "ingest", "capture to broker ack, p50").value == 15.5
    assert len([r for r in rows if r.failed]) == 3  # the two above and the raw producer row


def test_null_figures_and_no_alerts_are_failures() -> None:
    ingest = copy.deepcopy(INGEST)
    ingest["realtime"]["cameras_per_core_at_fps"] = None  # what bench_ingest returns at 0 cores
    alerts = {**ALERTS, "latency_alerts": 0, "vitals_to_alert_p50_ms": None, "vitals_to_alert_p99_ms": None}
    rows = rows_from({"ingest": ingest, "alerts": alerts})
    assert row(rows, "ingest", "cameras per core").note == "failed: 'realtime.cameras_per_core_at_fps' is null"
    latency = [r for r in rows if r.stage == "end-to-end"]
    assert [r.note for r in latency] == [
        "failed: 'vitals_to_alert_p50_ms' is null",
        "failed: 'vitals_to_alert_p99_ms' is null",
    ]


def test_an_unreadable_or_unknown_stage_result() -> None:
    rows = rows_from({"inference": {"raw": "not a dict", "device": 7}, "gpu": {"x": 1}})
    assert row(rows, "inference", "raw model").note == "failed: missing 'raw.encode_frames_per_s_by_batch'"
    assert row(rows, "gpu", "(stage)").note == "failed: unknown stage"


def test_format_table() -> None:
    rows = [
        Row("alerts", "worker", 1873.0, "msg/s", 8283.0, "raw loop 8,283 msg/s (same run)", 1873 / 8283),
        Row("alerts", "worker", 1873.0, "msg/s", 5000.0, "target >= 5,000 msg/s", 1873 / 5000, "", False),
        Row("end-to-end", "vital -> alert, p99", 955.0, "ms", 1000.0, "p99 target <= 1,000 ms", 0.955, "why", True),
        Row("end-to-end", "vital -> alert, p50", 528.0, "ms", note="why"),
        Row("sim", "render | draw", 0.0059, "ms", 0.0059, "offered 0.0059 ms", 1.0),
        Row("db", "(stage)", None, "", note="failed: InfraError: no database"),
    ]
    assert format_table(rows) == (
        "| Stage | Figure | Value | Limit | Ratio |\n"
        "|---|---|---|---|---|\n"
        "| alerts | worker | 1,873 msg/s | raw loop 8,283 msg/s (same run) | 0.23x |\n"
        "| alerts | worker | 1,873 msg/s | target >= 5,000 msg/s | 0.37x, **not met** |\n"
        "| end-to-end | vital -> alert, p99 [1] | 955 ms | p99 target <= 1,000 ms | 0.95x, met |\n"
        "| end-to-end | vital -> alert, p50 [1] | 528 ms |  |  |\n"
        "| sim | render \\| draw | 0.0059 ms | offered 0.0059 ms | 1.00x |\n"
        "| db | (stage) | failed: InfraError: no database |  |  |\n"
        "\n"
        "1. why\n"
    )


def test_format_table_of_every_stage_has_one_line_per_row() -> None:
    rows = rows_from(all_results())
    table = format_table(rows)
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 1 + len(rows)
    line = "| alerts | one alerts worker (Faust), 60,000 messages | 1,873 msg/s | target >= 5,000 msg/s | 0.37x, "
    assert line + "**not met** |" in table


def test_unknown_stages_are_refused_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        bench_all(quick=True, stages=["broker", "gpu"], database_url=None)
    assert main(["bench", "all", "--stages", "broker,gpu"]) == 2
