"""RTSP cameras end to end: GStreamer's RTSP server -> ingest (PyAV) -> the embedded Kafka broker.

Ingest runs in-process (IngestRunner) with short stall/lost/backoff settings so that outages
play out in seconds. What reaches Kafka is read back from ``<prefix>.frames`` and
``<prefix>.camera-status`` with a group-less consumer.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from kafka import KafkaConsumer

from icu.cli import main as icu_main
from icu.contracts import CameraState, CameraStatus, Frame, Topic, decode, decode_frame
from infra.ports import free_port
from infra.settings import TopicsAdminSettings
from ingest.runner import IngestRunner, create_frame_producer
from ingest.service import rtsp_source
from ingest.settings import IngestSettings
from tests.integration.rtsp import RtspTestServer, require_rtsp_server

SERVER_FPS = 15
INGEST_FPS = 5.0
STATUS_INTERVAL_S = 0.5
STALL_AFTER_S = 1.0
LOST_AFTER_S = 2.5

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _rtsp_server_available() -> None:
    require_rtsp_server()


def ingest_settings(kafka_settings: TopicsAdminSettings, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka_settings.kafka_bootstrap_servers,
        "topic_prefix": kafka_settings.topic_prefix,
        "topic_partitions": 3,
        "ingest_fps": INGEST_FPS,
        "ingest_status_interval_s": STATUS_INTERVAL_S,
        "ingest_stall_after_s": STALL_AFTER_S,
        "ingest_lost_after_s": LOST_AFTER_S,
        "rtsp_open_timeout_s": 3.0,
        "rtsp_backoff_initial_s": 0.2,
        "rtsp_backoff_max_s": 1.0,
    }
    values.update(overrides)
    return IngestSettings(**values)


class Ingest:
    """An in-process ingest runner plus a reader of what it published."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.producer = create_frame_producer(settings)
        self.runner = IngestRunner(settings, self.producer).start()
        self.consumer = KafkaConsumer(
            Topic.FRAMES.full_name(settings.topic_prefix),
            Topic.CAMERA_STATUS.full_name(settings.topic_prefix),
            **settings.kafka_client_config(),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.frames: list[Frame] = []
        self.statuses: list[CameraStatus] = []
        self.raw_statuses: list[bytes] = []
        self.frame_seen_at: list[datetime] = []
        self.closed = False

    def add(self, bed_id: str, url: str) -> None:
        self.runner.add_camera(bed_id=bed_id, source=rtsp_source(url, self.settings))

    def poll(self) -> None:
        frames_topic = Topic.FRAMES.full_name(self.settings.topic_prefix)
        for records in self.consumer.poll(timeout_ms=100).values():
            now = datetime.now(UTC)
            for record in records:
                if record.topic == frames_topic:
                    self.frames.append(decode_frame(record.value, record.headers))
                    self.frame_seen_at.append(now)
                else:
                    self.raw_statuses.append(record.value)
                    self.statuses.append(decode(CameraStatus, record.value))

    def until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Read until ``condition()`` holds; fail with ``what`` (and the status trail) on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll()
            if condition():
                return
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s} s waiting for {what}; statuses: {self.trail()}")

    def frames_of(self, bed_id: str) -> list[Frame]:
        return [f for f in self.frames if f.header.bed_id == bed_id]

    def statuses_of(self, bed_id: str) -> list[CameraStatus]:
        return [s for s in self.statuses if s.bed_id == bed_id]

    def trail(self, bed_id: str | None = None) -> list[str]:
        """States in order, repeats collapsed, e.g. ['connecting', 'live', 'stalled', 'lost', 'live']."""
        states: list[str] = []
        for status in self.statuses if bed_id is None else self.statuses_of(bed_id):
            label = f"{status.state.value}" if bed_id is not None else f"{status.bed_id}:{status.state.value}"
            if not states or states[-1] != label:
                states.append(label)
        return states

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.runner.close()
        self.producer.close(timeout=10)
        self.poll()
        self.consumer.close()


@pytest.fixture
def make_ingest(kafka_settings: TopicsAdminSettings) -> Iterator[Callable[..., Ingest]]:
    made: list[Ingest] = []

    def make(**overrides: Any) -> Ingest:
        ingest = Ingest(ingest_settings(kafka_settings, **overrides))
        made.append(ingest)
        return ingest

    yield make
    for ingest in made:
        ingest.close()


@pytest.fixture
def server() -> Iterator[RtspTestServer]:
    rtsp = RtspTestServer(fps=SERVER_FPS)
    yield rtsp
    if rtsp.process is not None and rtsp.running:
        rtsp.process.send_signal(signal.SIGCONT)  # in case a test froze it
    rtsp.stop()


