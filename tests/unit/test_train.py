"""Training: seeded and reproducible, checkpoints that resume, weights that load, clear errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from icu.cli import main
from inference.data import ClipBank, LoadedClip, augment
from inference.decisions import DecisionRule, DecisionRules
from inference.grimace import GrimaceConfig, GrimaceNet, stored_grimace
from inference.metrics import FINDINGS
from inference.model import align_outputs, build_model
from inference.train import (
    TrainConfig,
    TrainError,
    compute_loss,
    frame_predictions,
    learning_rate,
    load_decision_rules,
    load_variant,
    load_weights,
    save_weights,
    score_of,
    train,
)
from inference.twitch import TwitchConfig, TwitchNet, stored_twitch
from simulator.clips import plan_clip_set, write_clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clips")
    for spec in plan_clip_set(n=3, seed=4, split="train", duration_s=6, fps=10, width=160, height=120):
        write_clip(spec, out)
    return out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("appearance_pool", ["mean", "attention"])
def test_the_model_gives_frame_level_outputs_and_saliency(appearance_pool: str) -> None:
    model = build_model(height=48, width=64, channels=(8, 16), dim=16, heads=2, temporal_layers=3,
                        appearance_pool=appearance_pool)  # fmt: skip
    out = model(torch.rand(2, 12, 3, 48, 64))
    assert out["findings"].shape == (2, 12, len(FINDINGS))
    assert out["resp_rate"].shape == (2, 12)
    assert bool((out["resp_rate"] >= 0).all())
    assert out["saliency"].shape == (2, 12, (48 // 4) * (64 // 4))
    assert torch.allclose(out["saliency"].sum(-1), torch.ones(2, 12), atol=1e-5)


@pytest.mark.parametrize("appearance_pool", ["mean", "attention"])
def test_the_model_is_causal(appearance_pool: str) -> None:
    model = build_model(height=48, width=64, channels=(8, 16), dim=16, heads=2, temporal_layers=3,
                        appearance_pool=appearance_pool).eval()  # fmt: skip
    frames = torch.rand(1, 10, 3, 48, 64)
    changed = frames.clone()
    changed[0, 7:] = torch.rand(3, 3, 48, 64)  # only the future of frame 6 differs
    with torch.no_grad():
        a, b = model(frames)["findings"], model(changed)["findings"]
    assert torch.allclose(a[0, :7], b[0, :7], atol=1e-6)
    assert not torch.allclose(a[0, 7:], b[0, 7:])


def test_training_is_reproducible_and_resumes(clips: Path, tmp_path: Path) -> None:
    first = train(data=clips, config="temporal-tiny", out=tmp_path / "a", epochs=2, progress=False)
    second = train(data=clips, config="temporal-tiny", out=tmp_path / "b", epochs=2, progress=False)
    assert [h["loss"] for h in first["history"]] == [h["loss"] for h in second["history"]]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    resumed = train(data=clips, config="temporal-tiny", out=tmp_path / "a", resume=True, epochs=3, progress=False)
    assert resumed["epoch"] == 3
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    model = load_weights(tmp_path / "a" / "model.pt")
    assert model.config.name == "temporal-tiny"
    card = json.loads((tmp_path / "a" / "model.json").read_text())
    assert card["synthetic_training_data"] is True
    assert card["clinically_validated"] is False
    assert set(card["validation"]) >= {"grimace", "twitch", "apnea", "resp_rate"}


def test_configs_and_errors(clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_config, train_config = load_variant("temporal-small")
    assert model_config.name == "temporal-small"
    assert train_config.seed == 0
    with pytest.raises(TrainError, match="no config"):
        load_variant("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochz: 3\n")
    with pytest.raises(TrainError, match="unknown train settings"):
        load_variant(str(bad))
    with pytest.raises(TrainError, match="no checkpoint"):
        train(data=clips, config="temporal-tiny", out=tmp_path / "none", resume=True, progress=False)
    assert main(["train", "--data", str(tmp_path / "missing"), "--config", "temporal-tiny", "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    assert "not a directory" in capsys.readouterr().err


def test_model_configs_refuse_what_the_network_cannot_build() -> None:
    with pytest.raises(ValueError, match="appearance_pool must be one of"):
        build_model(appearance_pool="max")
    with pytest.raises(ValueError, match=r"multiples of 2\*\*4"):
        build_model(height=100, width=128)  # 100 does not halve four times into whole tokens
    attention, _ = load_variant("temporal-small-attnpool")
    assert (attention.appearance_pool, attention.height, attention.width) == ("attention", 96, 128)


def test_weights_keep_the_appearance_pool(tmp_path: Path) -> None:
    model = build_model(height=48, width=64, channels=(8, 16), dim=16, heads=2, temporal_layers=3,
                        appearance_pool="attention").eval()  # fmt: skip
    save_weights(model, tmp_path, metrics={}, config_name="test", train_config=TrainConfig(), data=tmp_path, epoch=1)
    loaded = load_weights(tmp_path / "model.pt")
    assert loaded.config.appearance_pool == "attention"
    frames = torch.rand(1, 6, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(model(frames)["findings"], loaded(frames)["findings"])


def test_learning_rate_warms_up_then_decays() -> None:
    rates = [learning_rate(step, 100, 1.0) for step in range(100)]
    assert rates[0] < rates[4] == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(0.02, abs=0.01)
    assert all(a >= b for a, b in itertools.pairwise(rates[5:]))


def test_early_stopping_score_does_not_reward_withholding_the_rate() -> None:
    """A model that predicts apnea everywhere withholds every rate (no MAE, coverage 0): on a
    device run that scored as if the rate were perfect and early stopping kept epoch 3."""
    findings = {"grimace": {"f1": 0.2}, "twitch": {"f1": 0.6}, "apnea": {"f1": 0.4}}
    gave_up = score_of({**findings, "resp_rate": {"mae_bpm": None, "within_2bpm": None, "coverage": 0.0}})
    estimated = score_of({**findings, "resp_rate": {"mae_bpm": 4.0, "within_2bpm": 0.4, "coverage": 0.9}})
    assert gave_up < estimated
    assert gave_up == pytest.approx(0.4 - 1.0)
    # A clip set without rate labels is scored on its findings alone.
    assert score_of({**findings, "resp_rate": None}) == pytest.approx(0.4)


@pytest.mark.parametrize("appearance_pool", ["mean", "attention"])
def test_cached_frame_vectors_give_the_same_outputs_as_the_whole_model(appearance_pool: str) -> None:
    # What the live worker relies on: each frame's vector computed once, the heads over a window.
    model = build_model(height=48, width=64, channels=(8, 16), dim=16, heads=2, temporal_layers=3,
                        appearance_pool=appearance_pool).eval()  # fmt: skip
    frames = torch.rand(1, 9, 3, 48, 64)
    with torch.no_grad():
        whole = model(frames)
        first, _ = model.frame_features(frames[:, :5])
        rest, _ = model.frame_pair_features(frames[:, 5:], frames[:, 4:8])
        cached = model.heads(torch.cat([first, rest], dim=1))
    assert torch.allclose(whole["findings"], cached["findings"], atol=1e-5)
    assert torch.allclose(whole["resp_rate"], cached["resp_rate"], atol=1e-4)


def test_icu_eval_scores_trained_weights_like_validation_does(
    clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = train(data=clips, config="temporal-tiny", out=tmp_path / "m", epochs=1, progress=False)
    weights = tmp_path / "m" / "model.pt"
    assert main(["eval", "--data", str(clips), "--model", "temporal", "--weights", str(weights)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "temporal"
    assert (result["clips"], result["frames"]) == (3, 180)
    assert result["grimace"] is not None  # the learned model predicts every finding
    assert state["history"][0]["val"]["clips"] == 1  # validated on its own split during training
    assert main(["eval", "--data", str(clips), "--model", "temporal", "--weights", str(tmp_path / "none.pt")]) == 2
    assert "no model file" in capsys.readouterr().err
    # Without --weights, the packaged weights `icu infer` loads by default.
    assert main(["eval", "--data", str(clips), "--model", "temporal"]) == 0
    packaged = json.loads(capsys.readouterr().out)
    assert (packaged["model"], packaged["frames"]) == ("temporal", 180)
    assert packaged["grimace"] != result["grimace"] or packaged["resp_rate"] != result["resp_rate"]


def test_outputs_are_mapped_back_onto_the_frames_they_describe() -> None:
    values = torch.arange(6.0)[None, :, None]  # output t describes frame t - 2
    assert align_outputs(values, 2)[0, :, 0].tolist() == [2, 3, 4, 5, 5, 5]  # the tail holds the last output
    assert torch.equal(align_outputs(values, 0), values)


def test_the_loss_scores_each_output_against_the_frame_it_describes() -> None:
    targets = torch.zeros(1, 12, len(FINDINGS))
    targets[0, 3:6, 0] = 1.0  # a grimace on frames 3-5
    batch = {"findings": targets, "mask": torch.ones(1, 12, len(FINDINGS), dtype=torch.bool),
             "resp_rate": torch.full((1, 12), float("nan"))}  # fmt: skip
    shifted = torch.zeros_like(targets)
    shifted[0, 5:8, 0] = 1.0  # outputs 5-7 describe frames 3-5 with a lookahead of 2
    out = {"findings": shifted * 20 - 10, "resp_rate": torch.zeros(1, 12)}
    aligned, _ = compute_loss(out, batch, lookahead=2)
    misaligned, _ = compute_loss(out, batch, lookahead=0)
    assert float(aligned) < 1e-3 < float(misaligned)


def test_crops_pad_short_clips_and_mask_the_padding() -> None:
    n = 5
    clip = LoadedClip(
        "c", 10.0, np.arange(n, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(6, 2).repeat(3, 3),
        np.ones((n, len(FINDINGS)), np.float32), np.ones((n, len(FINDINGS)), bool), np.full(n, 12.0, np.float32),
    )  # fmt: skip
    bank = ClipBank([clip], torch.device("cpu"))
    batch = bank.sample(count=2, frames=8, rng=np.random.default_rng(0))
    assert batch["frames"].shape == (2, 8, 3, 4, 6)
    # Three frames of padding (the first frame repeated), masked out of the loss.
    assert (batch["frames"][0, :, 0, 0, 0] * 255).round().tolist() == [0, 0, 0, 0, 1, 2, 3, 4]
    assert batch["mask"][0, :, 0].tolist() == [False] * 3 + [True] * 5
    assert torch.isnan(batch["resp_rate"][0, :3]).all()
    assert (batch["resp_rate"][0, 3:] == 12).all()
    a = augment(batch["frames"].clone(), np.random.default_rng(1))
    b = augment(batch["frames"].clone(), np.random.default_rng(1))
    assert torch.equal(a, b)  # seeded: reproducible
    assert a.shape == batch["frames"].shape
    assert float(a.min()) >= 0
    assert float(a.max()) <= 1


def test_stop_after_ends_early_but_keeps_the_full_schedule(clips: Path, tmp_path: Path) -> None:
    short = train(data=clips, config="temporal-tiny", out=tmp_path / "s", epochs=3, stop_after=1, progress=False)
    full = train(data=clips, config="temporal-tiny", out=tmp_path / "f", epochs=3, progress=False)
    assert short["epoch"] == 1
    assert short["history"][0]["loss"] == full["history"][0]["loss"]  # the same first epoch as the full run


def test_training_ends_by_fitting_decision_rules_and_fit_decisions_refits_them(
    clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(data=clips, config="temporal-tiny", out=tmp_path / "m", epochs=1, progress=False)
    weights = tmp_path / "m" / "model.pt"
    saved = torch.load(weights, weights_only=True)
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert set(saved["decision"]) == set(FINDINGS)
    assert card["decision"] == saved["decision"] == load_decision_rules(weights).to_dict()
    assert all(fit["score"] >= fit["threshold_score"] for fit in card["decision_fit"].values())

    # Refitting on other clips rewrites both files; eval reports the rules it decided with.
    saved["decision"] = DecisionRules().to_dict()
    torch.save(saved, weights)
    assert main(["fit-decisions", "--weights", str(weights), "--data", str(clips), "--workers", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["decision"] == load_decision_rules(weights).to_dict()
    assert json.loads((tmp_path / "m" / "model.json").read_text())["decision"] == printed["decision"]
    assert main(["eval", "--data", str(clips), "--model", "temporal", "--weights", str(weights)]) == 0
    assert json.loads(capsys.readouterr().out)["decision"] == printed["decision"]
    assert main(["eval", "--data", str(clips), "--model", "temporal", "--weights", str(weights), "--decisions",
                 "threshold"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["decision"] == DecisionRules().to_dict()
    # The rules decide what is scored: apnea always on withholds every rate, grimace always on
    # finds every grimace frame.
    always = DecisionRule(on=0.0, off=0.0)
    saved = torch.load(weights, weights_only=True)
    saved["decision"] = DecisionRules(grimace=always, apnea=always).to_dict()
    torch.save(saved, weights)
    assert main(["eval", "--data", str(clips), "--model", "temporal", "--weights", str(weights)]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert forced["resp_rate"]["coverage"] == 0.0
    assert (forced["grimace"]["recall"], forced["apnea"]["recall"]) == (1.0, 1.0)

    assert main(["fit-decisions", "--weights", str(tmp_path / "none.pt"), "--data", str(clips)]) == 2
    assert "no model file" in capsys.readouterr().err
    assert main(["fit-decisions", "--weights", str(weights), "--data", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_frame_predictions_withhold_the_rate_where_apnea_is_decided() -> None:
    probabilities = np.zeros((6, 3), np.float32)
    probabilities[:, FINDINGS.index("apnea")] = [0.9, 0.3, 0.9, 0.3, 0.3, 0.3]
    predicted = {"probabilities": probabilities, "resp_rate": np.full(6, 14.0, np.float32)}
    plain = frame_predictions(predicted)
    assert plain["resp_rate_bpm"] == [None, 14.0, None, 14.0, 14.0, 14.0]
    held = frame_predictions(predicted, DecisionRules(apnea=DecisionRule(on=0.6, off=0.4, hold=2)))
    assert held["apnea"].tolist() == [1, 1, 1, 1, 1, 0]
    assert held["resp_rate_bpm"] == [None] * 5 + [14.0]


def test_a_resumed_run_keeps_the_detectors_icu_train_grimace_and_twitch_added(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    train(data=clips, config="temporal-tiny", out=out, epochs=1, progress=False)
    weights = out / "model.pt"
    detector = GrimaceNet(GrimaceConfig(width=64, height=48, channels=(4, 8, 8)))
    twitch = TwitchNet(TwitchConfig(width=64, height=48, channels=(4, 8, 8)))
    saved = torch.load(weights, weights_only=True)
    saved["grimace"] = stored_grimace(detector)  # what icu train-grimace writes
    saved["twitch"] = stored_twitch(twitch)  # and icu train-twitch
    torch.save(saved, weights)
    card = json.loads((out / "model.json").read_text())
    records = {"grimace_detector": {"step": 7}, "twitch_detector": {"step": 8}}
    (out / "model.json").write_text(json.dumps({**card, **records}))
    # More epochs: the end-of-training fit reads the detectors' frames, and a better epoch keeps them.
    train(data=clips, config="temporal-tiny", out=out, resume=True, epochs=3, progress=False)
    model = load_weights(weights)
    assert model.grimace_detector is not None
    assert model.twitch_detector is not None
    kept = model.grimace_detector.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in detector.state_dict().items())
    kept = model.twitch_detector.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in twitch.state_dict().items())
    written = json.loads((out / "model.json").read_text())
    assert {k: written[k] for k in records} == records
    # Whichever epoch was best, saving better weights over them keeps the detectors and their records.
    fresh = build_model(config=load_variant("temporal-tiny")[0])
    save_weights(fresh, out, metrics={}, config_name="temporal-tiny", train_config=TrainConfig(), data=clips, epoch=9)
    again = load_weights(weights)
    assert again.grimace_detector is not None
    assert again.twitch_detector is not None
    written = json.loads((out / "model.json").read_text())
    assert {k: written[k] for k in records} == records
