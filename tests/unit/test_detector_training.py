"""The detectors' shared training loop: which step it keeps, and validation under the augmentation
(one fixed draw, the same at every check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from inference.detector_training import DetectorTrainConfig, fit_detector, prepare_detector_training, sample_scores
from inference.train import TrainError


class Brightness(nn.Module):
    """A frame's logit from its mean brightness: present above mid-grey. Blind to everything but
    the light, which the augmentation changes."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(100.0))

    def forward(self, frames: Tensor) -> Tensor:
        return (frames.mean(dim=(1, 2, 3)) - 0.5) * self.scale


def brightness_samples() -> tuple[np.ndarray, np.ndarray]:
    """Frames at 0.6 (present) and 0.4 (absent) of full brightness, (n, 1, 24, 32)."""
    labels = np.tile([1.0, 0.0], 64).astype(np.float32)
    frames = np.where(labels[:, None, None, None] > 0.5, 0.6, 0.4) * np.ones((1, 1, 24, 32))
    return frames.astype(np.float32), labels


def test_augmented_validation_is_one_fixed_draw_that_changes_the_look() -> None:
    frames, labels = brightness_samples()
    net = Brightness()

    def inputs(index: np.ndarray) -> Tensor:
        return torch.from_numpy(frames[index])

    plain = (net(torch.from_numpy(frames)) >= 0).numpy()
    assert np.array_equal(plain, labels >= 0.5)  # perfect on the look it was made for
    changed = sample_scores(net, inputs, labels, augmentation="full", batch=20)
    # Brightness 0.5-1.5x and gamma move frames across mid-grey: the look changes the answer.
    assert changed["f1"] < 0.95, changed
    # The same draw at every check, whatever the global generators hold.
    np.random.seed(1)
    torch.manual_seed(1)
    assert sample_scores(net, inputs, labels, augmentation="full", batch=20) == changed
    # The distance augmentation leaves the light alone: a net that reads only the light is not fooled.
    assert sample_scores(net, inputs, labels, augmentation="distance", batch=20)["f1"] == 1.0


def fit(config: DetectorTrainConfig, plain_f1: list[float], augmented_f1: list[float]) -> tuple[int, dict, list]:
    """Train a linear net with scripted validation F1s; returns the kept step, the weights left in
    the net and the weights seen at each check."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 1), nn.Flatten(0))
    samples = np.random.default_rng(0).uniform(size=(16, 1, 2, 2)).astype(np.float32)  # 2x2 frames
    labels = (samples[:, 0, 0, 0] > 0.5).astype(np.float32)
    seen: list[dict[str, Tensor]] = []
    plain_scores, changed_scores = iter(plain_f1), iter(augmented_f1)
    augmented_checks = []

    def validate() -> dict[str, float]:
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        return {"f1": next(plain_scores), "precision": 0.0, "recall": 0.0}

    def validate_augmented() -> dict[str, float]:
        augmented_checks.append(len(seen))
        return {"f1": next(changed_scores), "precision": 0.0, "recall": 0.0}

    step = fit_detector(
        net,
        name="test",
        config=config,
        positives=np.flatnonzero(labels > 0.5),
        negatives=np.flatnonzero(labels < 0.5),
        labels=labels,
        batch=lambda index: torch.from_numpy(samples[index]),
        validate=validate,
        validate_augmented=validate_augmented,
        rng=np.random.default_rng(0),
    )
    # Without the setting, the augmented look is never scored; with it, only at the augmented steps
    # (checked at every step here), the only ones that compete.
    assert config.val_every == 1
    competing = [check for check in range(1, len(seen) + 1) if check > config.plain_steps]
    assert augmented_checks == (competing if config.validate_augmented else [])
    return step, net.state_dict(), seen


def test_the_step_kept_is_the_best_mean_of_both_validations_when_asked() -> None:
    # Augmented steps only (no plain steps), each checked. Plain F1 alone peaks at step 1; the
    # mean with the augmented look (0.5, 0.7, 0.55) at step 2.
    config = DetectorTrainConfig(steps=3, plain_steps=0, batch_size=4, val_every=1, learning_rate=0.1)
    step, kept, seen = fit(config, [0.9, 0.6, 0.8], [0.1, 0.8, 0.3])
    assert step == 1
    assert all(torch.equal(kept[k], seen[0][k]) for k in kept)
    both = DetectorTrainConfig(steps=3, plain_steps=0, batch_size=4, val_every=1, learning_rate=0.1,
                               validate_augmented=True)  # fmt: skip
    step, kept, seen = fit(both, [0.9, 0.6, 0.8], [0.1, 0.8, 0.3])
    assert step == 2
    assert all(torch.equal(kept[k], seen[1][k]) for k in kept)
    assert not all(torch.equal(seen[0][k], seen[1][k]) for k in kept)  # the steps did differ


def test_plain_steps_are_not_scored_augmented_and_never_kept() -> None:
    # Two plain steps then two augmented ones: the best F1 of all at a plain step is not kept, and
    # the scripted augmented F1s are read at steps 3 and 4 only.
    config = DetectorTrainConfig(steps=4, plain_steps=2, batch_size=4, val_every=1, learning_rate=0.1,
                                 validate_augmented=True, augmentation="distance")  # fmt: skip
    step, kept, seen = fit(config, [0.99, 0.9, 0.5, 0.6], [0.4, 0.2])
    assert step == 3  # means 0.45 and 0.4
    assert all(torch.equal(kept[k], seen[2][k]) for k in kept)


def test_an_unknown_augmentation_is_refused_before_any_work(tmp_path: Path) -> None:
    config = DetectorTrainConfig(augmentation="sepia")
    with pytest.raises(TrainError, match="--augmentation: 'sepia' is not one of full, distance"):
        prepare_detector_training("twitch", tmp_path, tmp_path / "model.pt", config, "cpu")