def states(statuses: list[CameraStatus]) -> set[CameraState]:
    return {s.state for s in statuses}


def assert_good_jpeg(frame: Frame) -> None:
    image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "frame is not a decodable JPEG"
    assert image.shape == (240, 320, 3)
    assert (frame.header.width, frame.header.height) == (320, 240)
    assert float(image.std()) > 5, "frame is blank: the test pattern did not come through"


def test_frames_flow_from_rtsp_camera_to_kafka(server: RtspTestServer, make_ingest: Callable[..., Ingest]) -> None:
    server.start()
    started = datetime.now(UTC)
    ingest = make_ingest()
    ingest.add("icu1-01", server.url())

    ingest.until(lambda: len(ingest.frames) >= 16, 30, "16 frames")
    ingest.until(
        lambda: any(s.state is CameraState.LIVE and s.fps_in > 0 for s in ingest.statuses),
        10,
        "a live status with fps_in > 0",
    )

    frames = ingest.frames
    for frame in frames:
        assert_good_jpeg(frame)
        assert frame.header.bed_id == "icu1-01"
        assert frame.header.camera_id == "icu1-01-cam"
        assert frame.key() == b"icu1-01"
    seqs = [f.header.seq for f in frames]
    assert seqs == sorted(set(seqs)), f"seq not strictly increasing: {seqs}"
    captures = [f.header.capture_ts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(captures)), "capture_ts not increasing"
    for capture, seen in zip(captures, ingest.frame_seen_at, strict=True):
        assert started - timedelta(seconds=1) <= capture <= seen
        assert seen - capture < timedelta(seconds=3), "frame reached Kafka long after capture"

    # 15 fps from the camera sampled down to 5 fps (by capture time).
    steady = captures[2:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0]).total_seconds()
    assert INGEST_FPS * 0.75 <= rate <= INGEST_FPS * 1.25, f"published {rate:.2f} frames/s, configured {INGEST_FPS}"

    live = [s for s in ingest.statuses if s.state is CameraState.LIVE]
    assert all(s.source == "rtsp" and s.bed_id == "icu1-01" for s in live)
    assert max(s.fps_in for s in live) > max(s.fps_out for s in live) * 1.5, "fps_in should reflect the 15 fps input"
    assert live[-1].last_frame_age_s is not None
    assert live[-1].last_frame_age_s < 1.0
    assert live[-1].reconnects == 0


def test_capture_ts_is_never_after_the_frame_reached_kafka(
    server: RtspTestServer, make_ingest: Callable[..., Ingest]
) -> None:
    server.start()
    ingest = make_ingest()
    ingest.add("icu1-08", server.url())
    ingest.until(lambda: len(ingest.frames) >= 10, 30, "10 frames")
    ahead = [
        (seen - frame.header.capture_ts).total_seconds()
        for frame, seen in zip(ingest.frames, ingest.frame_seen_at, strict=True)
        if frame.header.capture_ts > seen
    ]
    assert not ahead, f"{len(ahead)} frames stamped up to {-min(ahead):.2f} s after they reached Kafka"


def test_recovers_after_camera_is_killed_and_restarted(
    server: RtspTestServer, make_ingest: Callable[..., Ingest]
) -> None:
    server.start()
    ingest = make_ingest()
    ingest.add("icu1-02", server.url())
    ingest.until(lambda: len(ingest.frames) >= 5, 30, "frames before the outage")
    ingest.until(lambda: CameraState.LIVE in states(ingest.statuses), 10, "live before the outage")

    server.kill()
    killed_at = len(ingest.statuses)
    ingest.until(lambda: CameraState.LOST in states(ingest.statuses[killed_at:]), 15, "lost after SIGKILL")
    last_seq_before = max(f.header.seq for f in ingest.frames)
    frames_before = len(ingest.frames)

    server.start()  # same port
    restarted_at = len(ingest.statuses)
    ingest.until(lambda: len(ingest.frames) >= frames_before + 5, 30, "frames after the restart")
    ingest.until(lambda: CameraState.LIVE in states(ingest.statuses[restarted_at:]), 10, "live after the restart")

    trail = ingest.trail("icu1-02")
    assert trail[:2] == ["connecting", "live"], trail
    assert trail[-1] == "live", trail
    down = trail[trail.index("live") + 1 : len(trail) - 1]
    assert down, trail
    assert set(down) <= {"stalled", "lost", "connecting"}, trail
    assert down[0] == "stalled", f"a camera that was live should be stalled first: {trail}"
    assert "lost" in down, trail

    after = ingest.frames[frames_before:]
    assert min(f.header.seq for f in after) > last_seq_before
    seqs = [f.header.seq for f in ingest.frames]
    assert seqs == sorted(set(seqs))
    captures = [f.header.capture_ts for f in ingest.frames]
    assert all(b > a for a, b in itertools.pairwise(captures))
    assert (after[0].header.capture_ts - ingest.frames[frames_before - 1].header.capture_ts) > timedelta(
        seconds=LOST_AFTER_S
    )
    for frame in after:
        assert_good_jpeg(frame)

    final = ingest.statuses_of("icu1-02")[-1]
    assert final.state is CameraState.LIVE
    assert final.reconnects >= 1
    lost = [s for s in ingest.statuses_of("icu1-02") if s.state is CameraState.LOST]
    assert any("refused" in s.detail or "no frame" in s.detail for s in lost), [s.detail for s in lost]


