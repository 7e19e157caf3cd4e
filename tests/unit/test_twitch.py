"""The twitch detector: reads each frame between its neighbours, finds a jerk (out and back in one
frame) apart from steady movement from per-frame labels alone, trains reproducibly into a model
file, and is what icu eval then reports."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from icu.cli import main
from inference.evaluate import decode, evaluate, find_clips
from inference.grimace import GrimaceNet, sigmoid, stored_grimace
from inference.train import TrainError, load_weights_and_rules, predict_clip
from inference.train_twitch import TwitchTrainConfig, load_stacks, needed_frames, sample_frames, train_twitch
from inference.twitch import (
    TwitchConfig,
    TwitchNet,
    align_neighbours,
    frame_stacks,
    global_shifts,
    load_twitch,
    stored_twitch,
    twitch_logits,
    twitch_readings,
)
from simulator.clips import VideoWriter, dump_json
from tests.unit.tiny_weights import tiny_weights

FAST = TwitchTrainConfig(steps=400, plain_steps=300, batch_size=16, frame_step=2, val_every=100, val_frame_step=1)
SMALL = TwitchConfig(width=160, height=120)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def jerk_labels(frames: int, seed: int) -> list[int]:
    """Isolated one-frame jerks, at least four frames apart."""
    rng = np.random.default_rng(seed)
    labels = [0] * frames
    t = int(rng.integers(2, 5))
    while t < frames - 2:
        labels[t] = 1
        t += int(rng.integers(4, 8))
    return labels


def write_jerk_clip(out: Path, clip_id: str, seed: int, frames: int = 60, size: tuple[int, int] = (160, 120)) -> None:
    """A stand-in for a limb on a textured background: a bar that, on the labelled frames only,
    sits a few pixels off its place (a jerk, out and back within the frame), and a second bar
    that drifts steadily across the frame (movement that is not a jerk), both at new places per
    clip."""
    width, height = size
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.uniform(60, 200, (height, width)).astype(np.float32), (0, 0), 3)
    lx, ly = int(rng.integers(20, width - 20)), int(rng.integers(15, height - 15))
    dx, dy = int(rng.integers(15, width - 15)), int(rng.integers(15, height - 15))
    labels = jerk_labels(frames, seed)
    out.mkdir(parents=True, exist_ok=True)
    writer = VideoWriter(out / f"{clip_id}.mp4", fps=10, width=width, height=height)
    for t, label in enumerate(labels):
        image = background + rng.normal(0, 2, background.shape)
        shift = 4 if label else 0
        cv2.line(image, (lx - 10, ly + shift), (lx + 10, ly + shift), 240, 3)
        drift = (dx + 2 * t) % (width - 20) + 10
        cv2.line(image, (drift, dy - 8), (drift, dy + 8), 20, 3)
        grey = np.clip(image, 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    writer.close()
    (out / f"{clip_id}.json").write_text(dump_json({"fps": 10, "labels": {"twitch": labels}}))


@pytest.fixture(scope="module")
def jerk_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("jerks")
    for i in range(6):
        write_jerk_clip(root / "train", f"train-{i}", seed=i)
    for i in range(2):
        write_jerk_clip(root / "val", f"val-{i}", seed=100 + i)
    return root


def test_each_frame_is_read_between_its_neighbours_and_long_clips_in_chunks() -> None:
    frames = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((1, 48, 64), np.uint8)
    three = frame_stacks(frames, 1)
    assert three.shape == (5, 3, 48, 64)
    # (previous, current, next); the edges stand in for their missing neighbour.
    assert [tuple(int(v) for v in t[:, 0, 0]) for t in three] == [(0, 0, 1), (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 4)]
    five = frame_stacks(frames, 2)
    assert [tuple(int(v) for v in t[:, 0, 0]) for t in five[[0, 1, 4]]] == [(0, 0, 0, 1, 2), (0, 0, 1, 2, 3),
                                                                             (2, 3, 4, 4, 4)]  # fmt: skip
    torch.manual_seed(0)
    net = TwitchNet(TwitchConfig(width=64, height=48, channels=(4, 8, 8))).eval()
    assert net.config.span == 5
    clip = np.random.default_rng(0).integers(0, 255, (23, 48, 64), np.uint8)
    cpu = torch.device("cpu")
    whole, saliency = twitch_readings(net, frame_stacks(clip, 2), cpu)
    assert saliency.shape == (23, 3, 4)
    np.testing.assert_allclose(saliency.sum(axis=(1, 2)), 1.0, atol=1e-5)
    # Read 5 frames at a time, each chunk with its real neighbours: the same logits as in one go.
    np.testing.assert_allclose(twitch_logits(net, clip, cpu, chunk=5), whole, atol=1e-5)
    np.testing.assert_allclose(twitch_logits(net, clip, cpu), whole, atol=1e-5)
    assert twitch_logits(net, clip[:0], cpu).shape == (0,)
    assert TwitchConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ValueError, match="twitch input 100x120: both multiples of 8"):
        TwitchConfig(width=100, height=120)
    with pytest.raises(ValueError, match=r"twitch channels .* three positive widths"):
        TwitchConfig(channels=(8, 0, 8))
    with pytest.raises(ValueError, match="neighbours"):
        TwitchConfig(neighbours=0)


def shaken(picture: np.ndarray, shifts: list[tuple[float, float]]) -> torch.Tensor:
    """``picture`` (float, larger than 120x160) moved by each (dy, dx), cropped to 120x160:
    a shaking camera's frames, (1, len(shifts), 120, 160)."""
    frames = []
    for dy, dx in shifts:
        moved = cv2.warpAffine(picture, np.float32([[1, 0, dx], [0, 1, dy]]), picture.shape[::-1])
        frames.append(moved[20:140, 20:180])
    return torch.from_numpy(np.stack(frames)).unsqueeze(0)


