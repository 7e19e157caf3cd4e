"""`icu bench inference` runs end to end and reports what the issue asks for."""

from __future__ import annotations

import json

import pytest

from icu.cli import main


def test_bench_inference_reports_model_and_worker_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "inference", "--beds", "2", "--seconds", "8", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["device"] == "cpu"
    assert set(result["raw"]["encode_frames_per_s_by_batch"]) == {"1", "8", "32", "128"}
    assert all(v > 0 for v in result["raw"]["heads_windows_per_s_by_batch"].values())
    live, drain = result["worker_live"], result["worker_unpaced"]
    assert live["frames_sent"] == drain["frames_sent"] == 160
    assert live["frames_processed"] == live["frames_sent"]  # two beds at 10 fps: it keeps up
    assert live["detections"] >= 2 * 6  # a detection per bed per second after the first 2 s
    assert live["window_latency_p50_ms"] is not None
    assert live["window_latency_p50_ms"] <= live["window_latency_p99_ms"]
    assert result["worker_unpaced_over_raw_model"] > 0
    assert result["live_kept_up"] is True
