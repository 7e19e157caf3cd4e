"""What training the two frame detectors shares (:mod:`inference.train_grimace`,
:mod:`inference.train_twitch`): checking the weights file and the data before any work, the
training loop, and storing the result in the weights file with its decision rule fitted again.

Seeded and step-counted, so the same data, seed, steps, device and thread count give the same
weights. Batches are half positive frames and half not (the findings are rare). The first
``plain_steps`` steps see the frames as they are (the grimace detector has to find faces before
anything else; see :mod:`inference.train_grimace`); after them every batch is augmented
(``augmentation``, a name in :data:`inference.grimace.AUGMENTATIONS`: by default
:func:`inference.grimace.augment_greyscale`, the camera's geometry, light and noise; or
:func:`inference.grimace.augment_distance`, the camera nearer or farther only; one draw per
sample, the same for every frame a sample holds). The weights kept are those of the augmented
steps with the best frame F1 on the validation clips, checked every ``val_every`` steps. With
``validate_augmented`` the validation clips are also scored under one fixed draw of that
augmentation (at the augmented steps, the only ones that compete), and the step kept is the one
with the best mean of the two F1s: validation clips share the training clips' look, so on their
own they favour a detector that has learnt that look (the twitch detectors that did best on
validation and test did worst on the unseen split's rooms).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from inference.data import split_clips
from inference.decisions import DecisionRules, fit_rule
from inference.evaluate import Clip
from inference.grimace import AUGMENTATIONS, sigmoid
from inference.metrics import FindingScores
from inference.train import TrainError, load_weights_and_rules, seed_everything

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorTrainConfig:
    seed: int = 0
    steps: int = 8000
    plain_steps: int = 2000  # steps without augmentation first
    batch_size: int = 32
    learning_rate: float = 1e-3
    frame_step: int = 4  # training keeps every 4th frame: neighbours look alike, memory stays a few GB
    val_every: int = 1000
    val_frame_step: int = 3  # validation during training on every 3rd frame; the final fit on all
    val_share: float = 0.1
    validate_augmented: bool = False  # also score validation under the augmentation; keep the best mean
    augmentation: str = "full"  # a name in inference.grimace.AUGMENTATIONS


# The seed of the one draw of the augmentation that validation is scored under: the same draw at
# every check, so that checks compare steps, not draws.
AUGMENTED_VALIDATION_SEED = 7919


def labelled(clips: Sequence[Clip], finding: str) -> list[Clip]:
    return [clip for clip in clips if finding in clip.labels and None not in clip.labels[finding]]


def learning_rate(step: int, config: DetectorTrainConfig) -> float:
    """Constant through the plain steps, then cosine down to 5% of the peak."""
    if step < config.plain_steps:
        return config.learning_rate
    progress = (step - config.plain_steps) / max(1, config.steps - config.plain_steps)
    return config.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def scores_of(read: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Frame scores at the 0.5 threshold of (logits, labels) per clip."""
    scores = FindingScores()
    for logits, labels in read:
        scores.add(logits >= 0.0, labels >= 0.5)
    return scores.summary()


@torch.no_grad()
def sample_scores(
    net: nn.Module,
    inputs: Callable[[np.ndarray], Tensor],
    labels: np.ndarray,
    *,
    augmentation: str | None = None,
    batch: int = 128,
) -> dict[str, float]:
    """Frame scores at the 0.5 threshold of ``net`` on validation samples, read in batches:
    ``inputs`` makes the samples' input tensor from their indexes, ``labels`` holds their 0/1
    labels. ``augmentation`` (a name in :data:`~inference.grimace.AUGMENTATIONS`): under one fixed
    draw of it (:data:`AUGMENTED_VALIDATION_SEED`; the draw is fixed for a given ``batch``)."""
    net.eval()
    augment = None if augmentation is None else AUGMENTATIONS[augmentation]
    look = np.random.default_rng(AUGMENTED_VALIDATION_SEED)
    logits = []
    for start in range(0, len(labels), batch):
        chunk = inputs(np.arange(start, min(start + batch, len(labels))))
        logits.append(net(chunk if augment is None else augment(chunk, look)).float().cpu().numpy())
    return scores_of([(np.concatenate(logits) if logits else np.zeros(0, np.float32), labels)])


def prepare_detector_training(
    finding: str, data: Path, weights: Path, config: DetectorTrainConfig, device: str | None
) -> tuple[dict[str, Any], torch.device, np.random.Generator, list[Clip], list[Clip]]:
    """What training either detector starts with, refusing what would fail later: the loaded
    ``weights`` (checked to load as the worker loads them), the device, the seeded generator, and
    the training and validation clips of ``data`` that label ``finding`` on every frame."""
    if config.steps < 1 or not 0 <= config.plain_steps <= config.steps or config.batch_size < 2:
        raise TrainError(f"{finding} training: steps >= 1, 0 <= plain steps <= steps, batch size >= 2")
    if config.augmentation not in AUGMENTATIONS:
        raise TrainError(f"--augmentation: {config.augmentation!r} is not one of {', '.join(AUGMENTATIONS)}")
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
    train_clips, val_clips = (labelled(clips, finding) for clips in split_clips(data, config.val_share))
    if not train_clips or not val_clips:
        raise TrainError(f"--data: {data} needs clips labelling {finding} on every frame, for training and validation")
    return saved, target, rng, train_clips, val_clips


