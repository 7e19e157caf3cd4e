"""The camera frame path without a network: sampling, the latest-frame slot, rate meters, the feed
(resize, JPEG, health states) on a fake clock, the stream clock, ingest settings and cameras files."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from kafka.errors import KafkaTimeoutError

from icu.contracts import CameraState, CameraStatus, decode, decode_frame
from icu.settings import ConfigError, load_settings
from ingest.camera import CameraFeed, FeedConfig, LatestFrameSlot, RateMeter, RateSampler, StreamClock
from ingest.config import CameraConfigError, load_cameras_file
from ingest.publisher import FramePublisher
from ingest.settings import IngestSettings
from tests import samples

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
EPOCH_S = 1_760_000_000.0  # the capture clock's magnitude in 2025: where float spacing is ~0.24 µs


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def kept_indices(sampler: RateSampler, times: list[float]) -> list[int]:
    return [i for i, t in enumerate(times) if sampler.keep(t)]


# --- RateSampler ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fps_in", "fps_out", "expected"),
    [
        (30, 10, 100),  # exactly every third frame
        (25, 10, 100),  # not a multiple: the grid keeps 2 of every 5, no drift
        (10, 10, 100),  # same rate: every frame
        (60, 10, 100),
        (5, 10, 50),  # slower than the cap: everything, nothing invented
    ],
)
@pytest.mark.parametrize("base_s", [0.0, EPOCH_S, EPOCH_S + 0.123457])
def test_sampler_keeps_the_configured_rate_over_ten_seconds(
    fps_in: int, fps_out: int, expected: int, base_s: float
) -> None:
    # Capture times as sources produce them: an aware datetime rounded to the microsecond.
    base = datetime.fromtimestamp(base_s, UTC)
    times = [(base + timedelta(seconds=i / fps_in)).timestamp() for i in range(10 * fps_in)]
    kept = kept_indices(RateSampler(fps_out), times)
    assert len(kept) == expected
    if fps_in % fps_out == 0:
        step = fps_in // fps_out
        assert kept == list(range(0, 10 * fps_in, step))  # evenly spaced, not bunched


def test_sampler_at_epoch_timestamps_matches_small_timestamps() -> None:
    # Float timestamps near 1.76e9 s once broke the sampler (0.1 s steps that land a few ulps
    # short of the slot were thrown away): the decisions must not depend on the clock's magnitude.
    for fps_in, fps_out in [(30, 10), (25, 10), (10, 10), (30, 15), (24, 12)]:
        small = kept_indices(RateSampler(fps_out), [i / fps_in for i in range(20 * fps_in)])
        epoch = kept_indices(RateSampler(fps_out), [EPOCH_S + i / fps_in for i in range(20 * fps_in)])
        assert epoch == small, (fps_in, fps_out)


def test_sampler_re_anchors_when_the_capture_clock_jumps_backwards() -> None:
    sampler = RateSampler(10)
    before = [EPOCH_S + i / 30 for i in range(30)]
    assert len(kept_indices(sampler, before)) == 10
    # The source restarted and its clock is a minute behind: keep at once, then 10 fps from there.
    after = [EPOCH_S - 60 + i / 30 for i in range(30)]
    assert kept_indices(sampler, after) == list(range(0, 30, 3))


def test_sampler_small_backwards_step_is_not_a_restart() -> None:
    sampler = RateSampler(10)
    assert sampler.keep(100.0)
    assert sampler.keep(100.1)
    # Half a second back is jitter/reordering, not a restart: nothing is kept until the grid is due.
    assert not sampler.keep(99.7)
    assert not sampler.keep(100.15)
    assert sampler.keep(100.2)


def test_sampler_a_gap_keeps_the_grid() -> None:
    sampler = RateSampler(10)
    times = [i / 10 for i in range(10)]  # 0.0 .. 0.9, all kept
    times += [2.05 + i / 20 for i in range(10)]  # 20 fps after a 1.15 s gap, off the grid
    kept = [times[i] for i in kept_indices(sampler, times)]
    # Slots stay on the 0.1 s grid: the first frame after the gap fills slot 2.0, then 2.1, 2.2 ...
    # (re-anchoring on the late frame would have kept 2.05, 2.15, 2.25 ... instead).
    assert kept[:10] == pytest.approx([i / 10 for i in range(10)])
    assert kept[10:] == pytest.approx([2.05, 2.1, 2.2, 2.3, 2.4, 2.5])


def test_sampler_keeps_one_frame_per_slot_after_a_gap_that_ends_on_the_grid() -> None:
    # 30 fps sampled to 10 fps; frames 12-14 are lost and the stream resumes at frame 15 (t = 0.5 s,
    # exactly a grid point). Expected: every third frame, as without the gap.
    frames = [*range(12), *range(15, 27)]
    kept = [frames[i] for i in kept_indices(RateSampler(10), [i / 30 for i in frames])]
    assert kept == [0, 3, 6, 9, 15, 18, 21, 24]
    # The same at an epoch capture time (microsecond datetimes, as FileSource and StreamClock make).
    base = datetime.fromtimestamp(1760000000.78431, UTC)
    frames = [*range(4), *range(21, 33)]
    times = [(base + timedelta(microseconds=round(i * 1e6 / 30))).timestamp() for i in frames]
    kept = [frames[i] for i in kept_indices(RateSampler(10), times)]
    assert kept == [0, 3, 21, 24, 27, 30]


def test_sampler_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="fps"):
        RateSampler(0)


# --- LatestFrameSlot ------------------------------------------------------------------------


def test_slot_put_never_blocks_and_the_newest_wins() -> None:
    slot = LatestFrameSlot()
    done = threading.Event()

    def producer() -> None:
        for seq in range(500):  # nobody takes: a blocking put would hang here
            slot.put(samples.frame(seq=seq), now=float(seq))
        done.set()

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    assert done.wait(timeout=10)
    assert slot.dropped == 499
    taken = slot.take()
    assert taken is not None
    frame, put_at = taken
    assert frame.header.seq == 499
    assert put_at == 499.0
    assert slot.take() is None  # take empties the slot


def test_slot_put_when_free_waits_for_the_taker_and_gives_up_on_stop() -> None:
    slot = LatestFrameSlot()
    stop = threading.Event()
    slot.put(samples.frame(seq=1), now=1.0)
    waiter = threading.Thread(target=slot.put_when_free, args=(samples.frame(seq=2), 2.0, stop), daemon=True)
    waiter.start()
    waiter.join(timeout=0.3)
    assert waiter.is_alive()  # the slot is occupied: it waits instead of replacing
    taken = slot.take()
    assert taken is not None
    assert taken[0].header.seq == 1
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    taken = slot.take()
    assert taken is not None
    assert taken[0].header.seq == 2
    assert slot.dropped == 0
    slot.put(samples.frame(seq=3), now=3.0)
    stop.set()  # stopping: the waiter stops waiting (and replaces, counted) so shutdown never hangs
    slot.put_when_free(samples.frame(seq=4), 4.0, stop)
    assert slot.dropped == 1


def test_slot_counts_one_drop_per_replaced_frame() -> None:
    slot = LatestFrameSlot()
    slot.put(samples.frame(seq=1), now=1.0)
    assert slot.dropped == 0
    slot.put(samples.frame(seq=2), now=2.0)
    assert slot.dropped == 1
    taken = slot.take()
    assert taken is not None
    assert taken[0].header.seq == 2
    slot.put(samples.frame(seq=3), now=3.0)  # after a take the slot is empty: no drop
    assert slot.dropped == 1
    slot.count_dropped(3)  # lost after leaving the slot
    assert slot.dropped == 4


def test_slot_put_sets_the_notify_event() -> None:
    slot = LatestFrameSlot()
    slot.put(samples.frame(), now=0.0)  # no event registered yet: fine
    event = threading.Event()
    slot.notify = event
    slot.take()
    assert not event.is_set()
    slot.put(samples.frame(), now=1.0)
    assert event.is_set()


# --- RateMeter ------------------------------------------------------------------------------


def test_rate_meter_counts_events_per_second_over_its_window() -> None:
    meter = RateMeter(window_s=5.0)
    assert meter.rate(100.0) == 0.0
    for i in range(100):  # 10/s for 10 s
        meter.tick(100.0 + i / 10)
    assert meter.rate(109.9) == pytest.approx(10.0, abs=0.3)
    assert meter.rate(112.4) == pytest.approx(5.0, abs=0.3)  # half the window is silent
    assert meter.rate(115.0) == 0.0  # all older than the window


def test_rate_meter_is_bounded() -> None:
    meter = RateMeter(window_s=5.0, max_events=100)
    for i in range(10_000):
        meter.tick(i / 10_000)
    assert len(meter._times) == 100
    assert meter.rate(1.0) == pytest.approx(100 / 5.0)  # under-reports rather than grows


# --- CameraFeed -----------------------------------------------------------------------------


class FakeClock:
    def __init__(self, start: float = 5000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def two_colour_frame(width: int = 640, height: int = 480) -> av.VideoFrame:
    """Left half pure blue, right half pure red (BGR), so a channel swap or a bad resize shows."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (255, 0, 0)
    image[:, width // 2 :] = (0, 0, 255)
    return av.VideoFrame.from_ndarray(image, format="bgr24")


def make_feed(clock: FakeClock, *, width: int = 320, height: int = 240) -> CameraFeed:
    config = FeedConfig(fps=10.0, width=width, height=height, stall_after_s=5.0, lost_after_s=15.0)
    return CameraFeed(bed_id="icu1-07", camera_id="icu1-07-cam", source="rtsp", config=config, clock=clock)


def test_feed_samples_resizes_and_encodes_decodable_jpeg() -> None:
    clock = FakeClock()
    feed = make_feed(clock, width=160, height=120)
    source = two_colour_frame()
    published = []
    for i in range(30):  # one second at 30 fps
        clock.advance(1 / 30)
        kept = feed.offer(source, at(i / 30))
        assert kept == (i % 3 == 0)
        taken = feed.slot.take()
        assert (taken is not None) == kept
        if taken is not None:
            published.append(taken[0])
            assert taken[1] == clock.now  # put time from the injected clock
    assert [f.header.seq for f in published] == list(range(10))
    assert [f.header.capture_ts for f in published] == [at(i / 10) for i in range(10)]
    assert feed.frames_in == 30
    for frame in published:
        header = frame.header
        assert (header.bed_id, header.camera_id) == ("icu1-07", "icu1-07-cam")
        assert (header.width, header.height) == (160, 120)
        assert decode_frame(frame.jpeg, frame.kafka_headers()) == frame  # survives the Kafka headers
        image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        assert image.shape == (120, 160, 3)
        left, right = image[:, :70].reshape(-1, 3).mean(axis=0), image[:, 90:].reshape(-1, 3).mean(axis=0)
        assert left[0] > 200 > max(left[1], left[2]) + 150  # blue stays blue (BGR order kept)
        assert right[2] > 200 > max(right[0], right[1]) + 150


def test_feed_states_connecting_live_stalled_lost_live() -> None:
    clock = FakeClock()
    feed = make_feed(clock)
    status = feed.status(T0)
    assert status.state is CameraState.CONNECTING
    assert status.last_frame_age_s is None
    assert (status.bed_id, status.camera_id, status.source, status.ts) == ("icu1-07", "icu1-07-cam", "rtsp", T0)

    feed.offer(two_colour_frame(), at(0))
    assert feed.status(T0).state is CameraState.LIVE
    clock.advance(4.9)
    assert feed.status(T0).state is CameraState.LIVE
    clock.advance(0.1)  # 5.0 s of silence = stall_after_s
    status = feed.status(T0)
    assert status.state is CameraState.STALLED
    assert "no frame" in status.detail
    assert status.last_frame_age_s == pytest.approx(5.0)
    clock.advance(9.9)
    assert feed.status(T0).state is CameraState.STALLED
    clock.advance(0.1)  # 15 s = lost_after_s
    assert feed.status(T0).state is CameraState.LOST
    clock.advance(100)
    assert feed.status(T0).state is CameraState.LOST

    feed.offer(two_colour_frame(), at(115))
    status = feed.status(T0)
    assert status.state is CameraState.LIVE
    assert status.detail == ""
    assert status.last_frame_age_s == 0.0


def test_note_failure_counts_reconnects_and_sets_the_state() -> None:
    clock = FakeClock()
    feed = make_feed(clock)
    feed.note_failure("connection refused", lost=False)
    status = feed.status(T0)
    assert status.state is CameraState.CONNECTING  # never had a frame: still connecting
    assert (status.reconnects, status.detail) == (1, "connection refused")

    feed.offer(two_colour_frame(), at(0))
    feed.note_failure("stream ended", lost=False)
    status = feed.status(T0)
    assert (status.state, status.reconnects, status.detail) == (CameraState.STALLED, 2, "stream ended")

    feed.note_failure("unreachable for 20 s", lost=True)
    status = feed.status(T0)
    assert (status.state, status.reconnects, status.detail) == (CameraState.LOST, 3, "unreachable for 20 s")

    # A stalled-by-failure camera still turns lost by silence, keeping the failure's reason.
    feed.offer(two_colour_frame(), at(1))
    feed.note_failure("read timeout", lost=False)
    clock.advance(15)
    status = feed.status(T0)
    assert (status.state, status.detail) == (CameraState.LOST, "read timeout")


def test_mark_stopped_sticks_until_mark_connecting() -> None:
    clock = FakeClock()
    feed = make_feed(clock)
    feed.offer(two_colour_frame(), at(0))
    feed.mark_stopped("end of file")
    feed.offer(two_colour_frame(), at(1))
    feed.note_failure("late failure", lost=True)
    feed.mark_lost("late loss")
    clock.advance(60)
    status = feed.status(T0)
    assert (status.state, status.detail) == (CameraState.STOPPED, "end of file")
    assert status.reconnects == 1  # still counted

    feed.mark_connecting("new session")
    status = feed.status(T0)
    assert (status.state, status.detail, status.last_frame_age_s) == (CameraState.CONNECTING, "new session", None)
    feed.offer(two_colour_frame(), at(70))
    assert feed.status(T0).state is CameraState.LIVE


def test_status_reports_rates_drops_and_age() -> None:
    clock = FakeClock()
    feed = make_feed(clock)
    frame = two_colour_frame(320, 240)
    for i in range(300):  # 10 s at 30 fps, nobody takes from the slot
        feed.offer(frame, at(i / 30))
        if i % 3 == 0:
            feed.note_published(clock.now)  # as the publisher would on each ack
        clock.advance(1 / 30)
    status = feed.status(T0)
    assert status.fps_in == pytest.approx(30, abs=0.5)  # over the meter's 5 s window
    assert status.fps_out == pytest.approx(10, abs=0.5)
    clock.advance(0.5)
    status = feed.status(T0)
    assert status.frames_dropped == feed.slot.dropped == 99  # 100 kept, one still waiting
    assert status.last_frame_age_s == pytest.approx(0.5 + 1 / 30, abs=1e-3)
    assert (feed.frames_in, feed.frames_out) == (300, 100)
    assert status.state is CameraState.LIVE


# --- FramePublisher ------------------------------------------------------------------------


class UnreachableProducer:
    """Accepts sends but never delivers: ``flush`` times out, as kafka-python's does with the broker down."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.values: list[bytes] = []

    def send(self, topic: str, *, value: bytes, **_kwargs: Any) -> Any:
        self.sent.append(topic)
        self.values.append(value)
        future = type("PendingFuture", (), {"add_callback": _ignore, "add_errback": _ignore})
        return future()

    def flush(self, timeout: float | None = None) -> None:
        raise KafkaTimeoutError("Timeout waiting for future")


def _ignore(*_args: Any) -> None:
    return None


def test_publisher_drain_survives_a_flush_timeout() -> None:
    producer = UnreachableProducer()
    publisher = FramePublisher(producer, frames_topic="p.frames", status_topic="p.camera-status")
    feed = make_feed(FakeClock())
    publisher.add(feed)
    feed.offer(two_colour_frame(), at(0))
    feed.mark_stopped("ingest stopped")
    stop = threading.Event()
    stop.set()
    publisher.run(stop)  # must return, not raise
    assert producer.sent == ["p.frames", "p.camera-status"]
    assert decode(CameraStatus, producer.values[1]).state is CameraState.STOPPED


# --- StreamClock ----------------------------------------------------------------------------


def test_stream_clock_anchors_and_keeps_stream_spacing_despite_jitter() -> None:
    clock = StreamClock(max_drift_s=2.0)
    assert clock.capture_ts(7.0, at(0)) == at(0)
    jitter = [0.3, 0.0, 0.45, 0.1, 0.6, 0.05]
    for k, late in enumerate(jitter, start=1):
        assert clock.capture_ts(7.0 + k / 10, at(k / 10 + late)) == at(k / 10)
    assert clock.capture_ts(None, at(99)) == at(99)  # no pts: arrival time, anchor untouched
    assert clock.capture_ts(8.0, at(1.2)) == at(1.0)


def test_stream_clock_re_anchors_on_drift_and_on_backwards_pts() -> None:
    clock = StreamClock(max_drift_s=2.0)
    clock.capture_ts(0.0, at(0))
    assert clock.capture_ts(10.0, at(10.5)) == at(10.0)  # 0.5 s late: within the allowance
    assert clock.capture_ts(11.0, at(14.0)) == at(14.0)  # 3 s late: a stall, re-anchored
    assert clock.capture_ts(11.5, at(14.6)) == at(14.5)
    assert clock.capture_ts(0.0, at(15.0)) == at(15.0)  # the camera's clock restarted at 0
    assert clock.capture_ts(0.1, at(15.3)) == at(15.1)
    clock.reset()
    assert clock.capture_ts(0.2, at(40.0)) == at(40.0)


# --- IngestSettings -------------------------------------------------------------------------

TOKEN_A = "tok-A-0123456789abcdef"
TOKEN_ANY = "tok-ANY-fedcba9876543210"


@pytest.fixture(autouse=False)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ICU_"):
            monkeypatch.delenv(name)


def ingest_settings(**overrides: object) -> IngestSettings:
    return load_settings(IngestSettings, **overrides)


@pytest.mark.usefixtures("clean_env")
def test_token_table_parses_pairs_and_the_wildcard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICU_WHIP_TOKENS", f" icu1-01:{TOKEN_A} ,, *:{TOKEN_ANY},")
    settings = ingest_settings()
    assert settings.token_table() == {"icu1-01": TOKEN_A.encode(), "*": TOKEN_ANY.encode()}
    monkeypatch.delenv("ICU_WHIP_TOKENS")
    assert ingest_settings().token_table() == {}


@pytest.mark.usefixtures("clean_env")
def test_token_allows_the_right_bed_and_the_wildcard_only() -> None:
    settings = ingest_settings(whip_tokens=f"icu1-01:{TOKEN_A}")
    assert settings.token_allows("icu1-01", TOKEN_A)
    assert not settings.token_allows("icu1-02", TOKEN_A)  # a bed's token opens only that bed
    assert not settings.token_allows("icu1-01", TOKEN_A + "x")
    assert not settings.token_allows("icu1-01", TOKEN_A[:-1])
    assert not settings.token_allows("icu1-01", "")
    assert not settings.token_allows("icu1-01", None)
    wildcard = ingest_settings(whip_tokens=f"icu1-01:{TOKEN_A},*:{TOKEN_ANY}")
    assert wildcard.token_allows("icu9-99", TOKEN_ANY)
    assert wildcard.token_allows("icu1-01", TOKEN_ANY)
    assert wildcard.token_allows("icu1-01", TOKEN_A)
    assert not wildcard.token_allows("icu9-99", TOKEN_A)
    assert not wildcard.token_allows("icu9-99", None)
    assert not ingest_settings().token_allows("icu1-01", TOKEN_A)  # no tokens: nobody gets in


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("value", "secret", "message"),
    [
        ("icu1-01:short-secret", "short-secret", "16+ characters"),
        ("icu1-01-no-colon-secret-value", "icu1-01-no-colon-secret-value", "not 'bed:token'"),
        ("icu1-01:", None, "not 'bed:token'"),
        (f"icu1-01:{TOKEN_A},bad bed:{TOKEN_ANY}", TOKEN_ANY, "does not start with a valid bed id"),
    ],
)
def test_bad_tokens_are_config_errors_that_never_quote_the_token(
    monkeypatch: pytest.MonkeyPatch, value: str, secret: str | None, message: str
) -> None:
    monkeypatch.setenv("ICU_WHIP_TOKENS", value)
    with pytest.raises(ConfigError) as excinfo:
        ingest_settings()
    text = str(excinfo.value)
    assert "ICU_WHIP_TOKENS" in text
    assert message in text
    if secret is not None:
        assert secret not in text
    assert TOKEN_A not in text


@pytest.mark.usefixtures("clean_env")
def test_a_swapped_token_entry_does_not_leak_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "q9Zk+3nW/aPx0TfL7yQe=="
    monkeypatch.setenv("ICU_WHIP_TOKENS", f"{secret}:icu1-01")
    with pytest.raises(ConfigError) as excinfo:
        ingest_settings()
    assert "ICU_WHIP_TOKENS" in str(excinfo.value)
    assert secret not in str(excinfo.value)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(("stall", "lost"), [(5.0, 5.0), (10.0, 3.0)])
def test_lost_must_be_longer_than_stall(stall: float, lost: float) -> None:
    with pytest.raises(ConfigError) as excinfo:
        ingest_settings(ingest_stall_after_s=stall, ingest_lost_after_s=lost)
    assert "ICU_INGEST_LOST_AFTER_S" in str(excinfo.value)
    assert "ICU_INGEST_STALL_AFTER_S" in str(excinfo.value)
    settings = ingest_settings(ingest_stall_after_s=stall, ingest_lost_after_s=stall + 0.5)
    config = settings.feed_config()
    assert (config.stall_after_s, config.lost_after_s) == (stall, stall + 0.5)


@pytest.mark.usefixtures("clean_env")
def test_whip_ice_addresses_are_parsed_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ingest_settings().whip_ice_addresses == ()
    monkeypatch.setenv("ICU_WHIP_ICE_ADDRESSES", " 10.20.0.5 , ,fd00::7,")
    assert ingest_settings().whip_ice_addresses == ("10.20.0.5", "fd00::7")
    assert ingest_settings(whip_ice_addresses="127.0.0.1").whip_ice_addresses == ("127.0.0.1",)


@pytest.mark.usefixtures("clean_env")
def test_a_bad_ice_address_is_a_config_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICU_WHIP_ICE_ADDRESSES", "10.20.0.5,camera-vlan")
    with pytest.raises(ConfigError) as excinfo:
        ingest_settings()
    assert "ICU_WHIP_ICE_ADDRESSES" in str(excinfo.value)
    assert "'camera-vlan'" in str(excinfo.value)


# --- cameras file ---------------------------------------------------------------------------


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "cameras.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_cameras_file_with_rtsp_and_file_entries(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "bed03.mp4"
    path = write_yaml(
        tmp_path,
        f"""
whip: true
cameras:
  - bed: icu1-01
    rtsp: rtsp://user:secret@10.1.2.3:554/stream1
  - bed: icu1-02
    camera_id: icu1-02-ceiling
    file: recordings/bed02.mp4
    speed: max
    loop: true
  - bed: icu1-03
    file: {absolute}
    speed: 4
""",
    )
    config = load_cameras_file(path)
    assert config.whip is True
    rtsp, relative, fixed = config.cameras
    assert (rtsp.bed, rtsp.rtsp, rtsp.file, rtsp.camera_id) == (
        "icu1-01",
        "rtsp://user:secret@10.1.2.3:554/stream1",
        None,
        None,
    )
    assert relative.file == tmp_path / "conf" / "recordings" / "bed02.mp4"  # next to the YAML, not the cwd
    assert (relative.camera_id, relative.pace, relative.loop) == ("icu1-02-ceiling", None, True)
    assert fixed.file == absolute
    assert (fixed.pace, fixed.loop) == (4.0, False)
    assert rtsp.pace == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cameras:\n  - {bed: icu1-01, file: a.mp4}\n  - {bed: icu1-02, file: b.mp4, rtsp: 'rtsp://h/s'}\n",
            ["cameras[1]", "exactly one of 'rtsp' or 'file'"],
        ),
        ("cameras:\n  - {bed: icu1-01, file: a.mp4}\n  - {bed: icu1-02}\n", ["cameras[1]", "exactly one"]),
        (
            "cameras:\n  - {bed: icu1-01, file: a.mp4}\n  - {bed: icu1-01, file: b.mp4}\n",
            ["icu1-01-cam", "appears twice"],
        ),
        ("cameras:\n  - {bed: icu1-01, file: a.mp4}\n  - {bed: 'bad bed!', file: b.mp4}\n", ["cameras[1].bed"]),
        ("cameras:\n  - {bed: icu1-01, rtsp: 'http://cam/s'}\n", ["cameras[0]", "RTSP"]),
        ("cameras:\n  - {bed: icu1-01, file: a.mp4, speed: 0}\n", ["cameras[0]", "speed must be positive"]),
        ("cameras:\n  - {bed: icu1-01, file: a.mp4, colour: red}\n", ["cameras[0].colour"]),
        ("cameras: [\n  - bed: icu1-01\n", ["not valid YAML"]),
        ("", ["nothing to run"]),
        ("- bed: icu1-01\n", ["file:"]),
    ],
    ids=[
        "both",
        "neither",
        "duplicate",
        "bad-bed",
        "not-rtsp",
        "speed",
        "unknown-field",
        "bad-yaml",
        "empty",
        "not-a-mapping",
    ],
)
def test_cameras_file_errors_name_the_entry(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write_yaml(tmp_path, text)
    with pytest.raises(CameraConfigError) as excinfo:
        load_cameras_file(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ")
    for part in expected:
        assert part in message


def test_missing_cameras_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CameraConfigError, match="cannot read"):
        load_cameras_file(tmp_path / "nope.yaml")
