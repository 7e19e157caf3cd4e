"""File cameras end to end: clip-dataset videos -> FileSource -> IngestRunner -> the embedded broker.

Covers the exact frame accounting at max speed, pacing at 4x, latest-frame-wins while the broker is
down (a separate broker that the test kills), corrupt input, and `icu ingest file|cameras`.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from icu.cli import main as icu_main
from icu.contracts import CameraState, CameraStatus, Frame, Topic, decode, decode_frame
from icu.kafka import close_producer
from icu.settings import KafkaSettings
from infra.broker import EmbeddedBroker
from infra.ports import free_port
from infra.settings import TopicsAdminSettings
from infra.topics import create_topics
from ingest.camera import CameraFeed
from ingest.runner import IngestRunner, create_frame_producer
from ingest.settings import IngestSettings
from ingest.sources import SourceError
from ingest.sources.file import FileSource
from simulator.clips import plan_clip_set, write_clip
from tests.integration.records import read_records

CLIPS = 2
CLIP_S = 4.0
CLIP_FPS = 30
INGEST_FPS = 10.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 4 s clips at 30 fps, 320x240, in the clip dataset format (<id>.mp4 + <id>.json)."""
    out = tmp_path_factory.mktemp("clips")
    for spec in plan_clip_set(n=CLIPS, seed=11, split="train", duration_s=CLIP_S, fps=CLIP_FPS, width=320, height=240):
        write_clip(spec, out)
    assert len(list(out.glob("*.mp4"))) == CLIPS
    return out


@pytest.fixture(scope="module")
def corrupt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corrupt") / "x.mp4"
    path.write_bytes(random.Random(0).randbytes(64 * 1024))
    return path


def ingest_settings(kafka: KafkaSettings, prefix: str, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka.kafka_bootstrap_servers,
        "topic_prefix": prefix,
        "topic_partitions": 3,
        "ingest_fps": INGEST_FPS,
        "ingest_status_interval_s": 0.5,
        **overrides,
    }
    return IngestSettings(**values)


def frames_of(settings: KafkaSettings, prefix: str, at_most: int) -> list[Frame]:
    """Every frame on ``<prefix>.frames`` (read until 2 s pass without a new one)."""
    records = read_records(settings, Topic.FRAMES.full_name(prefix), expected=at_most + 1, timeout_s=2)
    frames = []
    for record in records:
        frame = decode_frame(record.value, record.headers)
        assert record.key == frame.header.bed_id.encode()
        frames.append(frame)
    return frames


def statuses_of(settings: KafkaSettings, prefix: str, bed: str) -> list[CameraStatus]:
    records = read_records(settings, Topic.CAMERA_STATUS.full_name(prefix), expected=10_000, timeout_s=2)
    return [s for s in (decode(CameraStatus, r.value) for r in records) if s.bed_id == bed]


def assert_good_frames(frames: list[Frame]) -> None:
    """Each frame a whole 320x240 JPEG; seq and capture time strictly increasing."""
    for frame in frames:
        assert (frame.header.width, frame.header.height) == (320, 240)
        image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        assert image.shape == (240, 320, 3)
        assert float(image.mean()) > 20  # a rendered bed, not a black frame
    for a, b in itertools.pairwise(frames):
        assert b.header.seq > a.header.seq
        assert b.header.capture_ts > a.header.capture_ts


def play(settings: IngestSettings, source: FileSource, bed: str) -> tuple[CameraFeed, IngestRunner, float]:
    """Play ``source`` to its end through a fresh runner; returns the feed, the closed runner, wall seconds."""
    producer = create_frame_producer(settings)
    runner = IngestRunner(settings, producer).start()
    try:
        started = time.monotonic()
        feed = runner.add_camera(bed_id=bed, source=source)
        assert runner.wait(timeout=30), "the file did not finish playing within 30 s"
        elapsed = time.monotonic() - started
    finally:
        runner.close()
        close_producer(producer, 10)
    assert runner.cameras[feed.camera_id].error is None
    return feed, runner, elapsed


def expected_kept() -> tuple[int, int]:
    # 10 of every 30 frames per clip; the first frame of the next clip lands a hair before the
    # next 0.1 s slot, so each clip boundary may move one frame either way.
    nominal = int(CLIPS * CLIP_S * INGEST_FPS)
    return nominal - CLIPS, nominal + CLIPS