def test_alignment_undoes_a_shaking_camera_and_leaves_a_moving_limb() -> None:
    rng = np.random.default_rng(0)
    picture = cv2.GaussianBlur(rng.uniform(0, 1, (160, 200)).astype(np.float32), (0, 0), 2)
    picture = (picture - picture.min()) / (picture.max() - picture.min())
    current = shaken(picture, [(0.0, 0.0)])
    moves = [(2.3, -1.6), (-3.5, 4.2), (0.0, 0.0), (6.4, 0.7)]
    others = shaken(picture, moves)
    # Each neighbour moved by d relative to the scored frame is carried back by -d.
    found = global_shifts(current, others, 8)[0].numpy()
    np.testing.assert_allclose(found, -np.asarray(moves), atol=0.35)
    aligned = align_neighbours(current, others, 8)
    inner = (..., slice(10, -10), slice(10, -10))
    before = (others - current).abs()[inner].mean((-2, -1))[0]
    after = (aligned - current).abs()[inner].mean((-2, -1))[0]
    assert after[2] == before[2] == 0  # the neighbour that did not move is as it was
    assert bool((after[[0, 1, 3]] < before[[0, 1, 3]] / 3).all()), (before, after)

    # A limb jerking over a still picture is not camera motion: no shift, nothing resampled.
    limb = current.clone()
    limb[..., 50:58, 60:90] += 0.5
    assert global_shifts(current, limb, 8).abs().max() < 0.5
    assert torch.equal(align_neighbours(current, limb, 8), limb)

    # The detector reads a shaken stack as the still one when it aligns, and not when it does not.
    torch.manual_seed(0)
    plain = TwitchNet(SMALL).eval()
    aligning = TwitchNet(TwitchConfig(width=160, height=120, align_px=8)).eval()
    aligning.load_state_dict(plain.state_dict())
    still = torch.cat([current, current, current, current, current], dim=1)
    shaking = torch.cat([others[:, :2], current, others[:, 2:]], dim=1)
    with torch.no_grad():
        assert torch.equal(aligning(still), plain(still))
        moved_plain = float((plain.score_map(shaking) - plain.score_map(still)).abs().mean())
        moved_aligned = float((aligning.score_map(shaking) - aligning.score_map(still)).abs().mean())
    assert moved_aligned < moved_plain / 3, (moved_plain, moved_aligned)

    # Stored and loaded with the detector, so that every reader aligns as it was trained.
    saved = {"twitch": stored_twitch(aligning)}
    loaded = load_twitch(saved)
    assert loaded is not None
    assert loaded.config.align_px == 8
    legacy = {k: v for k, v in SMALL.to_dict().items() if k != "align_px"}
    assert TwitchConfig.from_dict(legacy).align_px == 0  # detectors stored before alignment existed
    with pytest.raises(ValueError, match="align_px 31"):
        TwitchConfig(width=160, height=120, align_px=31)


