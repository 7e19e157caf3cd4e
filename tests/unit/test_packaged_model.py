"""The committed weights: loaded by default, described honestly, the architecture the card says."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

import inference
from inference.decisions import DecisionRule
from inference.train import load_decision_rules, load_variant, load_weights
from inference.worker import PACKAGED_VARIANT, InferSettings, packaged_weights

MODEL_CARD = Path(__file__).resolve().parents[2] / "MODEL_CARD.md"


def test_the_worker_loads_the_packaged_weights_by_default() -> None:
    path = InferSettings(kafka_bootstrap_servers="127.0.0.1:9").weights()
    assert path == packaged_weights()
    assert path.is_file()
    assert path.stat().st_size < 5 * 1024 * 1024  # a few MB at most
    model = load_weights(path)
    config, _ = load_variant(PACKAGED_VARIANT)
    assert model.config == config  # trained with the config the repository ships
    assert model.config.lookahead_frames == 20
    assert model.config.receptive_field == 127
    out = model(torch.rand(1, 30, 3, config.height, config.width))
    assert out["findings"].shape == (1, 30, 3)


def test_the_weights_record_says_synthetic_and_not_clinically_validated() -> None:
    record = json.loads(packaged_weights().with_suffix(".json").read_text())
    assert record["synthetic_training_data"] is True
    assert record["clinically_validated"] is False
    assert record["config"] == PACKAGED_VARIANT
    # The model card names the committed epoch, and the plain documented command reproduces it:
    # the record's schedule is the shipped config's.
    card = MODEL_CARD.read_text()
    assert f"epoch {record['epoch']} (best validation" in card
    shipped = yaml.safe_load((Path(inference.__file__).parent / "configs" / f"{PACKAGED_VARIANT}.yaml").read_text())
    assert record["train_config"]["epochs"] == shipped["train"]["epochs"]


def test_the_weights_carry_the_decision_rules_the_card_states() -> None:
    rules = load_decision_rules(packaged_weights())
    record = json.loads(packaged_weights().with_suffix(".json").read_text())
    assert record["decision"] == rules.to_dict()
    assert rules.apnea != DecisionRule.threshold()  # fitted: the worker and icu eval use them
    card = MODEL_CARD.read_text()
    for name in ("grimace", "twitch", "apnea"):
        assert f"| {name} | {rules.for_finding(name).describe()} |" in card


def test_the_weights_carry_the_grimace_detector_the_card_describes() -> None:
    model = load_weights(packaged_weights())
    assert model.grimace_detector is not None  # icu infer and icu eval take grimace from it
    assert (model.grimace_detector.config.width, model.grimace_detector.config.height) == (320, 240)
    record = json.loads(packaged_weights().with_suffix(".json").read_text())["grimace_detector"]
    assert record["synthetic_training_data"] is True
    assert record["clinically_validated"] is False
    assert record["config"] == model.grimace_detector.config.to_dict()
    # The card names the kept step and the command that reproduces it with the record's schedule.
    card = MODEL_CARD.read_text()
    assert f"step {record['step']} of {record['train_config']['steps']}" in card
    assert "icu train-grimace --data WORKDIR/clips --weights WORKDIR/model/model.pt" in card
