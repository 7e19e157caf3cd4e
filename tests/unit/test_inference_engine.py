"""The worker's core with a real (small, untrained) model: frames in, detections out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from icu.contracts import Evidence, Finding, Frame, FrameHeader, make_frame
from inference.data import to_model_input
from inference.decisions import DecisionRule, DecisionRules
from inference.engine import NO_READING, EngineConfig, InferenceEngine, decode_jpeg
from inference.grimace import GrimaceConfig, GrimaceNet, grimace_logits, sigmoid, to_grimace_input
from inference.model import TemporalNet, build_model
from inference.train import predict_clip
from inference.twitch import TwitchConfig, TwitchNet, twitch_logits
from inference.windows import Window
from simulator.bed import BedSimulation
from simulator.scenario import load_scenario

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def frames_of(
    bed: str, seconds: float, *, seed: int, skip: frozenset[int] = frozenset()
) -> list[tuple[Frame, np.ndarray]]:
    sim = BedSimulation(load_scenario("stable"), seed=seed, fps=10)
    out = []
    for index in range(int(seconds * 10)):
        image = sim.frame_at(index).image
        if index in skip:
            continue
        ok, jpeg = cv2.imencode(".jpg", image)
        assert ok
        header = FrameHeader(bed_id=bed, camera_id=f"{bed}-cam", capture_ts=T0 + timedelta(seconds=index / 10),
                             seq=index, width=image.shape[1], height=image.shape[0])  # fmt: skip
        frame = make_frame(header, jpeg.tobytes())
        decoded = decode_jpeg(frame)
        assert isinstance(decoded, np.ndarray)
        out.append((frame, decoded))
    return out


@pytest.fixture
def engine() -> InferenceEngine:
    return InferenceEngine(small_model(), config=EngineConfig(window_frames=32), device=torch.device("cpu"),
                           model_version="test-0")  # fmt: skip


def small_model() -> TemporalNet:
    # Receptive field 31 frames (fits the 32-frame window), lookahead 5 frames.
    torch.manual_seed(0)
    return build_model(height=48, width=64, channels=(8, 16), dim=16, heads=2, temporal_layers=4, lookahead_frames=5)


def test_detections_once_per_second_per_bed_after_two_seconds(engine: InferenceEngine) -> None:
    beds = {"icu1-01": frames_of("icu1-01", 5, seed=1), "icu1-02": frames_of("icu1-02", 5, seed=2)}
    detections = []
    for poll in range(0, 50, 10):  # five polls of one second from both beds
        engine.add([item for bed in beds.values() for item in bed[poll : poll + 10]], arrival=float(poll))
        detections += engine.due(now=T0 + timedelta(seconds=10))
    per_bed = {bed: [d for d in detections if d.bed_id == bed] for bed in beds}
    for bed, mine in per_bed.items():
        # Windows are cut at 2 s of video, then every 1 s (seq 19, 29, ...); each detection is for
        # the frame its newest output describes, the lookahead (5 frames) before.
        assert [d.seq for d in mine] == [14, 24, 34, 44], bed
        last = mine[-1]
        assert last.ts == T0 + timedelta(seconds=4.4)
        assert last.camera_id == f"{bed}-cam"
        assert last.model == "temporal-small"
        assert last.model_version == "test-0"
        assert 0.0 <= last.grimace <= 1.0
        assert last.baseline is not None
        assert not last.degraded
    assert engine.stats.frames == 100
    assert engine.stats.windows == 8


def test_missing_frames_mark_the_window_degraded(engine: InferenceEngine) -> None:
    frames = frames_of("icu1-03", 4, seed=3, skip=frozenset({25, 26, 27}))
    engine.add(frames, arrival=0.0)
    detection = engine.due()[-1]
    assert detection.degraded
    assert engine.buffers.beds["icu1-03"].stats.filled == 3


def test_bad_frames_are_refused_with_a_reason() -> None:
    image = np.zeros((240, 320, 3), np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok
    header = FrameHeader(bed_id="b", camera_id="c", capture_ts=T0, seq=0, width=640, height=480)
    assert decode_jpeg(make_frame(header, jpeg.tobytes())) == "image is 320x240, headers say 640x480"
    garbage = b"\xff\xd8\xff" + bytes(range(256)) * 4 + b"\xff\xd9"
    assert decode_jpeg(make_frame(header, garbage)) == "JPEG payload cannot be decoded"


def test_silent_beds_are_forgotten(engine: InferenceEngine) -> None:
    engine.add(frames_of("icu1-04", 1, seed=4), arrival=100.0)
    assert engine.evict_silent(now=129.0) == []
    assert engine.evict_silent(now=131.0) == ["icu1-04"]
    assert "icu1-04" not in engine.beds


def test_late_repeated_and_too_dense_frames_are_skipped(engine: InferenceEngine) -> None:
    frames = frames_of("icu1-05", 3, seed=5)
    engine.add(frames[:20], arrival=0.0)
    late = frames[10]  # an old frame replayed
    repeat = frames[19]
    dense_header = repeat[0].header.model_copy(
        update={"capture_ts": repeat[0].header.capture_ts + timedelta(seconds=0.03)}
    )
    dense = (make_frame(dense_header, repeat[0].jpeg), repeat[1])  # 30 ms after the newest: above 10 fps
    engine.add([late, repeat, dense], arrival=1.0)
    assert engine.stats.skipped == 3
    assert engine.stats.frames == 20
    engine.add(frames[20:], arrival=2.0)
    assert [d.seq for d in engine.due()] == [14, 24]


def test_a_clock_that_jumps_back_restarts_the_bed(engine: InferenceEngine) -> None:
    frames = frames_of("icu1-06", 4, seed=6)
    engine.add(frames, arrival=0.0)
    engine.due()
    back = []
    for k, (frame, image) in enumerate(frames_of("icu1-06", 4, seed=7)):
        header = frame.header.model_copy(
            update={"capture_ts": frame.header.capture_ts - timedelta(hours=1), "seq": 100 + k}
        )
        back.append((make_frame(header, frame.jpeg), image))
    engine.add(back, arrival=1.0)
    assert engine.stats.skipped == 19  # the 20th frame in a row from the past (2 s) restarts the bed
    detections = engine.due()
    assert detections
    assert detections[-1].seq == 133  # 2 s of frames again (seq 119-138), less the lookahead
    assert detections[-1].ts < T0


@pytest.mark.parametrize("detectors", ["", "grimace", "grimace+twitch"])
def test_live_detections_match_offline_predictions_over_the_whole_clip(detectors: str) -> None:
    # A worker fed frame by frame computes what `icu eval` computes over the whole clip: the
    # described frame's grimace/apnea, the hop's highest twitch, the same respiration rate; with
    # a grimace detector in the weights, grimace is the detector's reading of the described frame,
    # and with a twitch detector, twitch is its reading of each frame between its neighbours
    # (made when the frame two after it arrived, kept in that frame's row).
    model = small_model().eval()
    head_only = small_model().eval()
    frames = frames_of("icu1-07", 6, seed=8)
    grey = None
    if detectors:
        model.grimace_detector = BrightnessDetector().eval()
        frames = with_brightness_steps(frames)
        grey = np.stack([to_grimace_input(image, model.grimace_detector.config) for _, image in frames])
    if "twitch" in detectors:
        model.twitch_detector = NeighbourDetector().eval()
        # Two much brighter frames, each the first or the last of a hop: a twitch reading one
        # frame off moves it into the neighbouring hop.
        frames = [(f, cv2.add(image, np.full_like(image, 100)) if f.header.seq in (15, 34) else image)
                  for f, image in frames]  # fmt: skip
        grey = np.stack([to_grimace_input(image, model.twitch_detector.config) for _, image in frames])
    engine = InferenceEngine(model, config=EngineConfig(window_frames=32), device=torch.device("cpu"),
                             model_version="test-0")  # fmt: skip
    detections = []
    for poll in range(0, 60, 10):
        engine.add(frames[poll : poll + 10], arrival=float(poll))
        detections += engine.due()
    small = np.stack([to_model_input(image, model.config) for _, image in frames])
    offline = predict_clip(model, small, torch.device("cpu"), grey)
    probabilities, rates = offline["probabilities"], offline["resp_rate"]
    head = predict_clip(head_only, small, torch.device("cpu"))["probabilities"]
    if detectors:  # the detector's grimace, not the head's; the rest as before
        assert not np.allclose(probabilities[:, 0], head[:, 0], atol=1e-3)
        # Neighbouring frames read far apart, so a detection reading any other frame fails.
        assert np.abs(np.diff(probabilities[:, 0])).min() > 0.05
    else:
        np.testing.assert_allclose(probabilities[:, 1:], head[:, 1:], atol=1e-6)
    if "twitch" in detectors:
        assert not np.allclose(probabilities[:, 1], head[:, 1], atol=1e-3)
        for shift in (-2, -1, 1, 2):  # readings a frame or two off would give other hop maxima
            shifted = [probabilities[s - 9 + shift : s + 1 + shift, 1].max() for s in (14, 24, 34, 44)]
            assert not np.allclose(shifted, [probabilities[s - 9 : s + 1, 1].max() for s in (14, 24, 34, 44)],
                                   atol=1e-3)  # fmt: skip
    assert [d.seq for d in detections] == [14, 24, 34, 44, 54]
    for d in detections:  # the first window, shorter than the receptive field, is padded alike
        assert d.grimace == pytest.approx(probabilities[d.seq, 0], abs=1e-4)
        assert d.apnea == pytest.approx(probabilities[d.seq, 2], abs=1e-4)
        assert d.twitch == pytest.approx(probabilities[d.seq - 9 : d.seq + 1, 1].max(), abs=1e-4)
        if d.resp_rate is not None:
            assert d.resp_rate == pytest.approx(rates[d.seq], abs=0.01)


class NeighbourDetector(TwitchNet):
    """A twitch detector whose reading follows the brightness of the frame it reads and of its
    neighbours, each weighted differently: which frames it read is plain in a test."""

    def __init__(self) -> None:
        super().__init__(TwitchConfig(width=64, height=48, channels=(4, 8, 8), neighbours=2))

    def score_map(self, stacks: torch.Tensor) -> torch.Tensor:
        means = stacks.mean(dim=(2, 3))  # (n, 5): two frames before, the frame read, two after
        level = (means[:, 2] - 0.75) * 8.0 + (means[:, 0] + means[:, 1] - means[:, 3] - 2 * means[:, 4]) * 1.5
        return level[:, None, None].expand(-1, stacks.shape[2] // 8, stacks.shape[3] // 8)


class BrightnessDetector(GrimaceNet):
    """A grimace detector whose reading follows each frame's mean brightness: what it reads
    from which frame is plain in a test."""

    def __init__(self) -> None:
        super().__init__(GrimaceConfig(width=64, height=48, channels=(4, 8, 8)))

    def score_map(self, frames: torch.Tensor) -> torch.Tensor:
        level = (frames.mean(dim=(1, 2, 3)) - 0.64) * 30.0  # about -3 to 3 over the steps below
        return level[:, None, None].expand(-1, frames.shape[2] // 8, frames.shape[3] // 8)


def with_brightness_steps(frames: list[tuple[Frame, np.ndarray]]) -> list[tuple[Frame, np.ndarray]]:
    """The frames brightened by a different step each (a cycle of 7), so each reads differently."""
    return [(frame, cv2.add(image, np.full_like(image, 9 * (i % 7)))) for i, (frame, image) in enumerate(frames)]


def test_a_window_shorter_than_the_lookahead_takes_grimace_from_its_first_frame() -> None:
    # Every bed's first window holds less video than the lookahead: its one output describes
    # frame 0 (see InferenceEngine.due), and so does the detector's reading.
    model = small_model().eval()  # lookahead 5 frames
    model.grimace_detector = BrightnessDetector().eval()
    engine = InferenceEngine(model, config=EngineConfig(window_frames=4), device=torch.device("cpu"),
                             model_version="test-0")  # fmt: skip
    frames = with_brightness_steps(frames_of("icu1-06", 3, seed=7))
    detections = []
    for poll in range(0, 30, 10):
        engine.add(frames[poll : poll + 10], arrival=float(poll))
        detections += engine.due()
    assert detections
    grey = np.stack([to_grimace_input(image, model.grimace_detector.config) for _, image in frames])
    readings = sigmoid(grimace_logits(model.grimace_detector, grey, torch.device("cpu")))
    for d in detections:
        assert d.grimace == pytest.approx(float(readings[d.seq]), abs=1e-5)
        assert d.window_end is not None
        assert d.seq == frames[0][0].header.seq + round((d.window_end - T0).total_seconds() * 10) - 3


def test_evidence_when_a_finding_starts_with_the_keyframe_and_attention() -> None:
    model = small_model().eval()
    grimace = 0
    with torch.no_grad():
        model.findings.bias[grimace] = 50.0  # grimace is reported on every frame from now on
    engine = InferenceEngine(model, config=EngineConfig(window_frames=32, evidence_cooldown_s=0.0),
                             device=torch.device("cpu"), model_version="test-0")  # fmt: skip
    frames = frames_of("icu1-08", 5, seed=9)
    engine.add(frames[:20], arrival=0.0)
    engine.due()
    evidence = [e for e in engine.take_evidence() if e.finding is Finding.GRIMACE]
    assert len(evidence) == 1
    first = evidence[0]
    # The first window (seq 0-19) describes frames 0-14; the hop is its last ten, from seq 5.
    assert (first.seq, first.ts) == (5, T0 + timedelta(seconds=0.5))
    assert first.window_start <= first.ts <= first.window_end == T0 + timedelta(seconds=1.9)
    assert (first.saliency_rows, first.saliency_cols) == (12, 16)
    assert len(first.saliency) == 12 * 16
    assert sum(first.saliency) == pytest.approx(1.0, abs=1e-3)
    image = cv2.imdecode(np.frombuffer(first.keyframe_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert image.shape == frames[5][1].shape
    assert not np.array_equal(image, frames[5][1])  # the overlay is there
    assert first.probability > 0.99
    assert Evidence.model_validate_json(first.model_dump_json()) == first  # survives the wire

    engine.add(frames[20:30], arrival=1.0)
    engine.due()
    assert engine.take_evidence() == []  # still on: no new evidence
    with torch.no_grad():
        model.findings.bias[grimace] = -50.0
    engine.add(frames[30:40], arrival=2.0)
    engine.due()
    with torch.no_grad():
        model.findings.bias[grimace] = 50.0
    engine.add(frames[40:50], arrival=3.0)
    engine.due()
    again = [e for e in engine.take_evidence() if e.finding is Finding.GRIMACE]
    assert [e.seq for e in again] == [35]  # off, then on again: a new start (described frames 30-39 -> 35-44)


def test_grimace_evidence_shows_where_the_grimace_detector_looked() -> None:
    model = small_model().eval()
    torch.manual_seed(2)
    detector = GrimaceNet(GrimaceConfig(width=64, height=48, channels=(4, 8, 8))).eval()
    with torch.no_grad():
        detector.score.bias.fill_(50.0)  # grimace on every frame
        model.findings.bias[1] = 50.0  # and twitch, from the temporal model
    model.grimace_detector = detector
    engine = InferenceEngine(model, config=EngineConfig(window_frames=32, evidence_cooldown_s=0.0),
                             device=torch.device("cpu"), model_version="test-0")  # fmt: skip
    frames = frames_of("icu1-08", 3, seed=9)
    engine.add(frames[:20], arrival=0.0)
    engine.due()
    evidence = {e.finding: e for e in engine.take_evidence()}
    grimace, twitch = evidence[Finding.GRIMACE], evidence[Finding.TWITCH]
    # The detector's map at 48x64 is 6x8; its saliency, pooled over 2x2 blocks, 3x4.
    assert (grimace.saliency_rows, grimace.saliency_cols) == (3, 4)
    assert sum(grimace.saliency) == pytest.approx(1.0, abs=1e-3)
    grey = to_grimace_input(frames[grimace.seq][1], detector.config)
    with torch.no_grad():
        scores = detector.score_map(torch.from_numpy(grey)[None, None].float() / 255)
    share = torch.softmax(scores.flatten(), 0).reshape(6, 8)
    expected = share.reshape(3, 2, 4, 2).sum(dim=(1, 3)).flatten()
    np.testing.assert_allclose(grimace.saliency, expected.numpy(), atol=1e-4)
    assert (twitch.saliency_rows, twitch.saliency_cols) == (12, 16)  # twitch keeps the model's attention


def test_twitch_evidence_shows_where_the_twitch_detector_looked_on_its_keyframe() -> None:
    model = small_model().eval()
    torch.manual_seed(3)
    detector = TwitchNet(TwitchConfig(width=64, height=48, channels=(4, 8, 8))).eval()
    with torch.no_grad():
        detector.score.bias.fill_(50.0)  # twitch on every frame
        detector.score.weight.mul_(300.0)  # a map that varies from place to place and frame to frame
    model.twitch_detector = detector
    engine = InferenceEngine(model, config=EngineConfig(window_frames=32, evidence_cooldown_s=0.0),
                             device=torch.device("cpu"), model_version="test-0")  # fmt: skip
    frames = with_brightness_steps(frames_of("icu1-08", 3, seed=9))  # each stack unlike its neighbours
    for poll in (0, 10, 20):  # a reading arrives two frames after its frame, across polls too
        engine.add(frames[poll : poll + 10], arrival=float(poll))
        engine.due()
    twitch = [e for e in engine.take_evidence() if e.finding is Finding.TWITCH]
    assert len(twitch) == 1
    evidence = twitch[0]
    assert (evidence.saliency_rows, evidence.saliency_cols) == (3, 4)
    # The map of the keyframe's own reading: it between the two frames before and the two after.
    grey = np.stack([to_grimace_input(image, detector.config) for _, image in frames])
    stack = grey[evidence.seq - 2 : evidence.seq + 3]
    with torch.no_grad():
        scores = detector.score_map(torch.from_numpy(stack)[None].float() / 255)
    share = torch.softmax(scores.flatten(), 0).reshape(6, 8)
    expected = share.reshape(3, 2, 4, 2).sum(dim=(1, 3)).flatten()
    np.testing.assert_allclose(evidence.saliency, expected.numpy(), atol=1e-4)
    for offset in (-1, 1):  # the reading of a neighbouring frame's stack looks elsewhere
        neighbour = grey[evidence.seq - 2 + offset : evidence.seq + 3 + offset]
        with torch.no_grad():
            other = detector.score_map(torch.from_numpy(neighbour)[None].float() / 255)
        pooled = torch.softmax(other.flatten(), 0).reshape(3, 2, 4, 2).sum(dim=(1, 3)).flatten()
        assert np.abs(pooled.numpy() - expected.numpy()).max() > 1e-2


def test_each_twitch_reading_lands_in_the_row_of_its_frame_across_gaps_and_restarts() -> None:
    model = small_model().eval()
    torch.manual_seed(4)
    detector = TwitchNet(TwitchConfig(width=64, height=48, channels=(4, 8, 8))).eval()
    with torch.no_grad():
        detector.score.weight.mul_(300.0)  # readings that differ clearly from frame to frame
    model.twitch_detector = detector
    engine = InferenceEngine(model, config=EngineConfig(window_frames=32), device=torch.device("cpu"),
                             model_version="test-0")  # fmt: skip
    # Frames 20-22 never arrive (0.4 s, filled in); 30-44 neither (1.6 s: the bed starts afresh).
    frames = with_brightness_steps(frames_of("icu1-08", 6, seed=9, skip=frozenset([20, 21, 22, *range(30, 45)])))
    for poll in range(0, len(frames), 7):  # polls that cut across the gaps and the stacks
        engine.add(frames[poll : poll + 7], arrival=float(poll))
    cpu = torch.device("cpu")
    grey = {f.header.seq: to_grimace_input(image, detector.config) for f, image in frames}
    column = 2 * model.config.dim + 1
    rows = engine.buffers.beds["icu1-08"].frames
    assert [r.seq for r in rows][:3] == [45, 46, 47]  # the restart dropped the first track's rows
    # Each track read offline from its first frame: the frame's own reading in its row, except
    # the newest two, whose frames after them have not arrived.
    second = sorted(s for s in grey if s >= 45)
    expected = dict(zip(second, twitch_logits(detector, np.stack([grey[s] for s in second]), cpu), strict=True))
    for row in rows:
        if row.seq in second[-2:]:
            assert row.data[column] == NO_READING
        else:
            assert row.data[column] == pytest.approx(float(expected[row.seq]), abs=1e-4)
    # The first track, before the restart: the gap's filled rows repeat the frame before it,
    # reading included, and the frames after it read with their real neighbours.
    engine = InferenceEngine(model, config=EngineConfig(window_frames=64), device=torch.device("cpu"),
                             model_version="test-0")  # fmt: skip
    first = [(f, image) for f, image in frames if f.header.seq < 30]
    for poll in range(0, len(first), 7):
        engine.add(first[poll : poll + 7], arrival=float(poll))
    rows = engine.buffers.beds["icu1-08"].frames
    seqs = sorted(s for s in grey if s < 30)
    expected = dict(zip(seqs, twitch_logits(detector, np.stack([grey[s] for s in seqs]), cpu), strict=True))
    assert [r.seq for r in rows if r.filled] == [19, 19, 19]
    for row in rows:
        if row.seq in seqs[-2:]:
            continue
        assert row.data[column] == pytest.approx(float(expected[row.seq]), abs=1e-4), row.seq
    readings = np.array([expected[s] for s in seqs])  # neighbours read apart: a shifted reading fails
    assert np.mean(np.abs(np.diff(readings)) > 1e-3) > 0.8


def test_a_twitch_detector_that_reads_further_ahead_than_the_lookahead_is_refused() -> None:
    model = build_model(height=48, width=64, channels=(8, 16), dim=16, heads=2, temporal_layers=4, lookahead_frames=1)
    model.twitch_detector = TwitchNet(TwitchConfig(width=64, height=48, channels=(4, 8, 8), neighbours=2))
    with pytest.raises(ValueError, match="lookahead of 1"):
        InferenceEngine(model, config=EngineConfig(window_frames=32), device=torch.device("cpu"), model_version="t")


def test_evidence_is_rate_limited_per_bed_and_finding() -> None:
    model = small_model().eval()
    engine = InferenceEngine(model, config=EngineConfig(window_frames=32, evidence_cooldown_s=30.0),
                             device=torch.device("cpu"), model_version="test-0")  # fmt: skip
    frames = frames_of("icu1-09", 5, seed=10)
    for poll, bias in zip(range(0, 50, 10), (50.0, -50.0, 50.0, -50.0, 50.0), strict=True):
        with torch.no_grad():
            model.findings.bias[0] = bias
        engine.add(frames[poll : poll + 10], arrival=float(poll))
        engine.due()
    grimace = [e for e in engine.take_evidence() if e.finding is Finding.GRIMACE]
    assert len(grimace) == 1
    assert engine.stats.evidence_suppressed >= 1


def test_detections_carry_the_decided_findings_and_hold_them_across_hops() -> None:
    # Apnea decided with a hold of 15 frames: a hop of low probability keeps it present (the rate
    # still withheld), a return above "off" keeps it on without a second evidence record, and
    # two low hops in a row end it (the rate returns). The plain threshold flips every hop.
    model = small_model().eval()
    apnea = 2
    rules = DecisionRules(apnea=DecisionRule(on=0.6, off=0.4, hold=15))
    engine = InferenceEngine(model, config=EngineConfig(window_frames=32, evidence_cooldown_s=0.0),
                             device=torch.device("cpu"), model_version="test-0", rules=rules)  # fmt: skip
    plain = InferenceEngine(model, config=EngineConfig(window_frames=32, evidence_cooldown_s=0.0),
                            device=torch.device("cpu"), model_version="test-0")  # fmt: skip
    frames = frames_of("icu1-10", 6, seed=11)
    decided, thresholded = [], []
    for poll, bias in zip(range(0, 60, 10), (50.0, 50.0, -50.0, 50.0, -50.0, -50.0), strict=True):
        with torch.no_grad():
            model.findings.bias[apnea] = bias
        for each, out in ((engine, decided), (plain, thresholded)):
            each.add(frames[poll : poll + 10], arrival=float(poll))
            out += each.due()
    assert [d.seq for d in decided] == [14, 24, 34, 44, 54]
    assert [d.has(Finding.APNEA) for d in decided] == [True, True, True, True, False]
    assert [d.has(Finding.APNEA) for d in thresholded] == [True, False, True, False, False]
    assert decided[1].apnea < 0.01  # held present although the probability fell
    assert decided[1].resp_rate is None  # and the rate stays withheld
    assert decided[4].resp_rate is not None
    assert [e.seq for e in engine.take_evidence() if e.finding is Finding.APNEA] == [5]  # one onset
    assert [e.seq for e in plain.take_evidence() if e.finding is Finding.APNEA] == [5, 25]


class RecordingEngine(InferenceEngine):
    """The engine, noting which frames each detection's hop decided (by camera sequence number)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decided_seqs: list[int] = []
        self.described_seqs: set[int] = set()

    def _note_findings(self, window: Window, state: Any, track: Any, keyframes: Any, hop: np.ndarray,
                       decided: np.ndarray, first: int, inferred_at: datetime) -> None:  # fmt: skip
        self.decided_seqs.extend(window.seq[first : first + len(hop)])
        self.described_seqs.update(window.seq[: first + len(hop)])
        super()._note_findings(window, state, track, keyframes, hop, decided, first, inferred_at)


