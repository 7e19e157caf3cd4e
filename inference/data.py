"""Clip sets as training data: decoded once, resized to the model's input, kept as uint8.

Any directory in the clip dataset format works (the simulator's or a hospital's own annotated
video). Labels a clip does not have are masked out of the loss, never guessed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from inference.evaluate import Clip, decode, find_clips
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


def to_model_input(image_bgr: np.ndarray, config: ModelConfig) -> np.ndarray:
    """One frame as the model sees it: RGB at the configured size, uint8."""
    small = cv2.resize(image_bgr, (config.width, config.height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def load_clip(clip: Clip, config: ModelConfig) -> LoadedClip:
    frames = np.stack([to_model_input(image, config) for image in decode(clip.video)])
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
    return LoadedClip(clip.clip_id, clip.fps, frames, findings, mask, resp)


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


def random_windows(
    clips: list[LoadedClip], *, count: int, frames: int, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """A batch of ``count`` random crops of ``frames`` frames (shorter clips are used whole and
    padded by repeating their first frame, with the padding masked out)."""
    batch_frames = np.zeros((count, frames, *clips[0].frames.shape[1:]), np.uint8)
    findings = np.zeros((count, frames, len(FINDINGS)), np.float32)
    mask = np.zeros((count, frames, len(FINDINGS)), bool)
    resp = np.full((count, frames), np.nan, np.float32)
    for i in range(count):
        clip = clips[int(rng.integers(len(clips)))]
        n = clip.frames.shape[0]
        start = int(rng.integers(0, n - frames + 1)) if n > frames else 0
        end = min(n, start + frames)
        pad = frames - (end - start)
        batch_frames[i, pad:] = clip.frames[start:end]
        batch_frames[i, :pad] = clip.frames[start]
        findings[i, pad:] = clip.findings[start:end]
        mask[i, pad:] = clip.findings_mask[start:end]
        resp[i, pad:] = clip.resp_rate[start:end]
    return batch_tensors(batch_frames, findings, mask, resp)


def batch_tensors(
    frames: np.ndarray, findings: np.ndarray, mask: np.ndarray, resp: np.ndarray
) -> dict[str, torch.Tensor]:
    return {
        "frames": torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float().div_(255.0),
        "findings": torch.from_numpy(findings),
        "mask": torch.from_numpy(mask),
        "resp_rate": torch.from_numpy(resp),
    }