def test_max_speed_publishes_every_sampled_frame(clip_dir: Path, kafka_settings: TopicsAdminSettings) -> None:
    prefix = kafka_settings.topic_prefix
    settings = ingest_settings(kafka_settings, prefix)
    source = FileSource(clip_dir, speed=None)
    feed, runner, _ = play(settings, source, "icu1-01")

    kept = feed._seq  # frames the sampler kept and encoded (seq 0 .. kept-1)
    low, high = expected_kept()
    assert low <= kept <= high
    assert feed.frames_in == CLIPS * CLIP_S * CLIP_FPS  # every decoded frame was offered
    assert source.decode_errors == 0
    frames = frames_of(settings, prefix, at_most=kept)
    assert {f.header.bed_id for f in frames} == {"icu1-01"}
    assert {f.header.camera_id for f in frames} == {"icu1-01-cam"}
    # Unpaced, a file is not live video: it waits for the publisher and loses nothing.
    assert feed.slot.dropped == 0
    assert [f.header.seq for f in frames] == list(range(kept))
    assert len(frames) == runner.publisher.stats.frames_acked
    assert frames, "nothing reached the topic"
    assert frames[-1].header.seq == kept - 1  # the last frame is never lost at the end of a file
    assert_good_frames(frames)

    statuses = statuses_of(settings, prefix, "icu1-01")
    assert statuses[-1].state is CameraState.STOPPED
    assert statuses[-1].detail == "end of file"
    assert statuses[-1].source == "file"
    assert statuses[-1].frames_dropped == feed.slot.dropped


def test_speed_four_paces_by_the_timestamps_and_drops_nothing(
    clip_dir: Path, kafka_settings: TopicsAdminSettings
) -> None:
    prefix = kafka_settings.topic_prefix
    settings = ingest_settings(kafka_settings, prefix)
    feed, _, elapsed = play(settings, FileSource(clip_dir, speed=4), "icu1-02")

    # 2 clips x 4 s of video at 4x real time: about 2 s (a max-speed run takes a fraction of that).
    assert 1.7 <= elapsed <= 4.0, f"played in {elapsed:.2f} s"
    assert feed.slot.dropped == 0
    low, high = expected_kept()
    assert low <= feed._seq <= high
    frames = frames_of(settings, prefix, at_most=feed._seq)
    assert [f.header.seq for f in frames] == list(range(feed._seq))
    assert_good_frames(frames)
    # Capture times follow the file's clock: 8 s of video, whatever the playback speed.
    span = (frames[-1].header.capture_ts - frames[0].header.capture_ts).total_seconds()
    assert span == pytest.approx(CLIPS * CLIP_S, abs=0.25)