@pytest.mark.parametrize("camera_fps", [9, 10, 12])
def test_each_described_frame_is_decided_once_whatever_the_camera_rate(camera_fps: int) -> None:
    # Windows are cut by capture time, so a cut holds more or fewer grid frames than a hop when
    # the camera is slower or faster than 10 fps; the deciders must still see each frame once.
    frames = []
    for i, (frame, image) in enumerate(frames_of("icu1-11", 12, seed=12)):
        header = frame.header.model_copy(update={"capture_ts": T0 + timedelta(seconds=i / camera_fps)})
        frames.append((make_frame(header, frame.jpeg), image))
    engine = RecordingEngine(small_model(), config=EngineConfig(window_frames=32, baseline_threads=1),
                             device=torch.device("cpu"), model_version="test-0")  # fmt: skip
    for poll in range(0, len(frames), 10):
        engine.add(frames[poll : poll + 10], arrival=float(poll))
        engine.due()
    decided = engine.decided_seqs
    assert len(decided) > 60
    assert decided == sorted(set(decided))  # in order, none twice
    start = decided[0]
    assert sorted(s for s in engine.described_seqs if s >= start) == decided  # none skipped


def test_a_restart_starts_the_decisions_afresh_even_for_windows_cut_before_it() -> None:
    # A backlog spanning a 10 s camera gap: the old timeline's windows (apnea certain, held for
    # 100 frames) and the new one's (no apnea) run in one call; the new timeline must not
    # inherit the old one's decision.
    frames = []
    for i, (frame, image) in enumerate(frames_of("icu1-12", 8, seed=13)):
        ts = T0 + timedelta(seconds=i / 10 + (10 if i >= 40 else 0))
        frames.append((make_frame(frame.header.model_copy(update={"capture_ts": ts}), frame.jpeg), image))
    model = small_model()
    engine = InferenceEngine(model, config=EngineConfig(window_frames=32, baseline_threads=1),
                             device=torch.device("cpu"), model_version="test-0",
                             rules=DecisionRules(apnea=DecisionRule(on=0.6, off=0.4, hold=100)))  # fmt: skip
    engine.add(frames, arrival=0.0)
    cut = [window.last_capture_s for window, _, _ in engine._pending]
    old = sum(1 for t in cut if t < (T0 + timedelta(seconds=10)).timestamp())
    heads = model.heads

    def apnea_by_timeline(vectors: torch.Tensor) -> dict[str, torch.Tensor]:
        out = heads(vectors)
        findings = out["findings"].clone()
        findings[:old, :, 2], findings[old:, :, 2] = 50.0, -50.0
        return {**out, "findings": findings}

    model.heads = apnea_by_timeline  # type: ignore[method-assign]
    detections = engine.due()
    assert [d.has(Finding.APNEA) for d in detections] == [True] * old + [False] * (len(detections) - old)
    assert 0 < old < len(detections)
    assert all(d.resp_rate is not None for d in detections[old:])
