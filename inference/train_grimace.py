"""`icu train-grimace`: train the grimace detector (:mod:`inference.grimace`) on a clip set and
store it in a temporal model's weights file, with the grimace decision rule fitted again for it.

The loop is :func:`inference.detector_training.fit_detector` (seeded, step-counted, half
positive batches, plain steps first, then augmented ones, the best augmented step on validation
kept), over every ``frame_step``-th frame of the training clips. The plain steps come first
because the detector has to find faces before anything else: in the trial that chose this,
brightness, offset and noise augmentation (and a learning rate of 2e-3) from the first step kept
it at chance (loss 0.693 for 1,100 steps), where plain frames at 1e-3 took it below 0.4 by step
600.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from inference.detector_training import (
    DetectorTrainConfig,
    fit_detector,
    prepare_detector_training,
    sample_scores,
    scores_of,
    store_detector,
)
from inference.evaluate import Clip, EvalError, decode
from inference.grimace import GrimaceConfig, GrimaceNet, as_tensor, grimace_logits, stored_grimace, to_grimace_input
from inference.train import TrainError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GrimaceTrainConfig(DetectorTrainConfig):
    """The grimace detector's schedule: :class:`DetectorTrainConfig`'s defaults."""


def load_greyscale(clip: Clip, config: GrimaceConfig, frame_step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every ``frame_step``-th frame of ``clip`` as the detector sees it, and their grimace labels."""
    labels = np.asarray(clip.labels["grimace"], np.float32)
    frames = np.stack([to_grimace_input(image, config) for image in decode(clip.video)])
    if len(frames) != len(labels):
        raise EvalError(f"{clip.video}: {len(frames)} frames decoded, {len(labels)} grimace labels")
    return frames[::frame_step], labels[::frame_step]


def _load_all(
    clips: Sequence[Clip], config: GrimaceConfig, frame_step: int, workers: int, desc: str
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    load = partial(load_greyscale, config=config, frame_step=frame_step)
    if workers <= 1:
        yield from (load(clip) for clip in tqdm(clips, desc=desc, unit="clip"))
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from tqdm(pool.map(load, clips, chunksize=2), total=len(clips), desc=desc, unit="clip")


def _load_frames(
    clips: Sequence[Clip], config: GrimaceConfig, frame_step: int, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every ``frame_step``-th frame of all ``clips`` in one array, filled clip by clip as they
    are decoded (60,000 frames at 320x240 are 4.6 GB: one copy, not two)."""
    counts = [len(clip.labels["grimace"][::frame_step]) for clip in clips]
    frames = np.empty((sum(counts), config.height, config.width), np.uint8)
    labels = np.empty(sum(counts), np.float32)
    at = 0
    for (clip_frames, clip_labels), count in zip(_load_all(clips, config, frame_step, workers, "loading train"),
                                                 counts, strict=True):  # fmt: skip
        frames[at : at + count], labels[at : at + count] = clip_frames, clip_labels
        at += count
    return frames, labels


def frame_scores(
    net: GrimaceNet, clips: Sequence[tuple[np.ndarray, np.ndarray]], device: torch.device
) -> dict[str, float]:
    return scores_of([(grimace_logits(net, frames, device), labels) for frames, labels in clips])


def train_grimace(
    *,
    data: Path,
    weights: Path,
    config: GrimaceTrainConfig | None = None,
    device: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Train on ``data`` (DIR/train + DIR/val, or a stable split by clip id), then store the
    detector in ``weights`` (a ``model.pt`` of `icu train`) and in the ``.json`` beside it, and
    fit the grimace decision rule again on the validation clips. Returns what was stored."""
    config = config or GrimaceTrainConfig()
    saved, target, rng, train_clips, val_clips = prepare_detector_training("grimace", data, weights, config, device)
    net_config = GrimaceConfig()
    workers = max(1, min(workers or os.cpu_count() or 1, len(train_clips)))
    frames, labels = _load_frames(train_clips, net_config, config.frame_step, workers)
    positives, negatives = np.flatnonzero(labels >= 0.5), np.flatnonzero(labels < 0.5)
    if len(positives) == 0 or len(negatives) == 0:
        raise TrainError(f"--data: the training clips of {data} need frames with and without grimace")
    val = list(_load_all(val_clips, net_config, 1, workers, "loading val"))
    val_sparse = [(f[:: config.val_frame_step], y[:: config.val_frame_step]) for f, y in val]
    log.info("grimace detector: %d training frames (%d grimacing) from %d clips, %d validation clips, on %s",
             len(frames), len(positives), len(train_clips), len(val_clips), target)  # fmt: skip

    net = GrimaceNet(net_config).to(target)

    @functools.cache
    def val_flat() -> tuple[np.ndarray, np.ndarray]:  # once, and only when augmented validation asks
        return np.concatenate([f for f, _ in val_sparse]), np.concatenate([y for _, y in val_sparse])

    def validate_augmented() -> dict[str, float]:
        val_frames, val_labels = val_flat()
        return sample_scores(net, lambda index: as_tensor(val_frames[index], target), val_labels,
                             augmentation=config.augmentation)  # fmt: skip

    step = fit_detector(
        net,
        name="grimace",
        config=config,
        positives=positives,
        negatives=negatives,
        labels=labels,
        batch=lambda index: as_tensor(frames[index], target),
        validate=lambda: frame_scores(net, val_sparse, target),
        validate_augmented=validate_augmented,
        rng=rng,
    )
    read = [(grimace_logits(net, frames, target), labels) for frames, labels in val]  # once, for both
    return store_detector(
        weights, saved, "grimace", stored_grimace(net.cpu()), read,
        {"config": net_config.to_dict(), "train_config": asdict(config), "data": str(data), "step": step},
    )  # fmt: skip
