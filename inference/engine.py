"""The inference worker's core, free of Kafka: frames in, detections out.

Each arriving frame is encoded once (the model's per-frame vector, computed in one batch for
everything a poll brought, the grimace detector's logit when the weights carry one, see
:mod:`inference.grimace`, the twitch detector's logit for the frame ``neighbours`` frames before
it when they carry that (written into that frame's row), see :mod:`inference.twitch`, plus the
classical baseline's features) and kept in its bed's buffer (:mod:`inference.windows`). Every
``hop_s`` of capture time per bed, the temporal heads run over the bed's last ``window_frames``
vectors, batched across beds, and one :class:`Detection` is made for the frame the model's
newest output describes (``lookahead_frames`` before the window's last frame, see
:mod:`inference.model`): grimace and apnea probabilities of that frame, the highest twitch
probability since the previous detection (a jerk lasts one to three frames, so sampling one
frame per hop would miss most), the learned and classical respiration rates, signal quality, and
whether the window had filled-in frames (``degraded``).

Each finding is decided per described frame by the weights' decision rules
(:mod:`inference.decisions`; a bed keeps one :class:`Decider` per finding), and the detection
lists the findings decided present (``Detection.findings``; twitch when decided at any frame of
the hop). The learned respiration rate is withheld while apnea is decided. When a finding starts
(decided present after being absent), an :class:`Evidence` record is made as well: the keyframe
the finding was first decided for, with the model's attention over it
(:mod:`inference.evidence`).
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import cv2
import numpy as np
import torch

from icu.contracts import BaselineFindings, Detection, Evidence, Finding, Frame
from inference.classical import FeatureExtractor, FrameFeatures, estimate_resp_rate, twitch_bursts
from inference.data import to_model_input
from inference.decisions import Decider, DecisionRules
from inference.evidence import evidence_jpeg
from inference.grimace import grimace_readings, sigmoid, to_grimace_input
from inference.metrics import FINDINGS
from inference.model import TemporalNet
from inference.twitch import twitch_readings
from inference.windows import WardBuffers, Window

MIN_WINDOW_S = 2.0  # no detection for a bed until this much video is buffered
GRIMACE = FINDINGS.index("grimace")
TWITCH = FINDINGS.index("twitch")
NO_READING = -30.0  # the twitch column of a track's first frames: no frame that far back to read


@dataclass(frozen=True, slots=True)
class Keyframe:
    """What evidence needs of a recent frame: its JPEG as received and the model's attention."""

    capture_s: float
    seq: int
    jpeg: bytes
    saliency: np.ndarray  # (grid,) attention over the token grid
    grimace_saliency: np.ndarray | None = None  # (rows, cols) where the grimace detector looked
    twitch_saliency: np.ndarray | None = None  # (rows, cols) where the twitch detector looked, filled in later


@dataclass(frozen=True)
class EngineConfig:
    fps: float = 10.0
    window_frames: int = 128
    hop_s: float = 1.0
    silence_s: float = 30.0
    max_fill_s: float = 1.0
    evidence_cooldown_s: float = 30.0
    # Threads computing the classical baseline's features (optical flow), beds in parallel:
    # OpenCV releases the GIL, and on a GPU machine this, not the model, is the CPU's work.
    baseline_threads: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))


@dataclass
class Track:
    """What a bed's findings have been decided from on its current timeline. A restart (a long
    gap, a clock that went back) starts a new track; windows cut before it keep the old one, so
    they never feed the new timeline's deciders."""

    deciders: dict[str, Decider]  # per finding, fed each described frame once, in order
    decided_to_s: float | None = None  # capture time of the newest frame fed to the deciders
    active: set[str] = field(default_factory=set)  # findings decided present at the last detection
    last_evidence_s: dict[str, float] = field(default_factory=dict)  # per finding, keyframe capture time