def test_a_dead_broker_never_backs_up_into_the_decoder(
    clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_errors: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    with EmbeddedBroker(port=0, log_file=tmp_path / "broker.log") as broker:
        admin = TopicsAdminSettings(
            kafka_bootstrap_servers=broker.bootstrap_servers, topic_prefix="dead", topic_partitions=1
        )
        create_topics(admin)
        settings = ingest_settings(admin, "dead", ingest_max_in_flight=2, ingest_delivery_timeout_ms=2000)
        producer = create_frame_producer(settings)
        runner = IngestRunner(settings, producer).start()
        try:
            # Paced playback behaves like a live camera: latest-frame-wins (80 frames/s here).
            feed = runner.add_camera(bed_id="icu1-09", source=FileSource(clip_dir, speed=8, loop=True))
            camera = runner.cameras[feed.camera_id]
            publisher = runner.publisher
            deadline = time.monotonic() + 10
            while feed.frames_out < 5:  # frames flow and are acknowledged
                assert time.monotonic() < deadline, "no frame acknowledged within 10 s"
                time.sleep(0.02)

            broker.stop()
            dropped_at_stop, decoded_at_stop = feed.slot.dropped, feed.frames_in
            in_flight_seen: list[int] = []
            outage_end = time.monotonic() + 5
            while time.monotonic() < outage_end:
                in_flight_seen.append(publisher._in_flight[feed.camera_id])
                time.sleep(0.005)
            assert max(in_flight_seen) <= settings.ingest_max_in_flight
            assert min(in_flight_seen) >= 0
            assert feed.slot.dropped > dropped_at_stop + 100  # the slot kept replacing unsent frames
            assert feed.frames_in > decoded_at_stop + 250  # decoding never waited for Kafka (~400 in 5 s)
            # Frames sent just before the outage were never acknowledged: counted once the
            # delivery timeout (2 s) ran out, which also freed their in-flight places.
            assert publisher.stats.frames_failed >= 1
            assert camera.thread.is_alive()
            assert camera.error is None

            closing = time.monotonic()
            runner.close()
            assert time.monotonic() - closing < 30
            assert not camera.thread.is_alive()
            assert not runner._publisher_thread.is_alive()
            assert camera.error is None
        finally:
            runner.close()
            close_producer(producer, 1)
    # No thread may die, the publisher's drain included, however long the outage.
    raised = [(e.thread.name if e.thread else "?", e.exc_type.__name__) for e in thread_errors]
    assert raised == []


def test_a_file_of_random_bytes_is_a_source_error_naming_it(corrupt_file: Path, clip_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a readable video") as excinfo:
        FileSource(corrupt_file)
    assert str(corrupt_file) in str(excinfo.value)

    # In a clip directory every video is checked up front, not when playback reaches it.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    first = sorted(clip_dir.glob("*.mp4"))[0]
    (mixed / first.name).write_bytes(first.read_bytes())
    (mixed / "zz-broken.mp4").write_bytes(corrupt_file.read_bytes())
    with pytest.raises(SourceError) as excinfo:
        FileSource(mixed)
    assert str(mixed / "zz-broken.mp4") in str(excinfo.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no video files"):
        FileSource(empty)
    with pytest.raises(SourceError, match="no such file"):
        FileSource(tmp_path / "missing.mp4")


def test_a_truncated_mp4_is_refused_up_front(clip_dir: Path, tmp_path: Path) -> None:
    whole = sorted(clip_dir.glob("*.mp4"))[0].read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) // 2])
    # The clip writer puts the 'moov' index after the media data (no faststart), so the first half
    # of the file has frames but no index: FFmpeg cannot open it at all. Observed and asserted:
    # a SourceError naming the file, raised when the source is built (before any camera starts).
    assert whole.index(b"mdat") < whole.index(b"moov")
    with pytest.raises(SourceError, match="not a readable video") as excinfo:
        FileSource(truncated)
    assert str(truncated) in str(excinfo.value)


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the flags and the variables set here configure `icu` (logging and signal handlers
    are put back by tests/conftest.py)."""
    import os

    for name in list(os.environ):
        if name.startswith("ICU_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ICU_KAFKA_BOOTSTRAP_TIMEOUT_MS", "3000")


def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens: reaching Kafka would fail with exit code 1


@pytest.mark.usefixtures("cli_env")
def test_cli_file_refuses_a_corrupt_file_before_kafka(corrupt_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = icu_main(["ingest", "file", str(corrupt_file), "--bed", "b1", "--bootstrap-servers", dead_address()])
    assert code == 2
    assert time.monotonic() - started < 3  # did not wait for a broker
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line, no traceback
    assert err.startswith("icu ingest: ")
    assert str(corrupt_file) in err


@pytest.mark.usefixtures("cli_env")
def test_cli_file_plays_a_clip_directory(clip_dir: Path, kafka_settings: TopicsAdminSettings) -> None:
    prefix = kafka_settings.topic_prefix
    argv = ["ingest", "file", str(clip_dir), "--bed", "icu1-03", "--speed", "max"]
    argv += ["--bootstrap-servers", kafka_settings.kafka_bootstrap_servers, "--topic-prefix", prefix]
    assert icu_main(argv) == 0
    frames = frames_of(kafka_settings, prefix, at_most=expected_kept()[1])
    assert frames, "no frame on the topic"
    assert {f.header.bed_id for f in frames} == {"icu1-03"}
    assert_good_frames(frames)
    statuses = statuses_of(kafka_settings, prefix, "icu1-03")
    assert (statuses[-1].state, statuses[-1].detail) == (CameraState.STOPPED, "end of file")


def write_cameras(path: Path, entries: list[tuple[str, Path]]) -> Path:
    lines = ["cameras:"]
    for bed, video in entries:
        lines += [f"  - bed: {bed}", f"    file: {video}", "    speed: max"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.usefixtures("cli_env")
def test_cli_cameras_checks_every_file_before_starting(
    clip_dir: Path, corrupt_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_cameras(tmp_path / "cameras.yaml", [("icu1-04", clip_dir), ("icu1-05", corrupt_file)])
    started = time.monotonic()
    assert icu_main(["ingest", "cameras", str(config), "--bootstrap-servers", dead_address()]) == 2
    assert time.monotonic() - started < 3  # refused before Kafka and before any camera played
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert str(corrupt_file) in err


@pytest.mark.usefixtures("cli_env")
def test_cli_cameras_runs_every_camera(
    clip_dir: Path, kafka_settings: TopicsAdminSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = kafka_settings.topic_prefix
    monkeypatch.setenv("ICU_INGEST_STATUS_INTERVAL_S", "0.5")  # no flag for it
    one_clip = sorted(clip_dir.glob("*.mp4"))[0]
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "bed5.mp4").write_bytes(one_clip.read_bytes())
    # A relative path is resolved against the YAML's folder, not the working directory.
    config = write_cameras(tmp_path / "cameras.yaml", [("icu1-04", clip_dir), ("icu1-05", Path("videos/bed5.mp4"))])
    argv = ["ingest", "cameras", str(config), "--bootstrap-servers", kafka_settings.kafka_bootstrap_servers]
    assert icu_main([*argv, "--topic-prefix", prefix]) == 0
    frames = frames_of(kafka_settings, prefix, at_most=2 * expected_kept()[1])
    by_bed: dict[str, list[Frame]] = {}
    for frame in frames:
        by_bed.setdefault(frame.header.bed_id, []).append(frame)
    assert set(by_bed) == {"icu1-04", "icu1-05"}
    for bed_frames in by_bed.values():
        assert_good_frames(bed_frames)
    for bed in ("icu1-04", "icu1-05"):
        assert statuses_of(kafka_settings, prefix, bed)[-1].state is CameraState.STOPPED
