"""The classical (non-learned) baseline: respiration from chest motion, apnea, twitch bursts.

It is both the second opinion inside every detection and the baseline the learned model is
evaluated against. Nothing here is trained; every threshold is a named constant.

**Respiration.** Dense optical flow (OpenCV DIS, ultrafast preset) between consecutive frames at
160x120; its vertical component is averaged over 8x8-pixel cells. Over a sliding window each
cell's series is detrended, Hann-windowed and Fourier-transformed; the respiratory band is
0.08-1.2 Hz (5-72 breaths/min). The chest region is **selected automatically** per window: the
cells whose band spectrum is most concentrated in one peak (signal-quality index, SQI = power
within +-0.05 Hz of the peak / band power) and strongest, sign-aligned to the best cell and
summed. The rate is the spectral peak of that sum (parabolic interpolation between bins), its SQI
the quality. Below :data:`MIN_QUALITY` no rate is reported (coverage drops rather than accuracy).

**Apnea.** The short-time RMS (2 s) of the selected cells' band-passed signal, relative to the
clip's (or stream's) typical breathing amplitude, below :data:`APNEA_RELATIVE_RMS` for at least
:data:`APNEA_MIN_S`.

**Twitch.** Motion energy (mean absolute frame difference over the most-changed 2% of cells)
against a rolling median + k x MAD: short bursts (at most :data:`TWITCH_MAX_S`) are jerks; long
ones are gross movement, not twitch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np

FLOW_SIZE: Final = (160, 120)
CELL_PX: Final = 8
BAND_HZ: Final = (0.08, 1.2)
PEAK_HALF_WIDTH_HZ: Final = 0.05
WINDOW_S: Final = 15.0
MIN_WINDOW_S: Final = 8.0
TOP_CELLS: Final = 0.1
MIN_QUALITY: Final = 0.35
APNEA_RMS_S: Final = 2.0
APNEA_RELATIVE_RMS: Final = 0.3
APNEA_MIN_S: Final = 5.0
TWITCH_K_MAD: Final = 6.0
TWITCH_MAX_S: Final = 0.6
TWITCH_MIN_EXCESS: Final = 4.0
TWITCH_BASELINE_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class FrameFeatures:
    """What the baseline keeps of each frame: per-cell vertical flow and the motion energy."""

    cell_flow: np.ndarray  # (cells,) float32, mean vertical flow per 8x8 cell, pixels/frame
    motion_energy: float  # mean absolute difference from the previous frame in its most-changed cells, 0-255


class FeatureExtractor:
    """Per-frame features, one frame at a time (the worker feeds it a stream)."""

    def __init__(self) -> None:
        self._flow = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    def push(self, image_bgr: np.ndarray) -> FrameFeatures:
        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
        small = cv2.resize(gray, FLOW_SIZE, interpolation=cv2.INTER_AREA)
        width, height = FLOW_SIZE
        cells = (height // CELL_PX) * (width // CELL_PX)
        if self._previous is None:
            self._previous = small
            return FrameFeatures(np.zeros(cells, np.float32), 0.0)
        flow = np.asarray(self._flow.calc(self._previous, small, None))  # type: ignore[call-overload]
        vertical = flow[..., 1].reshape(height // CELL_PX, CELL_PX, width // CELL_PX, CELL_PX).mean(axis=(1, 3))
        # Jerks move a limb, a small part of the frame: the mean over the most-changed 2% of
        # cells, not over the whole frame, so a hand's jerk is not averaged away.
        diff = cv2.absdiff(small, self._previous).astype(np.float32)
        per_cell = diff.reshape(height // CELL_PX, CELL_PX, width // CELL_PX, CELL_PX).mean(axis=(1, 3)).ravel()
        top = max(1, per_cell.size // 50)
        energy = float(np.partition(per_cell, -top)[-top:].mean())
        self._previous = small
        return FrameFeatures(vertical.ravel().astype(np.float32), energy)


@dataclass(frozen=True, slots=True)
class RespEstimate:
    rate_bpm: float | None
    quality: float
    cells: np.ndarray  # indexes of the cells chosen as the chest region
    signal: np.ndarray  # the combined, detrended chest signal over the window


def _band(n: int, fps: float) -> tuple[np.ndarray, np.ndarray, int]:
    nfft = max(2048, 1 << int(np.ceil(np.log2(n * 4))))
    freqs = np.fft.rfftfreq(nfft, d=1.0 / fps)
    band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
    return freqs, band, nfft


def _peak_sqi(power: np.ndarray, freqs: np.ndarray, band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-series peak frequency index (within the band) and SQI. ``power`` is (..., freqs)."""
    banded = np.where(band, power, 0.0)
    peak = banded.argmax(axis=-1)
    total = banded.sum(axis=-1) + 1e-12
    resolution = freqs[1] - freqs[0]
    half = max(1, round(PEAK_HALF_WIDTH_HZ / resolution))
    idx = np.arange(power.shape[-1])
    near = np.abs(idx[None, :] - peak[..., None]) <= half if power.ndim > 1 else np.abs(idx - peak) <= half
    sqi = np.where(near, banded, 0.0).sum(axis=-1) / total
    return peak, sqi


def _chest_signal(cells: np.ndarray) -> np.ndarray:
    """The chosen cells' series (best first), sign-aligned to the best one and summed: cells on
    either side of the chest's edge move in opposite directions and would otherwise cancel."""
    signs = np.sign(cells.T @ cells[:, 0])
    signs[signs == 0] = 1.0
    return (cells * signs).sum(axis=1)


