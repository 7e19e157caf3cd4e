"""The ingest commands as an operator runs them: `icu ingest whip` and a camera (`icu sim camera`),
separate processes talking WHIP/WebRTC over loopback, frames and health checked on the broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from icu.contracts import CameraState, CameraStatus, Topic, decode, decode_frame
from infra.ports import free_port
from infra.settings import TopicsAdminSettings
from tests.integration.records import read_records, wait_for_record

TOKEN = "cli-test-token-0123456789"
ICU = [sys.executable, "-m", "icu.cli"]


def _wait_listening(process: subprocess.Popen[str], port: int, timeout_s: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"ingest exited early with {process.returncode}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listening on {port}")


def test_whip_ingest_and_a_simulated_camera_as_processes(kafka_settings: TopicsAdminSettings, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "ICU_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "ICU_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "ICU_WHIP_TOKENS": f"icu1-05:{TOKEN}",
        "ICU_WHIP_ICE_ADDRESSES": "127.0.0.1",
        "ICU_INGEST_STATUS_INTERVAL_S": "0.5",
    }
    log_path = tmp_path / "ingest.log"
    with log_path.open("w") as log:
        ingest = subprocess.Popen(
            [*ICU, "ingest", "whip", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, text=True
        )
    try:
        _wait_listening(ingest, port)
        camera = subprocess.run(
            [*ICU, "sim", "camera", "--whip", f"http://127.0.0.1:{port}/whip/icu1-05", "--duration", "3",
             "--ice-address", "127.0.0.1", "--scenario", "pain"],
            env={**env, "ICU_SIM_WHIP_TOKEN": TOKEN}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert camera.returncode == 0, camera.stderr
        assert '"delete_status": 200' in camera.stdout
        stopped = wait_for_record(
            kafka_settings,
            Topic.CAMERA_STATUS.full_name(kafka_settings.topic_prefix),
            lambda r: decode(CameraStatus, r.value).state is CameraState.STOPPED,
            timeout_s=10,
        )
        assert decode(CameraStatus, stopped.value).bed_id == "icu1-05"
    finally:
        ingest.send_signal(signal.SIGINT)
        returncode = ingest.wait(timeout=30)
    output = log_path.read_text()
    assert returncode == 0, output
    assert TOKEN not in output
    frames = read_records(kafka_settings, Topic.FRAMES.full_name(kafka_settings.topic_prefix), 1000, timeout_s=3)
    decoded = [decode_frame(r.value, r.headers) for r in frames]
    assert 15 <= len(decoded) <= 31, len(decoded)  # 3 s at 10 fps, less connection set-up
    assert [f.header.seq for f in decoded] == sorted({f.header.seq for f in decoded})
    assert "aioice" not in output  # ICE chatter stays below the service's log level


def test_cli_errors_are_one_clear_line() -> None:
    bad_tokens = subprocess.run(
        [*ICU, "ingest", "whip"], env={**os.environ, "ICU_WHIP_TOKENS": "icu1-01:short"}, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip
    assert bad_tokens.returncode == 2
    assert "ICU_WHIP_TOKENS" in bad_tokens.stderr
    assert "short" not in bad_tokens.stderr
    assert "Traceback" not in bad_tokens.stderr
    no_token = subprocess.run(
        [*ICU, "sim", "camera", "--whip", "http://127.0.0.1:1/whip/x"],
        env={k: v for k, v in os.environ.items() if k != "ICU_SIM_WHIP_TOKEN"}, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert no_token.returncode == 2
    assert "ICU_SIM_WHIP_TOKEN" in no_token.stderr
