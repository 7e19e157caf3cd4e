"""RTSP source building blocks: URL redaction, reconnect backoff, error wording, stream clock."""

from __future__ import annotations

import itertools
import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import av.error
import numpy as np
import pytest

from icu.contracts import CameraState
from ingest.camera import CameraFeed, FeedConfig, StreamClock
from ingest.config import CameraConfigError, load_cameras_file
from ingest.sources import SourceError, redact_text, redact_url
from ingest.sources.rtsp import Backoff, RtspSource, describe_error

# --- redact_url / redact_text ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:hunter2@10.1.2.3:554/stream1", "rtsp://***@10.1.2.3:554/stream1"),
        ("rtsp://admin@10.1.2.3/stream1", "rtsp://***@10.1.2.3/stream1"),
        ("rtsp://:hunter2@cam.local/s", "rtsp://***@cam.local/s"),
        ("rtsp://10.1.2.3:554/stream1", "rtsp://10.1.2.3:554/stream1"),
        ("rtsp://cam.local/s?channel=1#x", "rtsp://cam.local/s?channel=1#x"),
        ("rtsps://u:p@cam.local:322/s?channel=1", "rtsps://***@cam.local:322/s?channel=1"),
        # an unescaped '@' in the password: everything up to the last '@' is userinfo
        ("rtsp://admin:p@ss@cam.local/s", "rtsp://***@cam.local/s"),
        ("not a url at all", "not a url at all"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_unparseable_url_still_hides_userinfo() -> None:
    # urlsplit rejects an unclosed IPv6 bracket; the regex fallback still removes the userinfo.
    assert redact_url("rtsp://admin:hunter2@[::1/s") == "rtsp://***@[::1/s"


def test_redact_url_keeps_ipv6_brackets() -> None:
    assert redact_url("rtsp://admin:hunter2@[::1]:554/s") == "rtsp://***@[::1]:554/s"


@pytest.mark.parametrize("url", ["rtsp://admin:hunter2@cam:abc/s", "rtsp://admin:hunter2@cam:99999/s"])
def test_redact_url_bad_port_does_not_raise(url: str) -> None:
    redacted = redact_url(url)
    assert "hunter2" not in redacted
    assert "admin" not in redacted


def test_redact_text_removes_credentials_everywhere() -> None:
    url = "rtsp://admin:hunter2@10.1.2.3/stream1"
    text = f"Server returned 401 Unauthorized: '{url}' (password hunter2 rejected; other rtsp://x:y@h/z)"
    redacted = redact_text(text, url)
    assert "hunter2" not in redacted
    assert "x:y@" not in redacted
    assert "rtsp://***@10.1.2.3/stream1" in redacted
    assert "rtsp://***@h/z" in redacted


def test_redact_text_without_credentials_is_unchanged() -> None:
    url = "rtsp://10.1.2.3/stream1"
    assert redact_text(f"Connection refused: '{url}'", url) == f"Connection refused: '{url}'"


def test_redact_text_does_not_mangle_words_containing_the_user_name() -> None:
    url = "rtsp://u:hunter2@10.1.2.3/stream1"
    assert redact_text("Input/output error", url) == "Input/output error"


def test_rtsp_source_rejects_other_schemes_without_leaking_the_password() -> None:
    with pytest.raises(SourceError) as info:
        RtspSource("http://admin:hunter2@cam/s")
    assert "hunter2" not in str(info.value)
    assert "not an RTSP URL" in str(info.value)
    source = RtspSource("rtsp://admin:hunter2@cam/s")
    assert "hunter2" not in source.describe()
    assert "rtsp://***@cam/s" in source.describe()


# --- Backoff --------------------------------------------------------------------------------


class _EdgeRng(random.Random):
    """uniform() always returns one end of the range."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 8.0, _EdgeRng(high=True))
    assert [backoff.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.failures == 7


def test_backoff_lower_edge_is_half_the_ceiling() -> None:
    backoff = Backoff(0.5, 8.0, _EdgeRng(high=False))
    assert [backoff.next_delay() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_backoff_jitter_stays_within_half_to_full_ceiling() -> None:
    backoff = Backoff(0.2, 5.0, random.Random(42))
    delays = []
    for attempt in range(200):
        ceiling = min(5.0, 0.2 * 2**attempt)
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling
        delays.append(delay)
    capped = delays[10:]
    assert len(set(capped)) > 50, "no jitter: cameras would reconnect in lockstep"
    assert min(capped) < 3.0 < max(capped)


def test_backoff_survives_very_many_failures() -> None:
    backoff = Backoff(0.5, 30.0, random.Random(1))
    for _ in range(5000):
        assert backoff.next_delay() <= 30.0


def test_backoff_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(0.5, 8.0, _EdgeRng(high=True))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() == 0.5


def test_backoffs_with_their_own_rngs_do_not_move_in_lockstep() -> None:
    a, b = Backoff(1.0, 30.0), Backoff(1.0, 30.0)
    assert [a.next_delay() for _ in range(5)] != [b.next_delay() for _ in range(5)]


# --- describe_error -------------------------------------------------------------------------

URL = "rtsp://admin:hunter2@10.1.2.3:554/stream1"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (av.error.HTTPUnauthorizedError(825242872, "Server returned 401 Unauthorized", URL), "refused the credentials"),
        (av.error.HTTPForbiddenError(858797304, "Server returned 403 Forbidden", URL), "refused the credentials"),
        (av.error.HTTPNotFoundError(875574520, "Server returned 404 Not Found", URL), "no such stream (RTSP 404)"),
        (av.error.ExitError(1414092869, "Immediate exit requested", URL), "no data from the camera"),
        (av.error.TimeoutError(110, "Connection timed out", URL), "no data from the camera"),
        (av.error.ConnectionRefusedError(111, "Connection refused", URL), "connection refused"),
    ],
)
def test_describe_error_known_cases(exc: BaseException, expected: str) -> None:
    text = describe_error(exc, URL)
    assert expected in text
    assert "hunter2" not in text


def test_describe_error_real_ffmpeg_errors_map_by_errno() -> None:
    # err_check builds the exception exactly as PyAV does when FFmpeg fails.
    for code, expected in [(111, "connection refused"), (110, "no data from the camera")]:
        with pytest.raises(av.error.FFmpegError) as info:
            av.error.err_check(-code, URL)
        assert expected in describe_error(info.value, URL)


def test_describe_error_other_ffmpeg_errors_use_strerror_and_are_redacted() -> None:
    exc = av.error.InvalidDataError(1094995529, f"Invalid data found when processing input {URL}", URL)
    text = describe_error(exc, URL)
    assert text.startswith("InvalidDataError: Invalid data found")
    assert "hunter2" not in text


def test_describe_error_non_ffmpeg_errors_are_redacted() -> None:
    text = describe_error(OSError(5, "socket trouble", URL), URL)
    assert text.startswith("OSError:")
    assert "hunter2" not in text
    assert "rtsp://***@10.1.2.3:554/stream1" in text


# --- StreamClock ----------------------------------------------------------------------------

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_stream_clock_without_pts_uses_arrival() -> None:
    clock = StreamClock()
    assert clock.capture_ts(None, at(3)) == at(3)


def test_stream_clock_anchors_then_keeps_stream_spacing() -> None:
    clock = StreamClock(max_drift_s=2.0)
    assert clock.capture_ts(100.0, at(0)) == at(0)
    # Frames delivered in a burst (network jitter) keep their 0.1 s stream spacing.
    assert clock.capture_ts(100.1, at(0.5)) == at(0.1)
    assert clock.capture_ts(100.2, at(0.5)) == at(0.2)
    assert clock.capture_ts(101.0, at(1.0)) == at(1.0)


def test_stream_clock_reanchors_when_it_drifts_too_far() -> None:
    clock = StreamClock(max_drift_s=2.0)
    clock.capture_ts(0.0, at(0))
    assert clock.capture_ts(1.0, at(2.9)) == at(1.0)  # 1.9 s behind: still the stream's clock
    assert clock.capture_ts(2.0, at(10.0)) == at(10.0)  # 8 s behind (a long stall): re-anchored
    assert clock.capture_ts(2.5, at(10.7)) == at(10.5)  # and spaced from the new anchor


def test_stream_clock_reanchors_on_a_backwards_jump() -> None:
    clock = StreamClock(max_drift_s=2.0)
    clock.capture_ts(5000.0, at(0))
    clock.capture_ts(5001.0, at(1))
    # The camera rebooted: its clock starts again at 0.
    assert clock.capture_ts(0.0, at(2)) == at(2)
    assert clock.capture_ts(0.5, at(2.6)) == at(2.5)


def test_stream_clock_reanchors_when_the_stream_runs_ahead() -> None:
    clock = StreamClock(max_drift_s=2.0)
    clock.capture_ts(0.0, at(0))
    assert clock.capture_ts(60.0, at(1)) == at(1)  # a forward jump beyond the drift allowance


def test_stream_clock_reset_anchors_again() -> None:
    clock = StreamClock()
    clock.capture_ts(10.0, at(0))
    clock.reset()
    assert clock.capture_ts(10.5, at(7)) == at(7)


def test_stream_clock_never_stamps_a_frame_after_its_arrival() -> None:
    clock = StreamClock(max_drift_s=2.0)
    fps = 15
    # 2 s of frames buffered while the stream was probed, handed over in a burst at t=1.99 s ...
    arrivals = [at(1.99 + k * 0.0005) for k in range(2 * fps)]
    # ... then the live stream, each frame 10 ms after its capture.
    arrivals += [at(k / fps + 0.01) for k in range(2 * fps, 4 * fps)]
    stamped = [clock.capture_ts(k / fps, arrival) for k, arrival in enumerate(arrivals)]
    assert all(ts <= arrival for ts, arrival in zip(stamped, arrivals, strict=True))
    assert all(b > a for a, b in itertools.pairwise(stamped))
    # Once live, frames keep the stream's 1/15 s spacing (to the microsecond).
    gaps = [(b - a).total_seconds() for a, b in zip(stamped[-20:], stamped[-19:], strict=False)]
    assert all(abs(gap - 1 / fps) < 2e-6 for gap in gaps)


# --- reconnect policy (scripted sessions; the real server is in tests/integration) ------------


class ScriptedRtsp(RtspSource):
    """An RtspSource whose sessions follow a script: 'refused', 'frames+timeout', 'no-video'."""

    def __init__(self, script: list[str], feed: CameraFeed, stop: threading.Event) -> None:
        super().__init__("rtsp://u:hunter2@cam/s", backoff_initial_s=0.001, backoff_max_s=0.002)
        self.script, self.feed, self.stop_after = script, feed, stop
        self.states: list[tuple[str, CameraState, int]] = []

    def _session(self, feed: CameraFeed, stop: threading.Event) -> None:
        if self.states or self.script:  # record the state the previous failure left
            status = feed.status(datetime.now(UTC))
            self.states.append((status.detail, status.state, self.backoff.failures))
        if not self.script:
            stop.set()
            return
        step = self.script.pop(0)
        if step == "refused":
            raise av.error.ConnectionRefusedError(111, "Connection refused", self.url)
        if step == "no-video":
            raise SourceError("the RTSP stream has no video track")
        frame = av.VideoFrame.from_ndarray(np.zeros((240, 320, 3), np.uint8), format="bgr24")
        feed.offer(frame, datetime.now(UTC))
        self._delivered = True
        raise av.error.ExitError(-1414092869, "Immediate exit requested", self.url)


def test_an_outage_after_video_starts_over_as_stalled_with_a_fresh_backoff() -> None:
    clock = itertools.count()
    feed = CameraFeed(
        bed_id="icu1-01", camera_id="cam", source="rtsp", config=FeedConfig(stall_after_s=5, lost_after_s=15),
        clock=lambda: float(next(clock)),  # each status/offer advances one second
    )  # fmt: skip
    stop = threading.Event()
    source = ScriptedRtsp(["refused"] * 20 + ["frames+timeout", "no-video"], feed, stop)
    source.run(feed, stop)
    # states[i]: the camera's state after i failed sessions
    after_refusals = source.states[20]
    assert after_refusals[1] is CameraState.LOST  # 20 refusals, one "second" each: past lost_after_s
    after_video = source.states[21]
    assert after_video[1] is CameraState.STALLED  # not lost at once: a new outage started
    assert after_video[2] == 1  # backoff reset by the frames, then one failure
    after_no_video = source.states[22]
    assert "no video track" in after_no_video[0]  # retried like any failure, not a dead thread
    assert feed.reconnects == 22
    final = feed.status(datetime.now(UTC))
    assert final.state is CameraState.STOPPED
    assert "hunter2" not in " ".join(detail for detail, _, _ in source.states)


def test_a_yaml_error_in_the_cameras_file_never_quotes_the_line(tmp_path: Path) -> None:
    path = tmp_path / "cameras.yaml"
    path.write_text("cameras:\n  - bed: icu1-01\n    rtsp: rtsp://u:hunter2@h/x: {\n")
    with pytest.raises(CameraConfigError) as error:
        load_cameras_file(path)
    assert "line 3" in str(error.value)
    assert "hunter2" not in str(error.value)
