"""`icu train-grimace`: train the grimace detector (:mod:`inference.grimace`) on a clip set and
store it in a temporal model's weights file, with the grimace decision rule fitted again for it.

Seeded and step-counted, so the same data, seed, steps, device and thread count give the same
weights.
Batches are half grimacing frames and half not (grimace is rare). The first ``plain_steps``
steps see the frames as they are: the detector has to find faces before anything else. In the
trial that chose this, brightness, offset and noise augmentation (and a learning rate of 2e-3)
from the first step kept it at chance (loss 0.693 for 1,100 steps), where plain frames at 1e-3
took it below 0.4 by step 600. After them every
batch is augmented (:func:`augment_greyscale`). The weights kept are those of the augmented steps
with the best frame F1 on the validation clips, checked every ``val_every`` steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from inference.data import split_clips
from inference.decisions import DecisionRules, fit_rule
from inference.evaluate import Clip, EvalError, decode
from inference.grimace import (
    GrimaceConfig,
    GrimaceNet,
    as_tensor,
    augment_greyscale,
    grimace_logits,
    sigmoid,
    stored_grimace,
    to_grimace_input,
)
from inference.metrics import FindingScores
from inference.train import TrainError, load_weights_and_rules, seed_everything

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GrimaceTrainConfig:
    seed: int = 0
    steps: int = 8000
    plain_steps: int = 2000  # steps without augmentation first (see the module docstring)
    batch_size: int = 32
    learning_rate: float = 1e-3
    frame_step: int = 4  # training keeps every 4th frame: neighbours look alike, memory stays a few GB
    val_every: int = 1000
    val_frame_step: int = 3  # validation during training on every 3rd frame; the final fit on all
    val_share: float = 0.1


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


def _labelled(clips: Sequence[Clip]) -> list[Clip]:
    return [clip for clip in clips if "grimace" in clip.labels and None not in clip.labels["grimace"]]


def learning_rate(step: int, config: GrimaceTrainConfig) -> float:
    """Constant through the plain steps, then cosine down to 5% of the peak."""
    if step < config.plain_steps:
        return config.learning_rate
    progress = (step - config.plain_steps) / max(1, config.steps - config.plain_steps)
    return config.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def frame_scores(
    net: GrimaceNet, clips: Sequence[tuple[np.ndarray, np.ndarray]], device: torch.device
) -> dict[str, float]:
    return scores_of([(grimace_logits(net, frames, device), labels) for frames, labels in clips])


def scores_of(read: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Frame scores at the 0.5 threshold of (logits, labels) per clip."""
    scores = FindingScores()
    for logits, labels in read:
        scores.add(logits >= 0.0, labels >= 0.5)
    return scores.summary()


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
    if config.steps < 1 or not 0 <= config.plain_steps <= config.steps or config.batch_size < 2:
        raise TrainError("grimace training: steps >= 1, 0 <= plain steps <= steps, batch size >= 2")
    if not weights.is_file():
        raise TrainError(f"--weights: no model file {weights} (train the temporal model first with `icu train`)")
    saved = torch.load(weights, map_location="cpu", weights_only=True)
    if "model_config" not in saved or "state_dict" not in saved:
        raise TrainError(f"--weights: {weights} is not a model.pt of icu train (last.pt is a checkpoint)")
    try:  # refuse a file the worker could not load before training, not after
        load_weights_and_rules(weights)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise TrainError(f"--weights: {weights} does not load: {exc}") from None
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    train_clips, val_clips = (_labelled(clips) for clips in split_clips(data, config.val_share))
    if not train_clips or not val_clips:
        raise TrainError(f"--data: {data} needs clips labelling grimace on every frame, for training and validation")
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
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    half = config.batch_size // 2
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    progress = tqdm(range(config.steps), desc="grimace", unit="step")
    running = 0.0
    for step in progress:
        net.train()
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, config)
        index = np.concatenate([rng.choice(positives, half), rng.choice(negatives, config.batch_size - half)])
        batch = as_tensor(frames[index], target)
        if step >= config.plain_steps:
            batch = augment_greyscale(batch, rng)
        loss = F.binary_cross_entropy_with_logits(net(batch), torch.from_numpy(labels[index]).to(target))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        running = 0.98 * running + 0.02 * float(loss.detach()) if step else float(loss.detach())
        progress.set_postfix(loss=f"{running:.4f}")
        if (step + 1) % config.val_every == 0 or step + 1 == config.steps:
            scores = frame_scores(net, val_sparse, target)
            log.info("step %d: loss %.4f, validation grimace F1 %.4f (precision %.3f, recall %.3f)",
                     step + 1, running, scores["f1"], scores["precision"], scores["recall"])  # fmt: skip
            # Only augmented steps compete (unless there are none): the plain steps are the warm-up,
            # and validation clips share the training clips' look, so they would favour the
            # model that never saw a darker room or a tilted camera.
            augmented = step >= config.plain_steps or config.plain_steps == config.steps
            if augmented and (best is None or scores["f1"] > best[0]):
                best = (scores["f1"], step + 1, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
    assert best is not None
    net.load_state_dict(best[2])
    read = [(grimace_logits(net, frames, target), labels) for frames, labels in val]  # once, for both
    validation = scores_of(read)
    fit = fit_rule([(sigmoid(logits), labels >= 0.5) for logits, labels in read])
    log.info("kept step %d: validation grimace F1 %.4f on every frame; decision rule %s (fitting score %.4f, "
             "plain 0.5 threshold %.4f)", best[1], validation["f1"], fit.rule.describe(), fit.score,
             fit.threshold_score)  # fmt: skip
    record = {
        "config": net_config.to_dict(),
        "train_config": asdict(config),
        "data": str(data),
        "step": best[1],
        "validation": validation,
        "synthetic_training_data": True,
        "clinically_validated": False,
    }
    rules = DecisionRules.from_dict(saved.get("decision"))
    rules = dataclasses.replace(rules, grimace=fit.rule)
    saved["grimace"] = stored_grimace(net.cpu())
    saved["decision"] = rules.to_dict()
    torch.save(saved, weights)
    card = weights.with_suffix(".json")
    if card.exists():
        document = json.loads(card.read_text())
        document["grimace_detector"] = record
        document["decision"] = rules.to_dict()
        document.setdefault("decision_fit", {})["grimace"] = {
            "score": round(fit.score, 4),
            "threshold_score": round(fit.threshold_score, 4),
        }
        card.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return {**record, "decision": rules.to_dict()}