def test_unknown_stream_path_is_reported_and_retried(
    server: RtspTestServer, make_ingest: Callable[..., Ingest]
) -> None:
    server.start()
    ingest = make_ingest()
    ingest.add("icu1-03", server.url(path="/no-such-camera"))

    ingest.until(
        lambda: CameraState.LOST in states(ingest.statuses) and ingest.statuses[-1].reconnects >= 4,
        20,
        "lost with several reconnects",
    )
    statuses = ingest.statuses_of("icu1-03")
    assert statuses[0].state is CameraState.CONNECTING
    assert states(statuses) <= {CameraState.CONNECTING, CameraState.LOST}, ingest.trail("icu1-03")
    assert ingest.trail("icu1-03")[-1] == "lost"
    failing = [s for s in statuses if s.reconnects > 0]
    assert failing
    assert all("404" in s.detail and "no such stream" in s.detail for s in failing), [s.detail for s in failing]
    reconnects = [s.reconnects for s in statuses]
    assert reconnects == sorted(reconnects)
    assert all(s.fps_in == 0 and s.last_frame_age_s is None for s in statuses)
    # Still retrying: the count keeps growing.
    seen = statuses[-1].reconnects
    ingest.until(lambda: ingest.statuses[-1].reconnects > seen, 10, "more reconnect attempts")
    assert ingest.frames == []


