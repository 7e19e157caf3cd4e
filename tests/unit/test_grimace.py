"""The grimace detector: finds a small pattern anywhere in the frame from per-frame labels alone,
trains reproducibly into a model file, and is what icu eval and the worker then report."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from icu.cli import main
from inference.evaluate import evaluate, find_clips
from inference.grimace import (
    GrimaceConfig,
    GrimaceNet,
    augment_distance,
    augment_greyscale,
    grimace_logits,
    grimace_readings,
    sigmoid,
    to_grimace_input,
)
from inference.train import TrainError, fit_decisions_on, load_weights_and_rules, predict_clip
from inference.train_grimace import GrimaceTrainConfig, load_greyscale, train_grimace
from simulator.clips import VideoWriter, dump_json
from tests.unit.tiny_weights import tiny_weights

FAST = GrimaceTrainConfig(steps=160, plain_steps=120, batch_size=16, frame_step=1, val_every=80, val_frame_step=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_pattern_clip(out: Path, clip_id: str, seed: int, frames: int = 40) -> None:
    """A stand-in for a face in a bed: a disc somewhere on a textured background (a new place per
    clip); on the labelled frames a dark bar crosses it (the "grimace"). Nothing else tells them
    apart, so only a detector that finds the disc can score."""
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.uniform(60, 200, (240, 320)).astype(np.float32), (0, 0), 3)
    cx, cy = int(rng.integers(30, 290)), int(rng.integers(30, 210))
    labels = [int(v) for v in (np.arange(frames) // 5) % 2]  # five frames on, five off
    out.mkdir(parents=True, exist_ok=True)
    writer = VideoWriter(out / f"{clip_id}.mp4", fps=10, width=320, height=240)
    for label in labels:
        image = background + rng.normal(0, 2, background.shape)
        cv2.circle(image, (cx, cy), 14, 235, -1)
        if label:
            cv2.line(image, (cx - 9, cy), (cx + 9, cy), 20, 4)
        grey = np.clip(image, 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    writer.close()
    (out / f"{clip_id}.json").write_text(dump_json({"fps": 10, "labels": {"grimace": labels}}))


@pytest.fixture(scope="module")
def pattern_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pattern")
    for i in range(6):
        write_pattern_clip(root / "train", f"train-{i}", seed=i)
    for i in range(2):
        write_pattern_clip(root / "val", f"val-{i}", seed=100 + i)
    return root


def test_the_detector_scores_each_frame_and_maps_where_it_looked() -> None:
    net = GrimaceNet().eval()
    frames = torch.rand(3, 1, 240, 320)
    assert net(frames).shape == (3,)
    assert net.score_map(frames).shape == (3, 30, 40)
    # The frame's score is a smooth maximum of the map: above its mean, below its maximum.
    scores = net.score_map(frames).flatten(1)
    logits = net(frames)
    assert bool((logits >= scores.mean(1) - 1e-5).all())
    assert bool((logits <= scores.max(1).values + 1e-5).all())
    # Evidence pools the map's shares over 2x2 blocks, an odd side's last block partly empty:
    # the shares still sum to one.
    odd = GrimaceNet(GrimaceConfig(width=72, height=48)).eval()
    _, saliency = grimace_readings(odd, np.random.default_rng(0).integers(0, 255, (2, 48, 72), np.uint8),
                                   torch.device("cpu"))  # fmt: skip
    assert saliency.shape == (2, 3, 5)
    np.testing.assert_allclose(saliency.sum(axis=(1, 2)), [1.0, 1.0], atol=1e-5)
    assert GrimaceConfig.from_dict(GrimaceConfig(width=160, height=120).to_dict()) == GrimaceConfig(160, 120)
    with pytest.raises(ValueError, match="grimace input 100x120: both multiples of 8"):
        GrimaceConfig(width=100, height=120)
    with pytest.raises(ValueError, match="three positive widths"):
        GrimaceConfig(channels=(8, 8))  # type: ignore[arg-type]


def test_frames_are_resized_to_greyscale_and_augmentation_is_reproducible() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, :, 2] = 255  # red
    grey = to_grimace_input(image, GrimaceConfig())
    assert grey.shape == (240, 320)
    assert grey.dtype == np.uint8
    assert int(grey[0, 0]) == 76  # OpenCV's luma of pure red
    frames = torch.rand(4, 1, 240, 320)
    a = augment_greyscale(frames, np.random.default_rng(3))
    b = augment_greyscale(frames, np.random.default_rng(3))
    assert torch.equal(a, b)
    assert a.shape == frames.shape
    assert float(a.min()) >= 0.0
    assert float(a.max()) <= 1.0
    assert not torch.equal(a, frames)


def test_the_distance_augmentation_changes_size_and_nothing_else() -> None:
    # Four samples of three identical frames: a bright 40x40 square in the middle of a dark frame.
    frames = torch.full((4, 3, 240, 320), 0.2)
    frames[:, :, 100:140, 140:180] = 0.8
    out = augment_distance(frames, np.random.default_rng(5))
    assert torch.equal(out, augment_distance(frames, np.random.default_rng(5)))  # reproducible
    assert torch.equal(out[:, 0], out[:, 1])  # one draw per sample, the same for its frames
    assert torch.equal(out[:, 0], out[:, 2])
    # No light or noise: only the two grey levels and the blend between them at the square's edge,
    # and a grey frame stays that grey.
    assert float(out.min()) >= 0.2 - 1e-6
    assert float(out.max()) <= 0.8 + 1e-6
    grey = augment_distance(torch.full((2, 1, 240, 320), 0.3), np.random.default_rng(1))
    assert torch.allclose(grey, torch.full_like(grey, 0.3), atol=1e-6)
    # The square's area is scaled by the zoom squared (0.49-1.69x), differently per sample.
    areas = (out[:, 0] > 0.5).sum(dim=(1, 2)).float() / 1600
    assert bool(((areas > 0.45) & (areas < 1.75)).all()), areas
    assert float(areas.max() - areas.min()) > 0.1, areas


def test_training_finds_the_pattern_from_frame_labels_alone_and_is_reproducible(
    pattern_clips: Path, tmp_path: Path
) -> None:
    first = tiny_weights(tmp_path / "a" / "model.pt")
    stored = train_grimace(data=pattern_clips, weights=first, config=FAST, device="cpu", workers=1)
    # Held-out clips put the disc where no training clip had it.
    assert stored["validation"]["f1"] >= 0.9, stored["validation"]
    second = tiny_weights(tmp_path / "b" / "model.pt")
    again = train_grimace(data=pattern_clips, weights=second, config=FAST, device="cpu", workers=1)
    assert again["validation"] == stored["validation"]
    a = torch.load(first, weights_only=True)["grimace"]["state_dict"]
    b = torch.load(second, weights_only=True)["grimace"]["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # The model file now carries it, with the grimace decision rule fitted for it.
    saved = torch.load(first, weights_only=True)
    assert saved["decision"]["grimace"] == stored["decision"]["grimace"]
    card = json.loads(first.with_suffix(".json").read_text())
    assert card["grimace_detector"]["validation"] == stored["validation"]
    assert card["grimace_detector"]["clinically_validated"] is False
    assert set(card["decision_fit"]) == {"grimace"}


def test_weights_with_a_detector_take_grimace_from_it(pattern_clips: Path, tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path / "model.pt")
    plain, _ = load_weights_and_rules(weights)
    assert plain.grimace_detector is None
    train_grimace(data=pattern_clips, weights=weights, config=FAST, device="cpu", workers=1)
    model, rules = load_weights_and_rules(weights)
    assert model.grimace_detector is not None
    clip = find_clips(pattern_clips / "val")[0]
    grey, _labels = load_greyscale(clip, model.grimace_detector.config)
    small = np.stack([cv2.resize(cv2.cvtColor(g, cv2.COLOR_GRAY2RGB), (64, 48), interpolation=cv2.INTER_AREA)
                      for g in grey])  # fmt: skip
    cpu = torch.device("cpu")
    with_detector = predict_clip(model, small, cpu, grey)["probabilities"]
    expected = sigmoid(grimace_logits(model.grimace_detector, grey, cpu))
    np.testing.assert_allclose(with_detector[:, 0], expected, atol=1e-6)
    head_only = predict_clip(plain, small, cpu)["probabilities"]
    np.testing.assert_allclose(with_detector[:, 1:], head_only[:, 1:], atol=1e-6)  # twitch, apnea unchanged
    with pytest.raises(ValueError, match="greyscale frames"):
        predict_clip(model, small, cpu)

    # icu eval over the same clips scores the detector's grimace.
    result = evaluate(pattern_clips / "val", model="temporal", weights=weights, decisions="threshold")
    assert result["grimace"]["f1"] >= 0.9
    assert result["grimace_from"] == "grimace detector"
    assert result["decision"]["grimace"] == {"window": 1, "on": 0.5, "off": 0.5, "hold": 0}
    fitted = evaluate(pattern_clips / "val", model="temporal", weights=weights)
    assert fitted["decision"]["grimace"] == rules.to_dict()["grimace"]
    # icu fit-decisions fits grimace on the detector's probabilities too (the untrained head
    # could not score this well on the pattern).
    _, fits = fit_decisions_on(weights=weights, data=pattern_clips / "val", device="cpu", workers=1)
    assert set(fits) == {"grimace"}
    assert fits["grimace"].threshold_score >= 0.8


def test_train_grimace_refuses_what_it_cannot_use(
    pattern_clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(TrainError, match="no model file"):
        train_grimace(data=pattern_clips, weights=tmp_path / "none.pt", config=FAST, device="cpu")
    weights = tiny_weights(tmp_path / "model.pt")
    unlabelled = tmp_path / "unlabelled"
    for split in ("train", "val"):
        write_pattern_clip(unlabelled / split, f"{split}-0", seed=1)
        path = unlabelled / split / f"{split}-0.json"
        path.write_text(dump_json({"fps": 10, "labels": {"apnea": [0] * 40}}))
    with pytest.raises(TrainError, match="labelling grimace"):
        train_grimace(data=unlabelled, weights=weights, config=FAST, device="cpu")
    checkpoint = tmp_path / "last.pt"  # icu train's resume checkpoint has a config but no weights entry
    torch.save({"model_config": torch.load(weights, weights_only=True)["model_config"], "model": {}}, checkpoint)
    with pytest.raises(TrainError, match=r"last\.pt is a checkpoint"):
        train_grimace(data=pattern_clips, weights=checkpoint, config=FAST, device="cpu")
    broken = tmp_path / "broken.pt"  # refused before training, not after it
    torch.save({**torch.load(weights, weights_only=True), "decision": {"smile": {}}}, broken)
    with pytest.raises(TrainError, match="does not load"):
        train_grimace(data=pattern_clips, weights=broken, config=FAST, device="cpu")
    not_weights = tmp_path / "other.pt"
    torch.save({"something": 1}, not_weights)
    with pytest.raises(TrainError, match=r"not a model\.pt"):
        train_grimace(data=pattern_clips, weights=not_weights, config=FAST, device="cpu")
    with pytest.raises(TrainError, match="plain steps"):
        train_grimace(data=pattern_clips, weights=weights, config=GrimaceTrainConfig(steps=10, plain_steps=20))
    # The CLI names the problem instead of a traceback.
    assert main(["train-grimace", "--data", str(pattern_clips), "--weights", str(tmp_path / "none.pt")]) == 2
    assert "no model file" in capsys.readouterr().err


def test_the_cli_trains_the_detector_into_the_weights_and_prints_what_it_kept(
    pattern_clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tiny_weights(tmp_path / "model.pt")
    args = ["train-grimace", "--data", str(pattern_clips), "--weights", str(weights), "--steps", "20",
            "--plain-steps", "10", "--seed", "3", "--device", "cpu", "--workers", "1",
            "--validate-augmented"]  # fmt: skip
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["step"] == 20  # the one augmented validation, at the end
    assert printed["decision"] == torch.load(weights, weights_only=True)["decision"]["grimace"]
    record = json.loads(weights.with_suffix(".json").read_text())["grimace_detector"]
    assert record["train_config"]["steps"] == 20
    assert record["train_config"]["plain_steps"] == 10
    assert record["train_config"]["seed"] == 3
    assert record["train_config"]["validate_augmented"] is True
    assert record["train_config"]["augmentation"] == "full"  # the default
    assert main([*args[:-7], "--steps", "5", "--plain-steps", "10"]) == 2
    assert "plain steps" in capsys.readouterr().err
