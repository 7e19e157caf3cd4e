"""`icu train-twitch`: train the twitch detector (:mod:`inference.twitch`) on a clip set and store
it in a temporal model's weights file, with the twitch decision rule fitted again for it.

The same loop as the grimace detector's (:func:`inference.detector_training.fit_detector`: seeded,
step-counted, half positive batches, the best step on validation kept), over frame stacks: each
sample is a frame with its neighbours (two on each side by default). Unlike the grimace
detector's, the default schedule has no augmented steps (see :class:`TwitchTrainConfig`).

Which frames are samples: every twitching frame; every ``frame_step``-th frame of the rest; and
every frame within ``margin`` frames of a twitching one, which is where the detector must learn
that the frame after a jerk (the limb coming back) and the frame before it are not the jerk. Only
the frames the samples need are kept in memory, once each.
"""

from __future__ import annotations

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
    store_detector,
)
from inference.evaluate import Clip, EvalError, decode
from inference.grimace import to_grimace_input
from inference.train import TrainError
from inference.twitch import TwitchConfig, TwitchNet, stacks_tensor, stored_twitch, twitch_logits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TwitchTrainConfig(DetectorTrainConfig):
    # No augmented steps by default: in the trial with 1,500 plain steps and 4,500 augmented ones
    # (the grimace detector's recipe), validation F1 was 0.77 at step 1000 (plain) and 0.69 and
    # 0.68 at steps 2000 and 3000 (augmented). A jerk is a change between neighbouring frames,
    # which the camera's look changes less than it changes a face.
    steps: int = 4000
    plain_steps: int = 4000
    frame_step: int = 10  # every 10th frame that does not twitch, and the margins around those that do
    margin: int = 2


def sample_frames(labels: np.ndarray, frame_step: int, margin: int) -> np.ndarray:
    """Indexes of a clip's frames that are samples (see the module docstring), in order."""
    n = len(labels)
    chosen = np.zeros(n, bool)
    chosen[::frame_step] = True
    twitching = np.flatnonzero(labels >= 0.5)
    for offset in range(-margin, margin + 1):
        near = twitching + offset
        chosen[near[(near >= 0) & (near < n)]] = True
    return np.flatnonzero(chosen)


def stack_indexes(samples: np.ndarray, n: int, neighbours: int) -> np.ndarray:
    """(samples, 2 * neighbours + 1): the frames each sample reads, oldest first, clipped to the
    clip's ``n`` frames (an edge frame standing in for missing ones, as when reading a clip)."""
    return (samples[:, None] + np.arange(-neighbours, neighbours + 1)[None]).clip(0, n - 1)


def needed_frames(samples: np.ndarray, n: int, neighbours: int) -> np.ndarray:
    """Indexes of the frames ``samples`` read, in order, once each."""
    return np.unique(stack_indexes(samples, n, neighbours))


def _clip_frames(clip: Clip, keep: np.ndarray, config: TwitchConfig) -> np.ndarray:
    frames = [to_grimace_input(image, config) for image in decode(clip.video)]
    if len(frames) != len(clip.labels["twitch"]):
        raise EvalError(f"{clip.video}: {len(frames)} frames decoded, {len(clip.labels['twitch'])} twitch labels")
    return np.stack([frames[i] for i in keep])


def _decoded(clips: Sequence[Clip], config: TwitchConfig, keeps: Sequence[np.ndarray], workers: int,
             desc: str) -> Iterator[np.ndarray]:  # fmt: skip
    if workers <= 1:
        yield from (_clip_frames(c, k, config) for c, k in tqdm(list(zip(clips, keeps, strict=True)), desc=desc))
        return
    with ProcessPoolExecutor(workers) as pool:
        read = pool.map(partial(_clip_frames, config=config), clips, keeps, chunksize=2)
        yield from tqdm(read, total=len(clips), desc=desc, unit="clip")


@dataclass(frozen=True)
class StackSet:
    """Samples as frame stacks: ``frames`` (kept frames, uint8 (n, H, W)), ``stacks`` (samples,
    span) indexes into them (oldest first, the sample's own frame in the middle), ``labels``
    (samples,) 0/1."""

    frames: np.ndarray
    stacks: np.ndarray
    labels: np.ndarray
    clip_ends: np.ndarray  # (clips,) where each clip's kept frames end in ``frames``

    def batch(self, index: np.ndarray, device: torch.device) -> torch.Tensor:
        return stacks_tensor(self.frames[self.stacks[index]], device)

    def clip_frames(self) -> list[np.ndarray]:
        """Each clip's kept frames (every frame of it, for a set loaded with ``every_frame``)."""
        return np.split(self.frames, self.clip_ends[:-1])