def test_refused_credentials_are_reported_without_leaking_the_password(
    make_ingest: Callable[..., Ingest], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ingest")
    caplog.set_level(logging.DEBUG, logger="icu")
    caplog.set_level(logging.DEBUG, logger="libav")
    with RtspTestServer(user="viewer", password="RightPass123", fps=SERVER_FPS) as server:
        ingest = make_ingest()
        ingest.add("icu1-04", server.url(password="WRONGSECRET"))
        ingest.add("icu1-05", server.url())  # the right password

        ingest.until(lambda: len(ingest.frames_of("icu1-05")) >= 5, 30, "frames with the right password")
        ingest.until(
            lambda: CameraState.LIVE in states(ingest.statuses_of("icu1-05")), 10, "live with the right password"
        )
        ingest.until(
            lambda: (
                any("credentials" in s.detail for s in ingest.statuses_of("icu1-04"))
                and ingest.statuses_of("icu1-04")[-1].reconnects >= 2
            ),
            20,
            "the refusal reported",
        )
        ingest.close()

    refused = ingest.statuses_of("icu1-04")
    assert states(refused) <= {CameraState.CONNECTING, CameraState.LOST, CameraState.STOPPED}
    assert any("refused the credentials" in s.detail and "401" in s.detail for s in refused)
    assert ingest.frames_of("icu1-04") == []

    assert any("icu1-04" in r.getMessage() for r in caplog.records), "the failing camera should be logged"
    for secret in ("WRONGSECRET", "RightPass123"):
        assert secret not in caplog.text
        for record in caplog.records:
            assert secret not in record.getMessage()
            assert secret not in str(record.args)
        for raw in ingest.raw_statuses:
            assert secret.encode() not in raw
        for camera in ingest.runner.cameras.values():
            assert secret not in camera.source.describe()
            assert secret not in (camera.error or "")


def test_vanished_camera_is_reported_lost_in_time(server: RtspTestServer, make_ingest: Callable[..., Ingest]) -> None:
    server.start()
    ingest = make_ingest()
    ingest.add("icu1-06", server.url())
    ingest.until(lambda: CameraState.LIVE in states(ingest.statuses), 30, "live")

    server.stop()
    gone = datetime.now(UTC)
    ingest.until(lambda: ingest.statuses[-1].state is CameraState.LOST, 15, "lost")
    first_lost = next(s for s in ingest.statuses if s.ts > gone and s.state is CameraState.LOST)
    late = (first_lost.ts - gone).total_seconds()
    assert late <= LOST_AFTER_S + STATUS_INTERVAL_S + 1.0, f"reported lost {late:.1f} s after the camera went"
    assert late >= LOST_AFTER_S - 0.5, f"reported lost too early ({late:.1f} s)"
    between = [s for s in ingest.statuses if gone < s.ts < first_lost.ts]
    assert CameraState.STALLED in states(between), ingest.trail()


def test_frozen_camera_stalls_is_abandoned_and_recovers(
    server: RtspTestServer, make_ingest: Callable[..., Ingest]
) -> None:
    """A camera whose TCP connection stays up but sends nothing (SIGSTOP): only timeouts can tell."""
    server.start()
    ingest = make_ingest(rtsp_open_timeout_s=1.5)
    ingest.add("icu1-07", server.url())
    ingest.until(lambda: len(ingest.frames) >= 3, 30, "frames")
    ingest.until(lambda: CameraState.LIVE in states(ingest.statuses), 10, "live")
    assert server.process is not None

    server.process.send_signal(signal.SIGSTOP)
    frozen = datetime.now(UTC)
    try:
        ingest.until(lambda: ingest.statuses[-1].state is CameraState.STALLED, 10, "stalled")
        stalled = ingest.statuses[-1]
        assert (stalled.ts - frozen).total_seconds() <= STALL_AFTER_S + STATUS_INTERVAL_S + 1.0
        ingest.until(lambda: ingest.statuses[-1].state is CameraState.LOST, 10, "lost")
        # The silent session was given up (read timeout) and new ones tried.
        ingest.until(lambda: ingest.statuses[-1].reconnects >= 2, 15, "reconnect attempts while frozen")
        frames_while_frozen = len(ingest.frames)
    finally:
        server.process.send_signal(signal.SIGCONT)
    ingest.until(lambda: len(ingest.frames) >= frames_while_frozen + 5, 30, "frames after the thaw")
    ingest.until(lambda: ingest.statuses[-1].state is CameraState.LIVE, 10, "live after the thaw")


def test_cli_rejects_a_non_rtsp_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert icu_main(["ingest", "rtsp", "http://x", "--bed", "b1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("icu ingest: "), err
    assert "not an RTSP URL (expected rtsp://" in err
    assert "Traceback" not in err


def test_cli_runs_against_a_dead_camera_and_stops_on_sigterm(kafka_settings: TopicsAdminSettings) -> None:
    prefix = kafka_settings.topic_prefix
    env = {
        **os.environ,
        "ICU_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "ICU_TOPIC_PREFIX": prefix,
        "ICU_INGEST_STATUS_INTERVAL_S": "0.5",
        "ICU_INGEST_STALL_AFTER_S": "1",
        "ICU_INGEST_LOST_AFTER_S": "2",
        "ICU_RTSP_BACKOFF_INITIAL_S": "0.2",
        "ICU_RTSP_BACKOFF_MAX_S": "0.5",
    }
    url = f"rtsp://cam:TopSecret9@127.0.0.1:{free_port()}/x"
    icu = Path(sys.executable).with_name("icu")
    process = subprocess.Popen(
        [str(icu), "ingest", "rtsp", url, "--bed", "b1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    consumer = KafkaConsumer(
        Topic.CAMERA_STATUS.full_name(prefix),
        **kafka_settings.kafka_client_config(),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    statuses: list[CameraStatus] = []
    try:
        deadline = time.monotonic() + 30
        while not any(s.state is CameraState.LOST for s in statuses):
            assert process.poll() is None, f"icu ingest rtsp exited early: {process.communicate()[0]}"
            assert time.monotonic() < deadline, f"no lost status from the CLI; got {statuses}"
            for records in consumer.poll(timeout_ms=200).values():
                statuses += [decode(CameraStatus, r.value) for r in records]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        assert process.returncode == 0, output
        deadline = time.monotonic() + 10
        while statuses[-1].state is not CameraState.STOPPED and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                statuses += [decode(CameraStatus, r.value) for r in records]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        consumer.close()
    assert statuses[-1].state is CameraState.STOPPED, "no final status on SIGTERM"
    assert any("connection refused" in s.detail for s in statuses)
    assert all(s.bed_id == "b1" and s.camera_id == "b1-cam" for s in statuses)
    assert "TopSecret9" not in output
    assert "TopSecret9" not in " ".join(s.detail for s in statuses)
