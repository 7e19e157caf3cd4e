"""The inference worker's core, free of Kafka: frames in, detections out.

Each arriving frame is encoded once (the model's per-frame vector, computed in one batch for
everything a poll brought, plus the classical baseline's features) and kept in its bed's buffer
(:mod:`inference.windows`). Every ``hop_s`` of capture time per bed, the temporal heads run over
the bed's last ``window_frames`` vectors, batched across beds, and one :class:`Detection` is made
for the window's last frame: the three probabilities, the learned and classical respiration
rates, signal quality, and whether the window had filled-in frames (``degraded``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import cv2
import numpy as np
import torch

from icu.contracts import BaselineFindings, Detection, Frame
from inference.classical import FeatureExtractor, estimate_resp_rate, twitch_bursts
from inference.data import to_model_input
from inference.metrics import FINDINGS
from inference.model import TemporalNet
from inference.windows import WardBuffers, Window

MIN_WINDOW_S = 2.0  # no detection for a bed until this much video is buffered


@dataclass(frozen=True)
class EngineConfig:
    fps: float = 10.0
    window_frames: int = 128
    hop_s: float = 1.0
    silence_s: float = 30.0
    max_fill_s: float = 1.0


@dataclass
class BedState:
    camera_id: str
    previous_input: np.ndarray | None = None  # the last frame's model input (motion stream)
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
    encode_s: float = 0.0
    heads_s: float = 0.0


class InferenceEngine:
    def __init__(self, model: TemporalNet, *, config: EngineConfig, device: torch.device, model_version: str) -> None:
        self.model = model.eval().to(device)
        self.config = config
        self.device = device
        self.model_version = model_version
        capacity = max(config.window_frames, int(config.fps * 2))
        self.buffers = WardBuffers(
            fps=config.fps, capacity=capacity, silence_s=config.silence_s, max_fill_s=config.max_fill_s
        )
        self.beds: dict[str, BedState] = {}
        self.stats = EngineStats()
        self._vector_size = 2 * model.config.dim
        self._autocast = device.type == "cuda"
        self._min_frames = min(int(MIN_WINDOW_S * config.fps), config.window_frames)
        self._pending: list[Window] = []

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
        stale: dict[str, int] = {}
        accepted: list[tuple[Frame, np.ndarray, bool]] = []
        inputs, previous = [], []
        for frame, image in frames:
            bed = frame.header.bed_id
            state = self.beds.get(bed) or BedState(camera_id=frame.header.camera_id)
            last = newest.get(bed, state.newest_s)
            capture = frame.header.capture_ts.timestamp()
            restart = False
            if last is not None and capture < last + half:
                stale[bed] = stale.get(bed, state.stale) + 1 if capture < last - span else 0
                if stale[bed] < 2 * self.config.fps:
                    self.stats.skipped += 1
                    continue
                restart = True  # the camera's clock went back and stayed back
            elif last is not None and capture - last > self.config.max_fill_s + half:
                restart = True  # a long gap: the buffer starts afresh, so does motion
            stale[bed] = 0
            before = None if restart else previous_inputs.get(bed, state.previous_input)
            model_input = to_model_input(image, self.model.config)
            inputs.append(model_input)
            previous.append(before if before is not None else model_input)
            previous_inputs[bed] = model_input
            newest[bed] = capture
            accepted.append((frame, image, restart))
        if not accepted:
            return
        began = time.perf_counter()
        vectors = self._encode(np.stack(inputs), np.stack(previous))
        self.stats.encode_s += time.perf_counter() - began
        for (frame, image, restart), vector in zip(accepted, vectors, strict=True):
            bed = frame.header.bed_id
            state = self.beds.setdefault(bed, BedState(camera_id=frame.header.camera_id))
            state.previous_input, state.newest_s, state.stale = previous_inputs[bed], newest[bed], stale.get(bed, 0)
            if restart:
                state.extractor.reset()
                state.last_detection_s = -1e18  # the old timeline's last detection means nothing now
                self.buffers.beds.pop(bed, None)
            features = state.extractor.push(image)
            data = np.concatenate([vector, features.cell_flow, [features.motion_energy]]).astype(np.float32)
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
                    self._pending.append(window)

    @torch.no_grad()
    def _encode(self, inputs: np.ndarray, previous: np.ndarray) -> np.ndarray:
        def tensor(batch: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)[None].to(self.device)

        with torch.autocast(self.device.type, enabled=self._autocast):
            vectors, _ = self.model.frame_pair_features(tensor(inputs), tensor(previous))
        return vectors[0].float().cpu().numpy()

    def due(self, *, now: datetime | None = None) -> list[Detection]:
        """Detections for the windows cut since the last call (one per bed per ``hop_s`` of
        capture time), the temporal heads batched across them."""
        windows, self._pending = self._pending, []
        if not windows:
            return []
        length = self.config.window_frames
        stacked = np.zeros((len(windows), length, self._vector_size), np.float32)
        for i, window in enumerate(windows):
            vectors = window.data[:, : self._vector_size]
            stacked[i, length - len(vectors) :] = vectors
            stacked[i, : length - len(vectors)] = vectors[0]  # causal: padding only shapes the past
        began = time.perf_counter()
        with torch.no_grad(), torch.autocast(self.device.type, enabled=self._autocast):
            out = self.model.heads(torch.from_numpy(stacked).to(self.device))
        probabilities = torch.sigmoid(out["findings"][:, -1].float()).cpu().numpy()
        rates = out["resp_rate"][:, -1].float().cpu().numpy()
        self.stats.heads_s += time.perf_counter() - began
        self.stats.windows += len(windows)
        inferred_at = now or datetime.now(UTC)
        detections = []
        for i, window in enumerate(windows):
            state = self.beds[window.bed_id]
            detections.append(self._detection(window, state, probabilities[i], float(rates[i]), inferred_at))
        self.stats.detections += len(detections)
        return detections

    def _detection(
        self, window: Window, state: BedState, probabilities: np.ndarray, rate: float, inferred_at: datetime
    ) -> Detection:
        flow = window.data[:, self._vector_size : -1]
        energy = window.data[:, -1].astype(np.float64)
        classical = estimate_resp_rate(flow, self.config.fps) if len(flow) >= self.config.fps * 8 else None
        hop = max(1, int(self.config.hop_s * self.config.fps))
        burst = bool(twitch_bursts(energy, self.config.fps)[-hop:].any())
        apnea = float(probabilities[FINDINGS.index("apnea")])
        return Detection(
            bed_id=window.bed_id,
            camera_id=state.camera_id,
            ts=datetime.fromtimestamp(window.last_capture_s, UTC),
            seq=window.last_seq,
            model=self.model.config.name,
            model_version=self.model_version,
            grimace=float(probabilities[FINDINGS.index("grimace")]),
            twitch=float(probabilities[FINDINGS.index("twitch")]),
            apnea=apnea,
            resp_rate=None if apnea >= 0.5 else round(min(max(rate, 0.0), 120.0), 2),
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
