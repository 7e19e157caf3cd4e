"""`icu eval`: run a model over a clip directory (the clip dataset format) and score it.

Works on any directory in the format, not only the simulator's: ``<id>.json`` with ``fps`` and
per-frame ``labels`` (missing keys = not annotated) next to ``<id>.mp4`` (any FFmpeg-readable
video with the same stem). Clips are decoded with PyAV; every decoded frame must have a label.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np

from inference.classical import FeatureExtractor, analyse
from inference.decisions import DecisionRules
from inference.metrics import SplitScores
from simulator.clips import ClipError, read_clip_labels

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")


class EvalError(ValueError):
    """A clip directory that cannot be evaluated; the message names the file."""


@dataclass(frozen=True, slots=True)
class Clip:
    clip_id: str
    video: Path
    fps: float
    labels: dict[str, list[Any]]


def find_clips(directory: Path) -> list[Clip]:
    """Every labelled clip of ``directory``, in name order."""
    if not directory.is_dir():
        raise EvalError(f"{directory}: not a directory")
    clips = []
    for json_path in sorted(directory.glob("*.json")):
        try:
            document = read_clip_labels(json_path)
        except ClipError as exc:
            raise EvalError(str(exc)) from None
        video = next((json_path.with_suffix(s) for s in VIDEO_SUFFIXES if json_path.with_suffix(s).exists()), None)
        if video is None:
            raise EvalError(f"{json_path}: no video next to it ({', '.join(VIDEO_SUFFIXES)})")
        labels = {key: value for key, value in document["labels"].items() if isinstance(value, list)}
        clips.append(Clip(json_path.stem, video, float(document["fps"]), labels))
    if not clips:
        raise EvalError(f"{directory}: no clips (expected <id>.json + <id>.mp4 pairs)")
    return clips


def decode(video: Path) -> Iterator[np.ndarray]:
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="bgr24")
    except av.error.FFmpegError as exc:
        raise EvalError(f"{video}: cannot decode ({exc.strerror or exc})") from None


def classical_predictions(clip: Clip) -> tuple[dict[str, Any], int]:
    extractor = FeatureExtractor()
    features = [extractor.push(image) for image in decode(clip.video)]
    if not features:
        raise EvalError(f"{clip.video}: no decodable frame")
    analysis = analyse(features, clip.fps)
    predictions = {
        "grimace": None,  # the baseline has no face model
        "twitch": analysis.twitch,
        "apnea": analysis.apnea,
        "resp_rate_bpm": analysis.resp_rate_bpm,
    }
    return predictions, len(features)


def temporal_predictions(
    clip: Clip, model: Any, device: Any, rules: DecisionRules | None = None
) -> tuple[dict[str, Any], int]:
    from inference.data import decode_inputs
    from inference.train import frame_predictions, predict_clip

    images, grey = decode_inputs(clip.video, model.config, model.detector_frames())
    if not images:
        raise EvalError(f"{clip.video}: no decodable frame")
    frames = np.stack(images)
    predicted = predict_clip(model, frames, device, np.stack(grey) if grey else None)
    return frame_predictions(predicted, rules), frames.shape[0]


def evaluate(
    directory: Path, *, model: str = "classical", weights: Path | None = None, decisions: str = "fitted"
) -> dict[str, Any]:
    """Score ``model`` on every clip of ``directory``; the JSON object `icu eval` prints. The
    temporal model uses ``weights``, by default the packaged ones `icu infer` loads, and decides
    each finding with the rules stored with them (``decisions="fitted"``, what `icu infer` does)
    or with the plain 0.5 threshold (``"threshold"``)."""
    if model not in ("classical", "temporal"):
        raise EvalError(f"unknown model {model!r}")
    if decisions not in ("fitted", "threshold"):
        raise EvalError(f"unknown decisions {decisions!r} (fitted or threshold)")
    network = None
    device = None
    rules: DecisionRules | None = None
    if model == "temporal":
        import torch

        from inference.train import load_weights_and_rules
        from inference.worker import packaged_weights

        weights = packaged_weights() if weights is None else weights
        if not weights.is_file():
            raise EvalError(f"--weights: no model file {weights} (train one with `icu train`)")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        network, fitted = load_weights_and_rules(weights, device)
        rules = fitted if decisions == "fitted" else DecisionRules()
    clips = find_clips(directory)
    scores = SplitScores()
    frames = 0
    began = time.perf_counter()
    for clip in clips:
        if network is not None:
            predictions, decoded = temporal_predictions(clip, network, device, rules)
        else:
            predictions, decoded = classical_predictions(clip)
        label_lengths = {len(v) for v in clip.labels.values()}
        if label_lengths and decoded not in label_lengths:
            raise EvalError(f"{clip.video}: {decoded} frames decoded, labels have {sorted(label_lengths)}")
        frames += decoded
        scores.add_clip(fps=clip.fps, labels=clip.labels, predictions=predictions)
    elapsed = time.perf_counter() - began
    result = {"model": model, **scores.summary(), "fps": round(frames / elapsed, 1) if elapsed > 0 else None}
    if rules is not None:
        result["decision"] = rules.to_dict()
    if network is not None:
        result["grimace_from"] = "grimace detector" if network.grimace_detector is not None else "temporal head"
        result["twitch_from"] = "twitch detector" if network.twitch_detector is not None else "temporal head"
    return result