@dataclass
class BedState:
    camera_id: str
    # The newest frames (bounded by the engine: the lookahead plus a hop), for evidence keyframes.
    keyframes: deque[Keyframe]
    track: Track
    previous_input: np.ndarray | None = None  # the last frame's model input (motion stream)
    previous_grey: tuple[np.ndarray, ...] = ()  # the track's last frames as the twitch detector reads them
    # The buffer rows of the track's last frames (the twitch detector's lag of them), so that a
    # reading goes into the row of the frame it describes; a gap's filled-in rows share the
    # array of the frame before the gap, and so its reading.
    recent_rows: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=0))
    extractor: FeatureExtractor = field(default_factory=FeatureExtractor)
    last_detection_s: float = -1e18
    newest_s: float | None = None  # capture time of the newest frame used
    stale: int = 0  # frames in a row older than the whole buffer


@dataclass
class EngineStats:
    frames: int = 0
    detections: int = 0
    windows: int = 0
    skipped: int = 0  # late, repeated or too-dense frames not used
    evidence: int = 0
    evidence_missed: int = 0  # a finding started but its keyframe was no longer kept
    evidence_suppressed: int = 0  # a finding started again within the cooldown
    encode_s: float = 0.0
    baseline_s: float = 0.0
    heads_s: float = 0.0


