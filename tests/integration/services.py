"""Running `icu` services as real subprocesses in integration tests, each with its log in a file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from icu.contracts import CameraState, CameraStatus, Topic, encode
from icu.kafka import close_producer, create_producer
from infra.settings import TopicsAdminSettings
from tests.integration.records import read_records

ICU = [sys.executable, "-m", "icu.cli"]


class Service:
    """One `icu` subprocess with its log in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], tmp: Path) -> None:
        self.name = name
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen([*ICU, *args], env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self._log.closed:
            return
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def env_for(settings: TopicsAdminSettings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "ICU_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "ICU_TOPIC_PREFIX": settings.topic_prefix,
        "ICU_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "ICU_LOG_LEVEL": "INFO",
        **extra,
    }


def infer_env(settings: TopicsAdminSettings, weights: Path, **extra: str) -> dict[str, str]:
    """A small, fast model so two workers and the cameras fit on two cores."""
    return env_for(settings, ICU_INFER_WEIGHTS=str(weights), ICU_INFER_DEVICE="cpu", ICU_INFER_THREADS="1",
                   ICU_INFER_WINDOW_FRAMES="32", ICU_INFER_START="earliest", **extra)  # fmt: skip


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, services: list[Service]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        for service in services:
            assert service.alive(), f"{service.name} exited ({service.process.returncode}):\n{service.log()[-3000:]}"
        assert time.monotonic() < deadline, f"{what} within {timeout_s:.0f} s"
        time.sleep(0.5)


def lost_camera(settings: TopicsAdminSettings, bed: str) -> None:
    status = CameraStatus(bed_id=bed, camera_id=f"{bed}-cam", ts=datetime.now(UTC), state=CameraState.LOST,
                          source="file", fps_in=0, fps_out=0, frames_dropped=0, reconnects=0)  # fmt: skip
    producer = create_producer(settings)
    producer.send(Topic.CAMERA_STATUS.full_name(settings.topic_prefix), key=status.key(), value=encode(status))
    close_producer(producer, 10)


def wait_alerts_consuming(settings: TopicsAdminSettings, services: list[Service], timeout_s: float = 90) -> None:
    """Until `icu alerts` on ``settings`` consumes: a camera lost on a probe bed (``probe-01``,
    in no recording or scenario) answered on ``alerts``."""
    lost_camera(settings, "probe-01")
    topic = Topic.ALERTS.full_name(settings.topic_prefix)
    wait_until(lambda: bool(read_records(settings, topic, 1, 0.5)), timeout_s, "the alerts worker consuming", services)


def record_live_ward(
    settings: TopicsAdminSettings, out: Path, *, record: list[str], ward: list[str], ward_timeout_s: float = 60
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """`icu record --out OUT RECORD...` on ``settings``' topics while `icu sim ward WARD...` runs to
    its end; the recorder's stdout and the ward's completed process. Both must exit 0."""
    flags = ["--bootstrap-servers", settings.kafka_bootstrap_servers, "--topic-prefix", settings.topic_prefix]
    recorder = subprocess.Popen([*ICU, "record", *flags, "--out", str(out), *record], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
    time.sleep(3)  # the recorder positioned at the topics' ends
    done = subprocess.run([*ICU, "sim", "ward", *flags, *ward], capture_output=True, text=True,
                          timeout=ward_timeout_s)  # fmt: skip
    assert done.returncode == 0, done.stderr
    time.sleep(2)
    recorder.send_signal(signal.SIGTERM)
    stdout, stderr = recorder.communicate(timeout=30)
    assert recorder.returncode == 0, stderr
    return stdout.decode(), done