def test_samples_are_the_twitching_frames_their_margins_and_a_stride_of_the_rest(jerk_clips: Path) -> None:
    labels = np.zeros(30, np.float32)
    labels[[10, 11, 28]] = 1
    samples = sample_frames(labels, frame_step=8, margin=2)
    assert samples.tolist() == [0, 8, 9, 10, 11, 12, 13, 16, 24, 26, 27, 28, 29]
    assert needed_frames(np.array([0, 5, 29]), 30, 1).tolist() == [0, 1, 4, 5, 6, 28, 29]
    assert needed_frames(np.array([0, 29]), 30, 2).tolist() == [0, 1, 2, 27, 28, 29]
    # Loaded, each sample's stack indexes the frames around it in the video, oldest first.
    clip = find_clips(jerk_clips / "val")[0]
    loaded = load_stacks([clip], SMALL, frame_step=4, margin=1, workers=1, desc="test")
    grey = np.stack([cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in decode(clip.video)])
    labels = np.asarray(clip.labels["twitch"], np.float32)
    expected = sample_frames(labels, 4, 1)
    assert len(loaded.labels) == len(expected)
    np.testing.assert_array_equal(loaded.labels, labels[expected])
    for stack, t in zip(loaded.stacks, expected, strict=True):
        for offset, kept in zip(range(-2, 3), stack, strict=True):
            np.testing.assert_array_equal(loaded.frames[kept], grey[min(max(0, t + offset), len(grey) - 1)])
    assert len(loaded.frames) == len(np.unique(loaded.stacks))  # each kept frame once