class InferenceEngine:
    def __init__(
        self,
        model: TemporalNet,
        *,
        config: EngineConfig,
        device: torch.device,
        model_version: str,
        rules: DecisionRules | None = None,
    ) -> None:
        self.model = model.eval().to(device)
        self.config = config
        self.rules = rules or DecisionRules()
        self.device = device
        self.model_version = model_version
        capacity = max(config.window_frames, int(config.fps * 2))
        self.buffers = WardBuffers(
            fps=config.fps, capacity=capacity, silence_s=config.silence_s, max_fill_s=config.max_fill_s
        )
        self.beds: dict[str, BedState] = {}
        self.stats = EngineStats()
        self._vector_size = 2 * model.config.dim
        # Per frame the buffer keeps: the model's vector, the grimace detector's logit, the twitch
        # detector's logit (written into the row when the frame ``neighbours`` after it arrives:
        # it reads a frame between its neighbours), the classical baseline's cell flows and
        # motion energy.
        self._grimace = model.grimace_detector
        self._twitch = model.twitch_detector
        self._twitch_lag = self._twitch.config.neighbours if self._twitch is not None else 0
        if self._twitch_lag > model.config.lookahead_frames:
            raise ValueError(
                f"the twitch detector reads {self._twitch_lag} frames ahead, more than the model's lookahead of "
                f"{model.config.lookahead_frames}: its readings would come too late"
            )
        self._grey = model.detector_frames()
        self._grimace_column = self._vector_size
        self._twitch_column = self._vector_size + 1
        self._flow_column = self._vector_size + 2
        self._autocast = device.type == "cuda"
        self._min_frames = min(int(MIN_WINDOW_S * config.fps), config.window_frames)
        # Windows cut but not yet run, each with the newest frames' keyframes at its cut: a
        # backlog cuts many windows in one poll, and the bed's own ring has moved on by then.
        self._pending: list[tuple[Window, tuple[Keyframe, ...], Track]] = []
        self._evidence: list[Evidence] = []
        self._lookahead = model.config.lookahead_frames
        self._hop_frames = max(1, round(config.hop_s * config.fps))
        levels = len(model.config.channels)
        self._grid = (model.config.height >> levels, model.config.width >> levels)
        self._keyframes_kept = self._lookahead + self._hop_frames + 4
        self._pool = ThreadPoolExecutor(config.baseline_threads, "baseline") if config.baseline_threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def add(self, frames: list[tuple[Frame, np.ndarray]], *, arrival: float | None = None) -> None:
        """Encode and buffer decoded frames (``(frame, BGR image)``), in arrival order.

        Only frames that extend a bed's stream (at least half an interval newer than its newest)
        are used: the motion stream and the classical features need each frame's true
        predecessor, so late, repeated and too-dense frames are skipped and counted. A camera
        whose clock jumped back (frames older than the whole buffer for two seconds running)
        starts afresh. Nothing changes unless encoding succeeds, so a retried batch is whole.
        """
        if not frames:
            return
        arrival = time.monotonic() if arrival is None else arrival
        half = 0.5 / self.config.fps
        span = self.buffers.capacity / self.config.fps
        newest: dict[str, float | None] = {}
        previous_inputs: dict[str, np.ndarray | None] = {}
        previous_greys: dict[str, tuple[np.ndarray, ...]] = {}
        stale: dict[str, int] = {}
        accepted: list[tuple[Frame, np.ndarray, bool]] = []
        inputs, previous, grey = [], [], []
        stacks: list[np.ndarray] = []  # the twitch detector's input, for the frame lag frames before each
        reads: list[int] = []  # which accepted frames brought a twitch reading
        for frame, image in frames:
            bed = frame.header.bed_id
            state = self.beds.get(bed)  # None for a new bed: created once encoding succeeds
            last = newest.get(bed, state.newest_s if state else None)
            capture = frame.header.capture_ts.timestamp()
            restart = False
            if last is not None and capture < last + half:
                stale[bed] = stale.get(bed, state.stale if state else 0) + 1 if capture < last - span else 0
                if stale[bed] < 2 * self.config.fps:
                    self.stats.skipped += 1
                    continue
                restart = True  # the camera's clock went back and stayed back
            elif last is not None and capture - last > self.config.max_fill_s + half:
                restart = True  # a long gap: the buffer starts afresh, so does motion
            stale[bed] = 0
            before = None if restart else previous_inputs.get(bed, state.previous_input if state else None)
            model_input = to_model_input(image, self.model.config)
            inputs.append(model_input)
            if self._grey is not None:
                grey.append(to_grimace_input(image, self._grey))
            if self._twitch is not None:
                lag = self._twitch_lag
                greys = () if restart else previous_greys.get(bed, state.previous_grey if state else ())
                history = (*greys, grey[-1])  # the track's newest frames, at most 2 * lag + 1
                if len(history) > lag:  # the frame lag frames back, between its neighbours; frames
                    # before the track's first are its first, as when a clip is read from its start
                    stacks.append(np.stack([history[0]] * (2 * lag + 1 - len(history)) + list(history)))
                    reads.append(len(accepted))
                previous_greys[bed] = history[-2 * lag :]
            previous.append(before if before is not None else model_input)
            previous_inputs[bed] = model_input
            newest[bed] = capture
            accepted.append((frame, image, restart))
        if not accepted:
            return
        began = time.perf_counter()
        vectors, saliency = self._encode(np.stack(inputs), np.stack(previous))
        grimace_maps: list[np.ndarray | None] = [None] * len(accepted)
        if self._grimace is not None:
            grimace, maps = grimace_readings(self._grimace, np.stack(grey), self.device)
            grimace_maps = list(maps)
        else:
            grimace = np.zeros(len(accepted), np.float32)  # a column all the same: the layout stays one
        twitch = np.full(len(accepted), NO_READING, np.float32)
        twitch_maps: list[np.ndarray | None] = [None] * len(accepted)
        if stacks:
            assert self._twitch is not None
            logits, maps = twitch_readings(self._twitch, np.stack(stacks), self.device)
            twitch[reads] = logits
            for i, twitch_map in zip(reads, maps, strict=True):
                twitch_maps[i] = twitch_map
        self.stats.encode_s += time.perf_counter() - began
        for frame, _, _ in accepted:
            if frame.header.bed_id not in self.beds:
                self.beds[frame.header.bed_id] = self._new_bed(frame.header.camera_id)
        began = time.perf_counter()
        baseline = self._baseline_features(accepted)
        self.stats.baseline_s += time.perf_counter() - began
        per_frame = zip(accepted, vectors, saliency, grimace, grimace_maps, twitch, twitch_maps, baseline, strict=True)
        for taken, vector, attention, grimace_logit, grimace_map, twitch_logit, twitch_map, features in per_frame:
            frame, _, restart = taken
            bed = frame.header.bed_id
            state = self.beds[bed]
            state.previous_input, state.newest_s, state.stale = previous_inputs[bed], newest[bed], stale.get(bed, 0)
            state.previous_grey = previous_greys.get(bed, ())
            if restart:
                state.last_detection_s = -1e18  # the old timeline's last detection means nothing now
                state.keyframes.clear()
                state.track = self._new_track()
                self.buffers.beds.pop(bed, None)
                state.recent_rows.clear()
            lag = self._twitch_lag
            if twitch_map is not None and len(state.keyframes) >= lag:  # the reading is of lag frames back
                state.keyframes[-lag] = dataclasses.replace(state.keyframes[-lag], twitch_saliency=twitch_map)
            if twitch_logit != NO_READING and len(state.recent_rows) >= lag:
                state.recent_rows[-lag][self._twitch_column] = twitch_logit
            state.keyframes.append(
                Keyframe(frame.header.capture_ts.timestamp(), frame.header.seq, frame.jpeg, attention, grimace_map)
            )
            data = np.concatenate([vector, [grimace_logit, NO_READING], features.cell_flow, [features.motion_energy]])
            data = data.astype(np.float32)
            state.recent_rows.append(data)  # keeps the last lag rows (none without a twitch detector)
            buffer = self.buffers.add(bed, frame.header.capture_ts, frame.header.seq, data, arrival=arrival)
            self.stats.frames += 1
            # Cut windows as frames arrive, so a backlog (a replay, a worker catching up) still
            # gets a detection per hop, not one for its newest frame only. Half a frame of slack
            # keeps capture jitter from stretching the period past hop_s.
            last_capture = buffer.frames[-1].capture_s
            length = min(len(buffer.frames), self.config.window_frames)
            if last_capture - state.last_detection_s >= self.config.hop_s - half and length >= self._min_frames:
                window = buffer.window(bed, length)
                if window is not None:
                    state.last_detection_s = window.last_capture_s
                    self._pending.append((window, tuple(state.keyframes), state.track))

    def _baseline_features(self, accepted: list[tuple[Frame, np.ndarray, bool]]) -> list[FrameFeatures]:
        """Each frame's classical features, in order per bed (the extractor keeps the previous
        frame), beds in parallel."""
        by_bed: dict[str, list[int]] = {}
        for i, (frame, _, _) in enumerate(accepted):
            by_bed.setdefault(frame.header.bed_id, []).append(i)
        results: list[FrameFeatures | None] = [None] * len(accepted)

        def run(bed: str, indexes: list[int]) -> None:
            extractor = self.beds[bed].extractor
            for i in indexes:
                _, image, restart = accepted[i]
                if restart:
                    extractor.reset()
                results[i] = extractor.push(image)

        if self._pool is None or len(by_bed) == 1:
            for bed, indexes in by_bed.items():
                run(bed, indexes)
        else:
            for future in [self._pool.submit(run, bed, indexes) for bed, indexes in by_bed.items()]:
                future.result()
        return [r for r in results if r is not None]

    def _new_bed(self, camera_id: str) -> BedState:
        return BedState(camera_id=camera_id, keyframes=deque(maxlen=self._keyframes_kept), track=self._new_track(),
                        recent_rows=deque(maxlen=self._twitch_lag))  # fmt: skip

    def _new_track(self) -> Track:
        return Track(deciders={name: Decider(self.rules.for_finding(name)) for name in FINDINGS})

    @torch.no_grad()
    def _encode(self, inputs: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        def tensor(batch: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)[None].to(self.device)

        with torch.autocast(self.device.type, enabled=self._autocast):
            vectors, saliency = self.model.frame_pair_features(tensor(inputs), tensor(previous))
        return vectors[0].float().cpu().numpy(), saliency[0].float().cpu().numpy()

    def due(self, *, now: datetime | None = None) -> list[Detection]:
        """Detections for the windows cut since the last call (one per bed per ``hop_s`` of
        capture time), the temporal heads batched across them. Evidence made on the way waits
        in :meth:`take_evidence`."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        windows = [window for window, _, _ in pending]
        length = self.config.window_frames
        stacked = np.zeros((len(windows), length, self._vector_size), np.float32)
        for i, window in enumerate(windows):
            vectors = window.data[:, : self._vector_size]
            stacked[i, length - len(vectors) :] = vectors
            stacked[i, : length - len(vectors)] = vectors[0]  # what the model's own padding does too
        began = time.perf_counter()
        with torch.no_grad(), torch.autocast(self.device.type, enabled=self._autocast):
            out = self.model.heads(torch.from_numpy(stacked).to(self.device))
        probabilities = torch.sigmoid(out["findings"].float()).cpu().numpy()
        rates = out["resp_rate"].float().cpu().numpy()
        self.stats.heads_s += time.perf_counter() - began
        self.stats.windows += len(windows)
        inferred_at = now or datetime.now(UTC)
        detections = []
        for i, window in enumerate(windows):
            m = len(window.capture_s)
            # Output j of the window describes its frame j - lookahead; the hop's described frames.
            described = probabilities[i, length - m :][self._lookahead :]
            described_rates = rates[i, length - m :][self._lookahead :]
            if len(described) == 0:  # less video than the lookahead: the newest output, for frame 0
                described, described_rates = probabilities[i, -1:], rates[i, -1:]
            if self._grimace is not None or self._twitch is not None:
                described = described.copy()
            if self._grimace is not None:  # the detector's own reading of each described frame
                described[:, GRIMACE] = sigmoid(window.data[: len(described), self._grimace_column])
            if self._twitch is not None:  # the detector's reading of each described frame
                readings = window.data[: len(described), self._twitch_column]
                read = readings != NO_READING  # all of them: described frames are lookahead frames old
                described[read, TWITCH] = sigmoid(readings[read])
            state, track = self.beds[window.bed_id], pending[i][2]
            # The hop: the frames described since this track's previous detection (its first:
            # the last hop_s). Each reaches the deciders once, in order, however many frames a
            # cut holds (a camera slower or faster than the grid, a backlog).
            times = window.capture_s[: len(described)]
            if track.decided_to_s is None:
                first = max(0, len(described) - self._hop_frames)
            else:
                first = bisect.bisect_right(times, track.decided_to_s)
            if first < len(described):
                hop = described[first:]
                decided = np.stack(
                    [track.deciders[name].push_many(hop[:, k]) for k, name in enumerate(FINDINGS)], axis=1
                )
                track.decided_to_s = times[-1]
            else:  # nothing newly described: the newest described frame again, decided as it stands
                first = len(described) - 1
                hop = described[first:]
                decided = np.array([[track.deciders[name].on for name in FINDINGS]])
            self._note_findings(window, state, track, pending[i][1], hop, decided, first, inferred_at)
            detections.append(
                self._detection(window, state, hop, decided, first, float(described_rates[-1]), inferred_at)
            )
        self.stats.detections += len(detections)
        return detections

    def take_evidence(self) -> list[Evidence]:
        """Evidence records made since the last call."""
        evidence, self._evidence = self._evidence, []
        return evidence

    def _detection(
        self,
        window: Window,
        state: BedState,
        hop: np.ndarray,
        decided: np.ndarray,
        first: int,
        rate: float,
        inferred_at: datetime,
    ) -> Detection:
        """``hop``: probabilities (frames, 3) of the frames described since the last detection,
        window indexes ``first`` onwards, and ``decided`` their decisions; the detection is for the
        last of them."""
        flow = window.data[:, self._flow_column : -1]
        energy = window.data[:, -1].astype(np.float64)
        classical = estimate_resp_rate(flow, self.config.fps) if len(flow) >= self.config.fps * 8 else None
        burst = bool(twitch_bursts(energy, self.config.fps)[-self._hop_frames :].any())
        index = first + len(hop) - 1
        twitch_k = FINDINGS.index("twitch")
        values = {name: float(hop[-1, k]) for k, name in enumerate(FINDINGS)}
        values["twitch"] = float(hop[:, twitch_k].max())
        present = [
            Finding(name)
            for k, name in enumerate(FINDINGS)
            if (decided[:, k].any() if k == twitch_k else decided[-1, k])
        ]
        apnea = Finding.APNEA in present
        return Detection(
            bed_id=window.bed_id,
            camera_id=state.camera_id,
            ts=datetime.fromtimestamp(window.capture_s[index], UTC),
            seq=window.seq[index],
            window_end=datetime.fromtimestamp(window.last_capture_s, UTC),
            model=self.model.config.name,
            model_version=self.model_version,
            grimace=values["grimace"],
            twitch=values["twitch"],
            apnea=values["apnea"],
            resp_rate=None if apnea else round(min(max(rate, 0.0), 120.0), 2),
            baseline=BaselineFindings(
                resp_rate=(
                    None
                    if classical is None or classical.rate_bpm is None
                    else round(min(max(classical.rate_bpm, 0.0), 120.0), 2)
                ),
                resp_quality=None if classical is None else round(min(max(classical.quality, 0.0), 1.0), 4),
                motion_energy=round(float(energy[-1]), 4),
                twitch_burst=burst,
            ),
            degraded=window.degraded,
            findings=present,
            inferred_at=inferred_at,
        )

    def _note_findings(
        self,
        window: Window,
        state: BedState,
        track: Track,
        keyframes: tuple[Keyframe, ...],
        hop: np.ndarray,
        decided: np.ndarray,
        first: int,
        inferred_at: datetime,
    ) -> None:
        """Evidence for each finding that starts in this hop (absent at the last detection,
        decided present on some frame now; that frame is the keyframe). At most one record per
        bed and finding per ``evidence_cooldown_s``: a run of isolated jerks is one story."""
        for k, name in enumerate(FINDINGS):
            above = np.flatnonzero(decided[:, k])
            starts = name not in track.active and len(above) > 0
            if decided[-1, k]:
                track.active.add(name)
            else:
                track.active.discard(name)
            if not starts:
                continue
            index = first + int(above[0])
            capture = window.capture_s[index]
            if capture - track.last_evidence_s.get(name, -1e18) < self.config.evidence_cooldown_s:
                self.stats.evidence_suppressed += 1
                continue
            evidence = self._evidence_for(
                window, state, keyframes, Finding(name), index, float(hop[above[0], k]), inferred_at
            )
            if evidence is None:
                self.stats.evidence_missed += 1
                continue
            track.last_evidence_s[name] = capture
            self._evidence.append(evidence)
            self.stats.evidence += 1

    def _evidence_for(
        self,
        window: Window,
        state: BedState,
        keyframes: tuple[Keyframe, ...],
        finding: Finding,
        index: int,
        probability: float,
        inferred_at: datetime,
    ) -> Evidence | None:
        capture = window.capture_s[index]
        half = 0.5 / self.config.fps
        # A filled-in frame has no JPEG of its own: the nearest real frame before it stands in.
        kept = [f for f in keyframes if f.capture_s <= capture + half]
        if not kept or capture - kept[-1].capture_s > self.config.max_fill_s + half:
            return None
        keyframe = kept[-1]
        detector_saliency = {Finding.GRIMACE: keyframe.grimace_saliency, Finding.TWITCH: keyframe.twitch_saliency}
        if (seen := detector_saliency.get(finding)) is not None:
            # The finding came from its detector: show where it saw it.
            rows, cols = seen.shape
            saliency = seen.reshape(-1).astype(np.float64)
        else:
            rows, cols = self._grid
            saliency = keyframe.saliency.astype(np.float64)
        jpeg = evidence_jpeg(keyframe.jpeg, saliency.reshape(rows, cols))
        if jpeg is None:
            return None
        return Evidence(
            bed_id=window.bed_id,
            camera_id=state.camera_id,
            finding=finding,
            ts=datetime.fromtimestamp(keyframe.capture_s, UTC),
            seq=keyframe.seq,
            window_start=datetime.fromtimestamp(min(window.capture_s[0], keyframe.capture_s), UTC),
            window_end=datetime.fromtimestamp(window.capture_s[-1], UTC),
            probability=round(min(max(probability, 0.0), 1.0), 4),
            model=self.model.config.name,
            model_version=self.model_version,
            saliency_rows=rows,
            saliency_cols=cols,
            saliency=[round(float(v), 5) for v in np.clip(saliency, 0.0, 1.0)],
            keyframe_jpeg=jpeg,
            inferred_at=inferred_at,
        )

    def evict_silent(self, now: float | None = None) -> list[str]:
        gone = self.buffers.evict_silent(time.monotonic() if now is None else now)
        for bed in gone:
            self.beds.pop(bed, None)
        return gone


def decode_jpeg(frame: Frame) -> np.ndarray | str:
    """The frame's BGR image, or the reason it cannot be used (for the dead-letter topic)."""
    image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return "JPEG payload cannot be decoded"
    height, width = image.shape[:2]
    if (width, height) != (frame.header.width, frame.header.height):
        return f"image is {width}x{height}, headers say {frame.header.width}x{frame.header.height}"
    return image