def estimate_resp_rate(cell_flow: np.ndarray, fps: float) -> RespEstimate:
    """Respiration rate over one window of per-cell flow, shape (frames, cells)."""
    n = cell_flow.shape[0]
    series = cell_flow - cell_flow.mean(axis=0, keepdims=True)
    taper = np.hanning(n)[:, None]
    freqs, band, nfft = _band(n, fps)
    power = np.abs(np.fft.rfft(series * taper, n=nfft, axis=0)) ** 2  # (freqs, cells)
    _, sqi = _peak_sqi(power.T, freqs, band)
    strength = np.where(band[:, None], power, 0.0).sum(axis=0)
    score = sqi * strength
    count = max(4, round(series.shape[1] * TOP_CELLS))
    chosen = np.argsort(score)[::-1][:count]
    combined = _chest_signal(series[:, chosen])
    spectrum = np.abs(np.fft.rfft(combined * taper[:, 0], n=nfft)) ** 2
    peak, quality = _peak_sqi(spectrum, freqs, band)
    k = int(peak)
    offset = 0.0
    if 0 < k < spectrum.size - 1:
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-20)
        denominator = a - 2 * b + c
        # Interpolate only at a true local maximum (a band-edge arg-max may not be one).
        if b >= a and b >= c and denominator < 0:
            offset = float(np.clip(0.5 * (a - c) / denominator, -0.5, 0.5))
    rate = float((freqs[k] + offset * (freqs[1] - freqs[0])) * 60.0)
    q = float(quality)
    return RespEstimate(rate if q >= MIN_QUALITY else None, q, chosen, combined)


def _bandpass(signal: np.ndarray, fps: float) -> np.ndarray:
    n = signal.size
    _freqs, band, nfft = _band(n, fps)
    spectrum = np.fft.rfft(signal - signal.mean(), n=nfft)
    spectrum[~band] = 0
    return np.fft.irfft(spectrum, n=nfft)[:n]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def twitch_bursts(energy: np.ndarray, fps: float) -> np.ndarray:
    """Frames inside short motion-energy bursts (jerks), as 0/1."""
    n = energy.size
    out = np.zeros(n, np.int8)
    if n < 3:
        return out
    half = max(2, int(TWITCH_BASELINE_S * fps / 2))
    # Reflect, not repeat, at the ends: repeating a spike on the last frame would make the
    # baseline the spike itself and hide the newest jerk from a live worker.
    padded = np.pad(energy, half, mode="reflect" if n > half else "edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)[:n]
    median = np.median(windows, axis=1)
    mad = np.median(np.abs(windows - median[:, None]), axis=1)
    # The absolute floor keeps sensor noise on a still scene (MAD near 0) from counting as jerks.
    hot = energy > median + np.maximum(TWITCH_K_MAD * mad, TWITCH_MIN_EXCESS)
    for start, end in _runs(hot):
        if (end - start) / fps <= TWITCH_MAX_S:
            out[start:end] = 1
    return out


@dataclass(frozen=True, slots=True)
class ClipAnalysis:
    """Per-frame outputs of the baseline over a whole clip."""

    resp_rate_bpm: list[float | None]
    resp_quality: list[float]
    apnea: np.ndarray
    twitch: np.ndarray
    motion_energy: np.ndarray


def analyse(features: list[FrameFeatures], fps: float) -> ClipAnalysis:
    """The baseline over a recorded clip: rate per second from a window centred on it (shifted
    inward at the clip's ends), apnea from the chest signal's amplitude, twitch from bursts."""
    n = len(features)
    flow = np.stack([f.cell_flow for f in features]) if n else np.zeros((0, 1), np.float32)
    energy = np.array([f.motion_energy for f in features], np.float64)
    rates: list[float | None] = [None] * n
    qualities = [0.0] * n
    window = round(WINDOW_S * fps)
    if n >= int(MIN_WINDOW_S * fps):
        window = min(window, n)
        chest_cells: np.ndarray | None = None
        best_quality = -1.0
        for second_start in range(0, n, max(1, round(fps))):
            centre = second_start + int(fps) // 2
            lo = min(max(0, centre - window // 2), n - window)
            estimate = estimate_resp_rate(flow[lo : lo + window], fps)
            for i in range(second_start, min(n, second_start + round(fps))):
                rates[i] = estimate.rate_bpm
                qualities[i] = estimate.quality
            if estimate.quality > best_quality:
                best_quality, chest_cells = estimate.quality, estimate.cells
        apnea = _apnea(flow, chest_cells, fps)
    else:
        apnea = np.zeros(n, np.int8)
    for index in np.flatnonzero(apnea).tolist():
        rates[index] = None  # no breathing, no rate
    return ClipAnalysis(rates, qualities, apnea, twitch_bursts(energy, fps), energy)


def _apnea(flow: np.ndarray, chest_cells: np.ndarray | None, fps: float) -> np.ndarray:
    n = flow.shape[0]
    out = np.zeros(n, np.int8)
    if chest_cells is None or n == 0:
        return out
    chest = _bandpass(_chest_signal(flow[:, chest_cells] - flow[:, chest_cells].mean(axis=0)), fps)
    half = max(1, int(APNEA_RMS_S * fps / 2))
    padded = np.pad(chest**2, half, mode="edge")
    rms = np.sqrt(np.convolve(padded, np.ones(2 * half + 1) / (2 * half + 1), mode="valid"))[:n]
    reference = float(np.percentile(rms, 80))
    if reference <= 1e-6:
        return out
    quiet = rms < APNEA_RELATIVE_RMS * reference
    for start, end in _runs(quiet):
        if (end - start) / fps >= APNEA_MIN_S:
            out[start:end] = 1
    return out