def test_training_finds_jerks_not_steady_movement_and_is_reproducible(jerk_clips: Path, tmp_path: Path) -> None:
    first = tiny_weights(tmp_path / "a" / "model.pt")
    stored = train_twitch(data=jerk_clips, weights=first, config=FAST, device="cpu", workers=1, net_config=SMALL)
    # Held-out clips put both bars where no training clip had them; the drifting bar moves in
    # every frame, so reading motion alone would flag every frame.
    assert stored["validation"]["f1"] >= 0.9, stored["validation"]
    second = tiny_weights(tmp_path / "b" / "model.pt")
    again = train_twitch(data=jerk_clips, weights=second, config=FAST, device="cpu", workers=1, net_config=SMALL)
    assert again["validation"] == stored["validation"]
    a = torch.load(first, weights_only=True)["twitch"]["state_dict"]
    b = torch.load(second, weights_only=True)["twitch"]["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = torch.load(first, weights_only=True)
    assert saved["decision"]["twitch"] == stored["decision"]["twitch"]
    card = json.loads(first.with_suffix(".json").read_text())
    assert card["twitch_detector"]["validation"] == stored["validation"]
    assert card["twitch_detector"]["clinically_validated"] is False
    assert card["twitch_detector"]["config"] == SMALL.to_dict()

    # The weights now take twitch from the detector, in predict_clip and in icu eval.
    model, _ = load_weights_and_rules(first)
    plain, _ = load_weights_and_rules(tiny_weights(tmp_path / "plain" / "model.pt"))
    assert model.twitch_detector is not None
    assert plain.twitch_detector is None
    clip = find_clips(jerk_clips / "val")[0]
    grey = np.stack([cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in decode(clip.video)])
    small = np.stack([cv2.resize(cv2.cvtColor(g, cv2.COLOR_GRAY2RGB), (64, 48), interpolation=cv2.INTER_AREA)
                      for g in grey])  # fmt: skip
    cpu = torch.device("cpu")
    with_detector = predict_clip(model, small, cpu, grey)["probabilities"]
    np.testing.assert_allclose(with_detector[:, 1], sigmoid(twitch_logits(model.twitch_detector, grey, cpu)), atol=1e-6)
    head_only = predict_clip(plain, small, cpu)["probabilities"]
    np.testing.assert_allclose(with_detector[:, [0, 2]], head_only[:, [0, 2]], atol=1e-6)
    with pytest.raises(ValueError, match="greyscale frames"):
        predict_clip(model, small, cpu)
    result = evaluate(jerk_clips / "val", model="temporal", weights=first, decisions="threshold")
    assert result["twitch"]["f1"] >= 0.9
    assert result["twitch_from"] == "twitch detector"
    assert result["grimace_from"] == "temporal head"


def test_detectors_that_read_different_frames_are_refused(jerk_clips: Path, tmp_path: Path) -> None:
    weights = tiny_weights(tmp_path / "model.pt")
    saved = torch.load(weights, weights_only=True)
    saved["twitch"] = {"config": SMALL.to_dict(), "state_dict": TwitchNet(SMALL).state_dict()}
    saved["grimace"] = stored_grimace(GrimaceNet())  # 320x240
    torch.save(saved, weights)
    with pytest.raises(ValueError, match="different frame sizes"):
        load_weights_and_rules(weights)


def test_train_twitch_refuses_what_it_cannot_use(
    jerk_clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(TrainError, match="no model file"):
        train_twitch(data=jerk_clips, weights=tmp_path / "none.pt", config=FAST, device="cpu")
    weights = tiny_weights(tmp_path / "model.pt")
    unlabelled = tmp_path / "unlabelled"
    for split in ("train", "val"):
        write_jerk_clip(unlabelled / split, f"{split}-0", seed=1, frames=20)
        (unlabelled / split / f"{split}-0.json").write_text(dump_json({"fps": 10, "labels": {"apnea": [0] * 20}}))
    with pytest.raises(TrainError, match="labelling twitch"):
        train_twitch(data=unlabelled, weights=weights, config=FAST, device="cpu")
    still = tmp_path / "still"
    for split in ("train", "val"):
        write_jerk_clip(still / split, f"{split}-0", seed=1, frames=20)
        (still / split / f"{split}-0.json").write_text(dump_json({"fps": 10, "labels": {"twitch": [0] * 20}}))
    with pytest.raises(TrainError, match="with and without twitch"):
        train_twitch(data=still, weights=weights, config=FAST, device="cpu", net_config=SMALL)
    with pytest.raises(TrainError, match="lookahead"):  # the tiny model looks 2 frames ahead
        train_twitch(data=jerk_clips, weights=weights, config=FAST, net_config=TwitchConfig(160, 120, neighbours=3))
    with pytest.raises(TrainError, match="frame step"):
        train_twitch(data=jerk_clips, weights=weights, config=TwitchTrainConfig(frame_step=0))
    with pytest.raises(TrainError, match="plain steps"):
        train_twitch(data=jerk_clips, weights=weights, config=TwitchTrainConfig(steps=10, plain_steps=20))
    with pytest.raises(TrainError, match="batch size"):  # the shared loop's checks hold for twitch too
        train_twitch(data=jerk_clips, weights=weights, config=TwitchTrainConfig(batch_size=1))
    # The CLI names the problem instead of a traceback.
    assert main(["train-twitch", "--data", str(jerk_clips), "--weights", str(tmp_path / "none.pt")]) == 2
    assert "no model file" in capsys.readouterr().err
    assert main(["train-twitch", "--data", str(jerk_clips), "--weights", str(weights), "--steps", "5",
                 "--plain-steps", "10"]) == 2  # fmt: skip
    assert "plain steps" in capsys.readouterr().err
    assert main(["train-twitch", "--data", str(jerk_clips), "--weights", str(weights), "--align-px", "-1"]) == 2
    assert "--align-px: twitch align_px -1" in capsys.readouterr().err


def test_the_cli_trains_the_detector_into_the_weights_and_prints_what_it_kept(
    jerk_clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tiny_weights(tmp_path / "model.pt")
    args = ["train-twitch", "--data", str(jerk_clips), "--weights", str(weights), "--steps", "4",
            "--plain-steps", "2", "--seed", "3", "--device", "cpu", "--workers", "1", "--align-px", "6",
            "--validate-augmented", "--augmentation", "distance"]  # fmt: skip
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["step"] == 4  # the one augmented validation, at the end
    assert printed["decision"] == torch.load(weights, weights_only=True)["decision"]["twitch"]
    record = json.loads(weights.with_suffix(".json").read_text())["twitch_detector"]
    assert (record["train_config"]["steps"], record["train_config"]["plain_steps"]) == (4, 2)
    assert record["train_config"]["seed"] == 3
    assert record["train_config"]["validate_augmented"] is True
    assert record["train_config"]["augmentation"] == "distance"
    assert record["config"] == TwitchConfig(align_px=6).to_dict()
