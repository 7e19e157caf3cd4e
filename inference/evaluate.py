"""`icu eval`: run a model over a clip directory (the clip dataset format) and score it.

Works on any directory in the format, not only the simulator's: ``<id>.json`` with ``fps`` and
per-frame ``labels`` (missing keys = not annotated) next to ``<id>.mp4`` (any FFmpeg-readable
video with the same stem). Clips are decoded with PyAV; every decoded frame must have a label.

**Breakdowns** (``group_by``): the same scores per group of clips, where a group is the value of a
field of the clips' JSON, named by its dotted path (``meta.appearance.blanket_pattern`` in the
simulator's clips; any field an outside set carries), or ``events``: each event type a clip holds
(a clip with several is in each of their groups, one with none in ``none``). A numeric field with
more than :data:`NUMERIC_GROUPS` distinct values is cut into that many groups of near-equal clip
counts, named by their ranges. Which conditions a model fails in is what says what to fix.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
NUMERIC_GROUPS = 3
MISSING = "(missing)"


class EvalError(ValueError):
    """A clip directory that cannot be evaluated; the message names the file."""


@dataclass(frozen=True, slots=True)
class Clip:
    clip_id: str
    video: Path
    fps: float
    labels: dict[str, list[Any]]
    document: dict[str, Any] = field(default_factory=dict)  # the whole JSON, for breakdowns


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
        clips.append(Clip(json_path.stem, video, float(document["fps"]), labels, document))
    if not clips:
        raise EvalError(f"{directory}: no clips (expected <id>.json + <id>.mp4 pairs)")
    return clips


def _field_value(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def clip_groups(clips: Sequence[Clip], path: str) -> list[list[str]]:
    """Per clip, the groups of breakdown ``path`` it belongs to (see the module's docstring)."""
    if not path or any(not part for part in path.split(".")):
        raise EvalError(f"--group-by {path!r}: a dotted path into the clips' JSON (e.g. meta.split) or 'events'")
    if path == "events":
        groups = []
        for clip in clips:
            events = clip.document.get("events")
            events = events if isinstance(events, list) else []
            types = sorted({str(e["type"]) for e in events if isinstance(e, dict) and "type" in e})
            groups.append(types or ["none"])
        return groups
    values = [_field_value(clip.document, path) for clip in clips]
    if all(value is None for value in values):
        known = ", ".join(sorted(k for k in clips[0].document if k != "labels"))
        raise EvalError(f"--group-by {path}: no clip has this field (the first clip's top-level fields: {known})")
    numeric = all(v is None or _is_number(v) for v in values)
    if numeric and len({v for v in values if v is not None}) > NUMERIC_GROUPS:
        # Cut at the clips' quantiles, so each group holds about as many clips; each group is
        # named by the range of its own clips' values.
        present = np.array([float(v) for v in values if v is not None])
        cuts = np.quantile(present, np.linspace(0, 1, NUMERIC_GROUPS + 1))[1:-1]
        bins = np.searchsorted(cuts, present, side="right")
        names = iter(f"{present[bins == b].min():.4g} to {present[bins == b].max():.4g}" for b in bins.tolist())
        return [[MISSING] if v is None else [next(names)] for v in values]
    return [[MISSING] if v is None else [v if isinstance(v, str) else json.dumps(v, sort_keys=True)] for v in values]


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
    directory: Path,
    *,
    model: str = "classical",
    weights: Path | None = None,
    decisions: str = "fitted",
    group_by: Sequence[str] = (),
) -> dict[str, Any]:
    """Score ``model`` on every clip of ``directory``; the JSON object `icu eval` prints. The
    temporal model uses ``weights``, by default the packaged ones `icu infer` loads, and decides
    each finding with the rules stored with them (``decisions="fitted"``, what `icu infer` does)
    or with the plain 0.5 threshold (``"threshold"``). Each breakdown of ``group_by`` adds the
    same scores per group under ``"groups"``."""
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
    # Grouped before the model runs: a mistyped field fails in a second, not after the clips.
    memberships = {path: clip_groups(clips, path) for path in group_by}
    grouped: dict[str, dict[str, SplitScores]] = {path: {} for path in group_by}
    scores = SplitScores()
    frames = 0
    began = time.perf_counter()
    for index, clip in enumerate(clips):
        if network is not None:
            predictions, decoded = temporal_predictions(clip, network, device, rules)
        else:
            predictions, decoded = classical_predictions(clip)
        label_lengths = {len(v) for v in clip.labels.values()}
        if label_lengths and decoded not in label_lengths:
            raise EvalError(f"{clip.video}: {decoded} frames decoded, labels have {sorted(label_lengths)}")
        frames += decoded
        scores.add_clip(fps=clip.fps, labels=clip.labels, predictions=predictions)
        for path, groups in memberships.items():
            for group in groups[index]:
                grouped[path].setdefault(group, SplitScores()).add_clip(
                    fps=clip.fps, labels=clip.labels, predictions=predictions
                )
    elapsed = time.perf_counter() - began
    result = {"model": model, **scores.summary(), "fps": round(frames / elapsed, 1) if elapsed > 0 else None}
    if rules is not None:
        result["decision"] = rules.to_dict()
    if network is not None:
        result["grimace_from"] = "grimace detector" if network.grimace_detector is not None else "temporal head"
        result["twitch_from"] = "twitch detector" if network.twitch_detector is not None else "temporal head"
    if group_by:
        result["groups"] = {
            path: {group: grouped[path][group].summary() for group in sorted(grouped[path])} for path in group_by
        }
    return result