def load_stacks(
    clips: Sequence[Clip],
    config: TwitchConfig,
    *,
    frame_step: int,
    margin: int,
    workers: int,
    desc: str,
    every_frame: bool = False,
) -> StackSet:
    """The samples of ``clips`` (:func:`sample_frames`), their frames (or, ``every_frame``, all
    of each clip's, to read whole clips too) decoded in ``workers`` processes into one
    preallocated array."""
    plans = []
    for clip in clips:
        labels = np.asarray(clip.labels["twitch"], np.float32)
        samples = sample_frames(labels, frame_step, margin)
        keep = np.arange(len(labels)) if every_frame else needed_frames(samples, len(labels), config.neighbours)
        plans.append((labels, samples, keep))
    frames = np.empty((sum(len(keep) for _, _, keep in plans), config.height, config.width), np.uint8)
    stacks: list[np.ndarray] = []
    sample_labels: list[np.ndarray] = []
    ends: list[int] = []
    at = 0
    for (clip_labels, samples, keep), decoded in zip(plans, _decoded(clips, config, [p[2] for p in plans], workers,
                                                                     desc), strict=True):  # fmt: skip
        frames[at : at + len(keep)] = decoded
        near = stack_indexes(samples, len(clip_labels), config.neighbours)
        stacks.append(at + np.searchsorted(keep, near))
        sample_labels.append(clip_labels[samples])
        at += len(keep)
        ends.append(at)
    return StackSet(frames, np.concatenate(stacks), np.concatenate(sample_labels), np.asarray(ends))


def train_twitch(
    *,
    data: Path,
    weights: Path,
    config: TwitchTrainConfig | None = None,
    device: str | None = None,
    workers: int | None = None,
    net_config: TwitchConfig | None = None,
) -> dict[str, Any]:
    """Train on ``data`` (DIR/train + DIR/val, or a stable split by clip id), then store the
    detector (``net_config``, default :class:`TwitchConfig`) in ``weights`` (a ``model.pt`` of
    `icu train`) and in the ``.json`` beside it, and fit the twitch decision rule again on the
    validation clips. Returns what was stored."""
    config = config or TwitchTrainConfig()
    if config.frame_step < 1 or config.margin < 0:
        raise TrainError("twitch training: frame step >= 1, margin >= 0")
    saved, target, rng, train_clips, val_clips = prepare_detector_training("twitch", data, weights, config, device)
    net_config = net_config or TwitchConfig()
    lookahead = int(saved["model_config"].get("lookahead_frames", 0))
    if net_config.neighbours > lookahead:  # the worker could not use it: refuse before training
        raise TrainError(
            f"--weights: the model's lookahead ({lookahead} frames) is shorter than the twitch detector's "
            f"{net_config.neighbours} frames of neighbours; its live readings would come too late"
        )
    workers = max(1, min(workers or os.cpu_count() or 1, len(train_clips)))
    train = load_stacks(train_clips, net_config, frame_step=config.frame_step, margin=config.margin,
                         workers=workers, desc="loading train")  # fmt: skip
    positives, negatives = np.flatnonzero(train.labels >= 0.5), np.flatnonzero(train.labels < 0.5)
    if len(positives) == 0 or len(negatives) == 0:
        raise TrainError(f"--data: the training clips of {data} need frames with and without twitch")
    # Validation during training on every val_frame_step-th frame (and the margins); the final
    # fit reads every frame of the same decoded clips.
    val = load_stacks(val_clips, net_config, frame_step=config.val_frame_step, margin=config.margin,
                      workers=workers, desc="loading val", every_frame=True)  # fmt: skip
    log.info("twitch detector: %d training samples (%d twitching) over %d kept frames from %d clips, %d validation "
             "clips, on %s", len(train.labels), len(positives), len(train.frames), len(train_clips), len(val_clips),
             target)  # fmt: skip

    net = TwitchNet(net_config).to(target)

    def val_inputs(index: np.ndarray) -> torch.Tensor:
        return val.batch(index, target)

    step = fit_detector(
        net,
        name="twitch",
        config=config,
        positives=positives,
        negatives=negatives,
        labels=train.labels,
        batch=lambda index: train.batch(index, target),
        validate=lambda: sample_scores(net, val_inputs, val.labels),
        validate_augmented=lambda: sample_scores(net, val_inputs, val.labels, augmentation=config.augmentation),
        rng=rng,
    )
    read = [(twitch_logits(net, frames, target), np.asarray(clip.labels["twitch"], np.float32))
            for clip, frames in zip(val_clips, val.clip_frames(), strict=True)]  # fmt: skip
    return store_detector(
        weights, saved, "twitch", stored_twitch(net.cpu()), read,
        {"config": net_config.to_dict(), "train_config": asdict(config), "data": str(data), "step": step},
    )  # fmt: skip
