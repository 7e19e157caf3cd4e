"""`icu train`: seeded training of the temporal model on a clip set, with validation each epoch,
early stopping and checkpoint/resume.

Outputs in ``--out``: ``last.pt`` (everything needed to resume: model, optimiser, schedule,
epoch, random states), ``model.pt`` (the best weights by validation score, with the decision
rules fitted for them on the validation clips, see :mod:`inference.decisions`) and
``model.json`` (its config, validation metrics, decision rules and how it was trained).
Training is reproducible for the same data, config, seed and thread count (float sums depend
on how work is split across threads).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn import functional as F
from tqdm import tqdm

from icu import __version__
from inference.data import ClipBank, LoadedClip, augment, load_clips, split_clips
from inference.decisions import DecisionRules, FitResult, decide, fit_rule
from inference.evaluate import find_clips
from inference.grimace import grimace_logits, load_grimace, sigmoid, stored_grimace
from inference.metrics import FINDINGS, SplitScores
from inference.model import ModelConfig, TemporalNet, align_outputs, build_model
from inference.twitch import load_twitch, stored_twitch, twitch_logits

log = logging.getLogger(__name__)

DETECTOR_KEYS = ("grimace", "twitch")
"""The ``model.pt`` keys of the detectors trained apart from the temporal model (icu train-grimace,
icu train-twitch); each has its record under ``<key>_detector`` in the ``.json``."""


class TrainError(ValueError):
    """A training request that cannot run; the message says why."""


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 40
    patience: int = 6
    batch_size: int = 4
    window_frames: int = 160
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    val_share: float = 0.1
    augment: bool = True


def load_variant(name_or_path: str) -> tuple[ModelConfig, TrainConfig]:
    """A config by name (``temporal-small``) from the package, or a YAML file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text = path.read_text()
    else:
        resource = resources.files("inference") / "configs" / f"{name_or_path}.yaml"
        if not resource.is_file():
            known = sorted(p.name.removesuffix(".yaml") for p in (resources.files("inference") / "configs").iterdir())
            raise TrainError(f"no config {name_or_path!r} (known: {', '.join(known)}; or give a .yaml path)")
        text = resource.read_text()
    raw = yaml.safe_load(text) or {}
    try:
        model = ModelConfig.from_dict(raw.get("model", {}))
        train_fields = {f.name for f in fields(TrainConfig)}
        unknown = set(raw.get("train", {})) - train_fields
        if unknown:
            raise TrainError(f"{name_or_path}: unknown train settings {sorted(unknown)}")
        train = TrainConfig(**raw.get("train", {}))
    except TypeError as exc:
        raise TrainError(f"{name_or_path}: {exc}") from None
    return model, train


def learning_rate(step: int, total: int, peak: float) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to 2% of the peak."""
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # third-party code may use the global state
    torch.manual_seed(seed)


def compute_loss(
    out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], *, lookahead: int = 0
) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE per labelled finding frame (positives weighted up: they are rare) + L1 on the rate
    (breaths/min / 10) where the rate is known. The output at frame ``t`` is scored against the
    labels of frame ``t - lookahead``, the frame it describes."""
    if lookahead:
        out = {"findings": out["findings"][:, lookahead:].float(), "resp_rate": out["resp_rate"][:, lookahead:].float()}
        batch = {k: v[:, :-lookahead] for k, v in batch.items() if k != "frames"}
    logits, targets, mask = out["findings"].float(), batch["findings"], batch["mask"]
    weight = torch.where(targets > 0.5, 4.0, 1.0) * mask
    bce = F.binary_cross_entropy_with_logits(logits, targets, weight=weight, reduction="sum") / weight.sum().clamp(
        min=1
    )
    known = ~torch.isnan(batch["resp_rate"])
    rr = (
        (out["resp_rate"].float()[known] - batch["resp_rate"][known]).abs().mean() / 10.0
        if known.any()
        else logits.new_zeros(())
    )
    return bce + rr, {"bce": float(bce.detach()), "rr_l1": float(rr.detach()) * 10.0}


