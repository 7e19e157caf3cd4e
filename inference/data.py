"""Clip sets as training data: decoded once, resized to the model's input, kept as uint8.

Any directory in the clip dataset format works (the simulator's or a hospital's own annotated
video). Labels a clip does not have are masked out of the loss, never guessed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

from inference.evaluate import Clip, decode, find_clips
from inference.grimace import FrameSize, to_grimace_input
from inference.metrics import FINDINGS
from inference.model import ModelConfig


@dataclass(frozen=True, slots=True)
class LoadedClip:
    clip_id: str
    fps: float
    frames: np.ndarray  # (time, H, W, 3) uint8 RGB at the model's input size
    findings: np.ndarray  # (time, 3) float32 0/1
    findings_mask: np.ndarray  # (time, 3) bool: labelled
    resp_rate: np.ndarray  # (time,) float32, NaN where unknown
    grey: np.ndarray | None = None  # (time, H, W) uint8 as the detectors (grimace, twitch) see it, when asked for


def to_model_input(image_bgr: np.ndarray, config: ModelConfig) -> np.ndarray:
    """One frame as the model sees it: RGB at the configured size, uint8."""
    small = cv2.resize(image_bgr, (config.width, config.height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def decode_inputs(
    video: Path, config: ModelConfig, grey: FrameSize | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A video's frames at the model's input, decoded once, and for ``grey`` also greyscale at
    that size, as the detectors read them (else an empty list)."""
    small, greyscale = [], []
    for image in decode(video):
        small.append(to_model_input(image, config))
        if grey is not None:
            greyscale.append(to_grimace_input(image, grey))
    return small, greyscale


def load_clip(clip: Clip, config: ModelConfig, grey: FrameSize | None = None) -> LoadedClip:
    """A clip at the model's input, and for ``grey`` also as the detectors read it."""
    small, greyscale = decode_inputs(clip.video, config, grey)
    frames = np.stack(small)
    n = frames.shape[0]
    findings = np.zeros((n, len(FINDINGS)), np.float32)
    mask = np.zeros((n, len(FINDINGS)), bool)
    for k, name in enumerate(FINDINGS):
        values = clip.labels.get(name)
        if values is not None:
            if len(values) != n:
                raise ValueError(f"{clip.video}: {n} frames decoded, {len(values)} {name} labels")
            findings[:, k] = np.asarray(values, np.float32)
            mask[:, k] = True
    rates = clip.labels.get("resp_rate_bpm")
    resp = np.full(n, np.nan, np.float32)
    if rates is not None:
        resp[:] = [np.nan if r is None else float(r) for r in rates]
    return LoadedClip(clip.clip_id, clip.fps, frames, findings, mask, resp, np.stack(greyscale) if greyscale else None)


def load_clips(
    clips: Sequence[Clip], config: ModelConfig, *, workers: int | None = None, grey: FrameSize | None = None
) -> Iterator[LoadedClip]:
    """:func:`load_clip` over many clips, in order, decoded in ``workers`` processes (default: one
    per CPU core; decoding H.264 is what makes a large clip set slow to load)."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(clips)))
    if workers == 1:
        yield from (load_clip(clip, config, grey) for clip in clips)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(partial(load_clip, config=config, grey=grey), clips, chunksize=2)


def split_clips(directory: Path, val_share: float) -> tuple[list[Clip], list[Clip]]:
    """(train, val): DIR/train and DIR/val when both exist, else a stable split by clip id."""
    if (directory / "train").is_dir() and (directory / "val").is_dir():
        return find_clips(directory / "train"), find_clips(directory / "val")
    clips = find_clips(directory)

    def bucket(clip: Clip) -> float:
        return int(hashlib.sha256(clip.clip_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    val = [c for c in clips if bucket(c) < val_share]
    train = [c for c in clips if bucket(c) >= val_share]
    if not val or not train:  # tiny sets: keep at least one clip on each side
        val, train = clips[:1], clips[1:] or clips[:1]
    return train, val


class ClipBank:
    """Every training clip's frames and labels in one place on the training device (frames stay
    uint8: a few GB for a large set), so random crops are gathered there instead of being copied
    from host memory at every step."""

    def __init__(self, clips: Sequence[LoadedClip], device: torch.device) -> None:
        if not clips:
            raise ValueError("no training clips")
        self.lengths = np.array([c.frames.shape[0] for c in clips])
        self.starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))
        self.device = device
        self.frames = torch.from_numpy(np.concatenate([c.frames for c in clips])).to(device)
        self.findings = torch.from_numpy(np.concatenate([c.findings for c in clips])).to(device)
        self.mask = torch.from_numpy(np.concatenate([c.findings_mask for c in clips])).to(device)
        self.resp_rate = torch.from_numpy(np.concatenate([c.resp_rate for c in clips])).to(device)

    @property
    def total_frames(self) -> int:
        return int(self.lengths.sum())

    def sample(self, *, count: int, frames: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``count`` random crops of ``frames`` frames; a clip shorter than that is used whole,
        its first frame repeated before it and that padding masked out of the loss."""
        index = np.zeros((count, frames), np.int64)
        valid = np.ones((count, frames), bool)
        for i in range(count):
            k = int(rng.integers(len(self.lengths)))
            n = int(self.lengths[k])
            start = int(rng.integers(0, n - frames + 1)) if n > frames else 0
            offsets = np.arange(frames) - max(0, frames - n)
            valid[i] = offsets >= 0
            index[i] = self.starts[k] + start + np.clip(offsets, 0, None)
        where = torch.from_numpy(index).to(self.device)
        keep = torch.from_numpy(valid).to(self.device)
        resp = self.resp_rate[where]
        return {
            "frames": self.frames[where].permute(0, 1, 4, 2, 3).float().div_(255.0),
            "findings": self.findings[where],
            "mask": self.mask[where] & keep[..., None],
            "resp_rate": torch.where(keep, resp, torch.full_like(resp, float("nan"))),
        }


def augment(frames: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Label-preserving changes per crop (batch, time, 3, H, W) in [0, 1]: mirror image, colour
    cast, brightness and contrast, sensor noise and a small shift of the camera. What the
    simulator already varies per patient is varied further, so the model leans on the
    findings, not on one ward's look. Parameters come from ``rng``: reproducible."""
    b = frames.shape[0]
    device = frames.device

    def draw(low: float, high: float, *shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.uniform(low, high, size=(b, *shape)).astype(np.float32)).to(device)

    flip = torch.from_numpy(rng.random(b) < 0.5).to(device)
    frames = torch.where(flip[:, None, None, None, None], frames.flip(-1), frames)
    gain = draw(0.75, 1.25, 1, 3, 1, 1) * draw(0.7, 1.3, 1, 1, 1, 1)
    mean = frames.mean(dim=(1, 2, 3, 4), keepdim=True)
    contrast = draw(0.7, 1.3, 1, 1, 1, 1)
    frames = (frames - mean) * contrast + mean
    frames = frames * gain + draw(-0.08, 0.08, 1, 1, 1, 1)
    sigma = draw(0.0, 0.03, 1, 1, 1, 1)
    seed = int(rng.integers(2**31))
    generator = torch.Generator(device=device).manual_seed(seed)
    frames = frames + torch.randn(frames.shape, generator=generator, device=device) * sigma
    dy, dx = (int(v) for v in rng.integers(-4, 5, size=2))
    frames = torch.roll(frames, shifts=(dy, dx), dims=(-2, -1))
    return frames.clamp_(0.0, 1.0)