def fit_detector(
    net: nn.Module,
    *,
    name: str,
    config: DetectorTrainConfig,
    positives: np.ndarray,
    negatives: np.ndarray,
    labels: np.ndarray,
    batch: Callable[[np.ndarray], Tensor],
    validate: Callable[[], dict[str, float]],
    validate_augmented: Callable[[], dict[str, float]],
    rng: np.random.Generator,
) -> int:
    """The training loop both detectors share: batches half ``positives`` and half ``negatives``
    (sample indexes; ``batch`` makes their input tensor, ``labels`` holds their 0/1 labels), plain
    for ``plain_steps`` and augmented after, validated every ``val_every`` steps (``validate``;
    with ``config.validate_augmented`` also ``validate_augmented`` at the augmented steps, and the
    two F1s' mean is the score). Leaves ``net`` with the weights of the best augmented step and
    returns that step."""
    device = next(net.parameters()).device
    augment = AUGMENTATIONS[config.augmentation]
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    half = config.batch_size // 2
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    progress = tqdm(range(config.steps), desc=name, unit="step")
    running = 0.0
    for step in progress:
        net.train()
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, config)
        index = np.concatenate([rng.choice(positives, half), rng.choice(negatives, config.batch_size - half)])
        inputs = batch(index)
        if step >= config.plain_steps:
            inputs = augment(inputs, rng)
        loss = F.binary_cross_entropy_with_logits(net(inputs), torch.from_numpy(labels[index]).to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        running = 0.98 * running + 0.02 * float(loss.detach()) if step else float(loss.detach())
        progress.set_postfix(loss=f"{running:.4f}")
        if (step + 1) % config.val_every == 0 or step + 1 == config.steps:
            scores = validate()
            log.info("step %d: loss %.4f, validation %s F1 %.4f (precision %.3f, recall %.3f)",
                     step + 1, running, name, scores["f1"], scores["precision"], scores["recall"])  # fmt: skip
            score = scores["f1"]
            # Only augmented steps compete (unless there are none): the plain steps are the warm-up,
            # and validation clips share the training clips' look, so they would favour the
            # model that never saw a darker room or a tilted camera.
            augmented = step >= config.plain_steps or config.plain_steps == config.steps
            if config.validate_augmented and augmented:  # a plain step's would be read for nothing
                changed = validate_augmented()
                score = (scores["f1"] + changed["f1"]) / 2
                log.info("step %d: validation %s F1 augmented %.4f (precision %.3f, recall %.3f); score %.4f",
                         step + 1, name, changed["f1"], changed["precision"], changed["recall"], score)  # fmt: skip
            if augmented and (best is None or score > best[0]):
                best = (score, step + 1, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
    assert best is not None
    net.load_state_dict(best[2])
    return best[1]


def store_detector(
    weights: Path,
    saved: dict[str, Any],
    finding: str,
    stored: dict[str, Any],
    read: Sequence[tuple[np.ndarray, np.ndarray]],
    record: dict[str, Any],
) -> dict[str, Any]:
    """Fit ``finding``'s decision rule on the detector's validation logits and labels (``read``,
    per clip), then store the detector under key ``finding`` in ``weights`` (``saved``, its
    loaded contents) and its ``record`` in the ``.json`` beside it. Returns what was stored."""
    validation = scores_of(read)
    fit = fit_rule([(sigmoid(logits), labels >= 0.5) for logits, labels in read])
    log.info("kept step %d: validation %s F1 %.4f on every frame; decision rule %s (fitting score %.4f, "
             "plain 0.5 threshold %.4f)", record["step"], finding, validation["f1"], fit.rule.describe(), fit.score,
             fit.threshold_score)  # fmt: skip
    record = {**record, "validation": validation, "synthetic_training_data": True, "clinically_validated": False}
    rules = dataclasses.replace(DecisionRules.from_dict(saved.get("decision")), **{finding: fit.rule})
    saved[finding] = stored
    saved["decision"] = rules.to_dict()
    torch.save(saved, weights)
    card = weights.with_suffix(".json")
    if card.exists():
        document = json.loads(card.read_text())
        document[f"{finding}_detector"] = record
        document["decision"] = rules.to_dict()
        document.setdefault("decision_fit", {})[finding] = {
            "score": round(fit.score, 4),
            "threshold_score": round(fit.threshold_score, 4),
        }
        card.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return {**record, "decision": rules.to_dict()}