@torch.no_grad()
def predict_clip(
    model: TemporalNet, frames: np.ndarray, device: torch.device, grey: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-frame probabilities and rate for a whole clip (uint8 frames (time, H, W, 3)), each
    frame given the output that describes it (see the model's lookahead). A model with a grimace
    or twitch detector takes that finding from it, over ``grey`` (the same frames as the detectors
    see them, (time, H, W))."""
    model.eval()
    tensor = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float().div_(255.0)[None]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = model(tensor)
    lookahead = model.config.lookahead_frames
    probabilities = torch.sigmoid(align_outputs(out["findings"].float(), lookahead)[0]).cpu().numpy()
    if model.detector_frames() is not None:
        if grey is None or len(grey) != len(frames):
            raise ValueError("this model has a grimace or twitch detector: pass its greyscale frames, one per frame")
        if model.grimace_detector is not None:
            probabilities[:, FINDINGS.index("grimace")] = sigmoid(grimace_logits(model.grimace_detector, grey, device))
        if model.twitch_detector is not None:
            probabilities[:, FINDINGS.index("twitch")] = sigmoid(twitch_logits(model.twitch_detector, grey, device))
    return {
        "probabilities": probabilities,
        "resp_rate": align_outputs(out["resp_rate"].float(), lookahead)[0].cpu().numpy(),
    }


def frame_predictions(predicted: dict[str, np.ndarray], rules: DecisionRules | None = None) -> dict[str, Any]:
    """Per-frame 0/1 findings and the rate, withheld where apnea is decided: what `icu eval`
    scores. ``rules`` decide each finding (default: the plain 0.5 threshold, which validation
    early-stops on)."""
    rules = rules or DecisionRules()
    probabilities = predicted["probabilities"]
    predictions: dict[str, Any] = {
        name: decide(probabilities[:, k], rules.for_finding(name)).astype(int) for k, name in enumerate(FINDINGS)
    }
    apnea = predictions["apnea"].astype(bool)
    predictions["resp_rate_bpm"] = [
        None if stop else float(r) for r, stop in zip(predicted["resp_rate"], apnea, strict=True)
    ]
    return predictions


def validate(model: TemporalNet, clips: list[LoadedClip], device: torch.device) -> dict[str, Any]:
    scores = SplitScores()
    for clip in clips:
        labels: dict[str, Any] = {
            name: clip.findings[:, k].astype(int) for k, name in enumerate(FINDINGS) if clip.findings_mask[:, k].all()
        }
        if not np.isnan(clip.resp_rate).all():
            labels["resp_rate_bpm"] = [None if np.isnan(r) else float(r) for r in clip.resp_rate]
        # Unlabelled tasks are skipped by SplitScores, so every prediction can go in.
        scores.add_clip(
            fps=clip.fps, labels=labels, predictions=frame_predictions(predict_clip(model, clip.frames, device))
        )
    return scores.summary()


def score_of(metrics: dict[str, Any]) -> float:
    """One number to early-stop on: mean F1 of the labelled findings, less RR MAE / 10. A rate
    that is labelled but never estimated (apnea predicted everywhere withholds it) costs as much
    as a 10 breaths/min error: without that, a model that gave up on the rate outscored the rest."""
    f1s = [metrics[name]["f1"] for name in FINDINGS if metrics.get(name)]
    rr = metrics.get("resp_rate") or {}
    mae = rr.get("mae_bpm")
    penalty = mae / 10.0 if mae is not None else (1.0 if rr.get("coverage") is not None else 0.0)
    return (float(np.mean(f1s)) if f1s else 0.0) - penalty


def train(
    *,
    data: Path,
    config: str,
    out: Path,
    resume: bool = False,
    device: str | None = None,
    epochs: int | None = None,
    max_minutes: float | None = None,
    stop_after: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``config`` on the clips in ``data``; returns the training state (history included).

    ``max_minutes`` ends training after the epoch that passes that much time, ``stop_after``
    after that epoch; either way the learning-rate schedule stays the one of ``epochs``, so
    ``stop_after`` with the epoch count logged reproduces a run that ``max_minutes`` ended.
    ``workers`` processes decode the clips (default: one per core).
    """
    model_config, train_config = load_variant(config)
    if epochs is not None:
        train_config = TrainConfig(**{**asdict(train_config), "epochs": epochs})
    seed_everything(train_config.seed)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    train_clips, val_clips = split_clips(data, train_config.val_share)
    bar_options = {"disable": not progress, "unit": "clip"}
    loaded_train = list(tqdm(load_clips(train_clips, model_config, workers=workers), desc="loading train",
                             total=len(train_clips), **bar_options))  # fmt: skip
    loaded_val = list(tqdm(load_clips(val_clips, model_config, workers=workers), desc="loading val",
                           total=len(val_clips), **bar_options))  # fmt: skip
    bank = ClipBank(loaded_train, target)
    del loaded_train  # the bank holds the frames now
    model = build_model(config=model_config).to(target)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )
    steps = max(1, math.ceil(bank.total_frames / (train_config.batch_size * train_config.window_frames)))
    rng = np.random.default_rng(train_config.seed)
    out.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_score": -math.inf, "best_epoch": 0, "history": []}
    checkpoint = out / "last.pt"
    if resume:
        if not checkpoint.exists():
            raise TrainError(f"--resume: no checkpoint at {checkpoint}")
        saved = torch.load(checkpoint, map_location=target, weights_only=False)
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
        rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        log.info("resuming after epoch %d (best %.4f at epoch %d)", state["epoch"], state["best_score"],
                 state["best_epoch"])  # fmt: skip
    log.info("training %s on %s: %d clips (%d frames), %d validation clips, %d steps per epoch",
             model_config.name, target, len(bank.lengths), bank.total_frames, len(loaded_val), steps)  # fmt: skip
    # bf16 autocast on CUDA (no loss scaling needed); full precision on the CPU.
    started = time.monotonic()
    while state["epoch"] < train_config.epochs:
        epoch = state["epoch"] + 1
        model.train()
        began = time.perf_counter()
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{train_config.epochs}", disable=not progress)
        losses = []
        for _ in bar:
            batch = bank.sample(count=train_config.batch_size, frames=train_config.window_frames, rng=rng)
            if train_config.augment:
                batch["frames"] = augment(batch["frames"], rng)
            with torch.autocast(target.type, dtype=torch.bfloat16, enabled=target.type == "cuda"):
                output = model(batch["frames"])
            loss, parts = compute_loss(output, batch, lookahead=model_config.lookahead_frames)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            # Stateless schedule (warm-up, then cosine), so a resumed run may also change --epochs.
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(state["step"], steps * train_config.epochs, train_config.learning_rate)
            optimiser.step()
            state["step"] += 1
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", rr=f"{parts['rr_l1']:.2f}")
        metrics = validate(model, loaded_val, target)
        score = score_of(metrics)
        state["epoch"] = epoch
        state["history"].append(
            {"epoch": epoch, "loss": float(np.mean(losses)), "score": score, "seconds": time.perf_counter() - began,
             "val": metrics}
        )  # fmt: skip
        improved = score > state["best_score"]
        if improved:
            state["best_score"], state["best_epoch"] = score, epoch
            save_weights(model, out, metrics=metrics, config_name=config, train_config=train_config, data=data,
                         epoch=epoch)  # fmt: skip
        log.info("epoch %d: loss %.4f, validation score %.4f (%s)%s", epoch, np.mean(losses), score,
                 summary_line(metrics), " (best)" if improved else "")  # fmt: skip
        torch.save(
            {"model": model.state_dict(), "optimiser": optimiser.state_dict(),
             "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "state": state,
             "model_config": model_config.to_dict()},
            checkpoint,
        )  # fmt: skip
        if epoch - state["best_epoch"] >= train_config.patience:
            log.info("early stop: no better validation score for %d epochs", train_config.patience)
            break
        if max_minutes is not None and time.monotonic() - started >= max_minutes * 60:
            log.info("stopping after epoch %d: the %.1f-minute budget is spent (reproduce with --stop-after %d)",
                     epoch, max_minutes, epoch)  # fmt: skip
            break
        if stop_after is not None and epoch >= stop_after:
            log.info("stopping after epoch %d as asked (--stop-after)", epoch)
            break
    if (out / "model.pt").exists() and loaded_val:
        best = load_weights(out / "model.pt", target)
        if (grey := best.detector_frames()) is not None:  # kept detectors (icu train-grimace, -twitch) read their own
            loaded_val = list(load_clips(val_clips, model_config, workers=workers, grey=grey))
        rules, fits = fit_decision_rules(best, loaded_val, target)
        write_decision_rules(out / "model.pt", rules, fits)
    return state


def fit_decision_rules(
    model: TemporalNet, clips: list[LoadedClip], device: torch.device
) -> tuple[DecisionRules, dict[str, FitResult]]:
    """One decision rule per finding, fitted on ``clips`` (normally the validation split) for
    ``model``'s probabilities; a finding no clip labels keeps the plain 0.5 threshold."""
    outputs = [predict_clip(model, clip.frames, device, clip.grey)["probabilities"] for clip in clips]
    fits: dict[str, FitResult] = {}
    for k, name in enumerate(FINDINGS):
        labelled = [
            (probabilities[:, k], clip.findings[:, k])
            for probabilities, clip in zip(outputs, clips, strict=True)
            if clip.findings_mask[:, k].all()
        ]
        if labelled:
            fits[name] = fit_rule(labelled)
            log.info("decision rule for %s: %s (fitting score %.4f; plain 0.5 threshold %.4f)", name,
                     fits[name].rule.describe(), fits[name].score, fits[name].threshold_score)  # fmt: skip
    return DecisionRules(**{name: fit.rule for name, fit in fits.items()}), fits


def fit_decisions_on(
    *, weights: Path, data: Path, device: str | None = None, workers: int | None = None
) -> tuple[DecisionRules, dict[str, FitResult]]:
    """`icu fit-decisions`: fit the decision rules of ``weights`` on the clips of ``data`` (the
    validation split they were trained with, never the split they will be scored on) and store
    them in the weights file and its ``.json``."""
    if not weights.is_file():
        raise TrainError(f"--weights: no model file {weights}")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_weights(weights, target)
    grey = model.detector_frames()
    clips = list(
        tqdm(load_clips(find_clips(data), model.config, workers=workers, grey=grey), desc="loading", unit="clip")
    )
    rules, fits = fit_decision_rules(model, clips, target)
    if not fits:
        raise TrainError(f"--data: no clip of {data} labels grimace, twitch or apnea on every frame")
    write_decision_rules(weights, rules, fits)
    return rules, fits


def write_decision_rules(weights: Path, rules: DecisionRules, fits: dict[str, FitResult] | None = None) -> None:
    """Store ``rules`` in a ``model.pt`` and in the ``.json`` beside it (when there is one)."""
    saved = torch.load(weights, map_location="cpu", weights_only=True)
    saved["decision"] = rules.to_dict()
    torch.save(saved, weights)
    card = weights.with_suffix(".json")
    if card.exists():
        document = json.loads(card.read_text())
        document["decision"] = rules.to_dict()
        if fits:
            document["decision_fit"] = {
                name: {"score": round(fit.score, 4), "threshold_score": round(fit.threshold_score, 4)}
                for name, fit in fits.items()
            }
        card.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def summary_line(metrics: dict[str, Any]) -> str:
    """Validation figures in one log line: F1 per finding and the rate's MAE."""
    parts = [f"{name} F1 {metrics[name]['f1']:.3f}" for name in FINDINGS if metrics.get(name)]
    rr = metrics.get("resp_rate") or {}
    if rr.get("mae_bpm") is not None:
        parts.append(f"RR MAE {rr['mae_bpm']:.2f}")
    return ", ".join(parts) or "no labels"


def save_weights(
    model: TemporalNet,
    out: Path,
    *,
    metrics: dict[str, Any],
    config_name: str,
    train_config: TrainConfig,
    data: Path,
    epoch: int,
) -> None:
    saved = weights_contents(model)
    record: dict[str, Any] = {
        "model": model.config.name, "config": config_name, "model_config": model.config.to_dict(),
        "train_config": asdict(train_config), "validation": metrics, "data": str(data), "epoch": epoch,
        "icu_watch": __version__, "synthetic_training_data": True, "clinically_validated": False,
    }  # fmt: skip
    # Detectors added by icu train-grimace and icu train-twitch do not depend on the temporal
    # weights: a better epoch (a resumed run) keeps them, with their records.
    if (out / "model.pt").exists():
        previous = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
        card = out / "model.json"
        kept = json.loads(card.read_text()) if card.exists() else {}
        for key in DETECTOR_KEYS:
            if key in previous:
                saved[key] = previous[key]
                if f"{key}_detector" in kept:
                    record[f"{key}_detector"] = kept[f"{key}_detector"]
    torch.save(saved, out / "model.pt")
    (out / "model.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def weights_contents(model: TemporalNet) -> dict[str, Any]:
    """What a ``model.pt`` holds of ``model``: its config, the temporal model's weights and, apart
    from them, its grimace and twitch detectors when it has them (the inverse of
    :func:`load_weights_and_rules`, less the decision rules)."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("grimace_detector.", "twitch_detector."))}
    saved: dict[str, Any] = {"model_config": model.config.to_dict(), "state_dict": state}
    if model.grimace_detector is not None:
        saved["grimace"] = stored_grimace(model.grimace_detector)
    if model.twitch_detector is not None:
        saved["twitch"] = stored_twitch(model.twitch_detector)
    return saved


def load_decision_rules(path: Path) -> DecisionRules:
    """The decision rules stored in a ``model.pt``; the plain 0.5 threshold for weights saved
    without them."""
    return DecisionRules.from_dict(torch.load(path, map_location="cpu", weights_only=True).get("decision"))


def load_weights_and_rules(path: Path, device: str | torch.device = "cpu") -> tuple[TemporalNet, DecisionRules]:
    """The model of a ``model.pt`` (config included, with its grimace and twitch detectors when it
    has them, in eval mode) and its decision rules, from one read of the file: what the worker and
    `icu eval` run with."""
    saved = torch.load(path, map_location=device, weights_only=True)
    model = build_model(config=ModelConfig.from_dict(saved["model_config"]))
    model.load_state_dict(saved["state_dict"])
    model.grimace_detector = load_grimace(saved, device)
    model.twitch_detector = load_twitch(saved, device)
    model.detector_frames()  # refuses detectors that read different frames
    return model.to(device).eval(), DecisionRules.from_dict(saved.get("decision"))


def load_weights(path: Path, device: str | torch.device = "cpu") -> TemporalNet:
    """A model from ``model.pt`` (config included), in eval mode."""
    return load_weights_and_rules(path, device)[0]
