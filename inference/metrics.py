"""Evaluation metrics of `icu eval`, as defined in the project's clinical references.

- Frame-level precision, recall and F1 per binary finding, pooled over every frame of a split.
- Edit score: 100 x (1 - normalised Levenshtein distance) between the predicted and the true
  *segment* sequences (runs of equal labels), as in action segmentation (Lea et al. 2017; MS-TCN).
  It ignores where segments start and end and penalises flicker: one spurious frame adds two
  segments.
- Segmental F1@50: a predicted positive segment is a true positive when its IoU with a still
  unmatched true positive segment is at least 0.5.
- Respiration rate, per second: MAE over seconds where both truth and estimate exist, the share of
  those estimates within 2 breaths/min, and coverage = share of seconds with truth that got an
  estimate.

Pure functions over numpy arrays; per-clip results are accumulated by :class:`SplitScores` so a
split's figures are pooled exactly as defined (frame counts summed, edit scores averaged per clip).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def segments(labels: Sequence[int] | np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of equal labels as (label, start, end_exclusive)."""
    values = np.asarray(labels).astype(np.int64)
    if values.size == 0:
        return []
    change = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [values.size]))
    return [(int(values[s]), int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
    """Edit distance between two label sequences (insert, delete, substitute: cost 1)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def edit_score(predicted: Sequence[int] | np.ndarray, truth: Sequence[int] | np.ndarray) -> float:
    """100 x (1 - Levenshtein(segment labels) / max(segment counts)); 100 for identical sequences."""
    p = [label for label, _, _ in segments(predicted)]
    t = [label for label, _, _ in segments(truth)]
    longest = max(len(p), len(t))
    if longest == 0:
        return 100.0
    return 100.0 * (1.0 - levenshtein(p, t) / longest)


def segment_matches(
    predicted: Sequence[int] | np.ndarray, truth: Sequence[int] | np.ndarray, *, iou: float = 0.5
) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of positive segments at IoU >= ``iou``."""
    pred_segments = [(s, e) for label, s, e in segments(predicted) if label == 1]
    true_segments = [(s, e) for label, s, e in segments(truth) if label == 1]
    matched = [False] * len(true_segments)
    tp = 0
    for ps, pe in pred_segments:
        best, best_iou = -1, 0.0
        for k, (ts, te) in enumerate(true_segments):
            if matched[k]:
                continue
            overlap = min(pe, te) - max(ps, ts)
            if overlap <= 0:
                continue
            score = overlap / (max(pe, te) - min(ps, ts))
            if score > best_iou:
                best, best_iou = k, score
        if best >= 0 and best_iou >= iou:
            matched[best] = True
            tp += 1
    return tp, len(pred_segments) - tp, len(true_segments) - tp


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass
class FindingScores:
    """Pooled counts for one binary finding over a split."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    seg_tp: int = 0
    seg_fp: int = 0
    seg_fn: int = 0
    edits: list[float] = field(default_factory=list)

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        p = np.asarray(predicted).astype(bool)
        t = np.asarray(truth).astype(bool)
        if p.shape != t.shape:
            raise ValueError(f"{p.size} predictions for {t.size} labels")
        self.tp += int(np.sum(p & t))
        self.fp += int(np.sum(p & ~t))
        self.fn += int(np.sum(~p & t))
        stp, sfp, sfn = segment_matches(p.astype(int), t.astype(int))
        self.seg_tp, self.seg_fp, self.seg_fn = self.seg_tp + stp, self.seg_fp + sfp, self.seg_fn + sfn
        self.edits.append(edit_score(p.astype(int), t.astype(int)))

    def summary(self) -> dict[str, float]:
        precision, recall, f1 = _f1(self.tp, self.fp, self.fn)
        return {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "edit": round(float(np.mean(self.edits)), 2) if self.edits else 100.0,
            "f1_at_50": round(_f1(self.seg_tp, self.seg_fp, self.seg_fn)[2], 4),
        }


def per_second(values: Sequence[float | None] | np.ndarray, fps: float) -> np.ndarray:
    """One value per whole second (the mean of that second's frames; NaN where none is known)."""
    array = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    per_frame_second = (np.arange(array.size) / fps).astype(np.int64)
    seconds = int(per_frame_second[-1]) + 1 if array.size else 0
    out = np.full(seconds, np.nan)
    for second in range(seconds):
        chunk = array[per_frame_second == second]
        known = chunk[~np.isnan(chunk)]
        if known.size:
            out[second] = known.mean()
    return out


@dataclass
class RespRateScores:
    """Per-second respiration-rate errors pooled over a split."""

    errors: list[float] = field(default_factory=list)
    truth_seconds: int = 0
    covered_seconds: int = 0

    def add(self, estimate: np.ndarray, truth: np.ndarray) -> None:
        if estimate.shape != truth.shape:
            raise ValueError(f"{estimate.size} estimates for {truth.size} seconds of truth")
        has_truth = ~np.isnan(truth)
        both = has_truth & ~np.isnan(estimate)
        self.truth_seconds += int(has_truth.sum())
        self.covered_seconds += int(both.sum())
        self.errors.extend(np.abs(estimate[both] - truth[both]).tolist())

    def summary(self) -> dict[str, float | None]:
        errors = np.array(self.errors)
        return {
            "mae_bpm": round(float(errors.mean()), 3) if errors.size else None,
            "within_2bpm": round(float(np.mean(errors <= 2.0)), 4) if errors.size else None,
            "coverage": round(self.covered_seconds / self.truth_seconds, 4) if self.truth_seconds else None,
        }


FINDINGS = ("grimace", "twitch", "apnea")


@dataclass
class SplitScores:
    """Everything `icu eval` reports, accumulated clip by clip."""

    findings: dict[str, FindingScores] = field(default_factory=dict)
    resp_rate: RespRateScores | None = None
    clips: int = 0
    frames: int = 0

    def add_clip(self, *, fps: float, labels: dict[str, Any], predictions: dict[str, Any]) -> None:
        """Score one clip. A finding counts only where the clip is annotated for it *and* the
        model predicts it; missing label keys mean "not annotated" (the clip format's rule)."""
        self.clips += 1
        lengths = {len(v) for v in labels.values()}
        self.frames += max(lengths) if lengths else 0
        for name in FINDINGS:
            if name in labels and predictions.get(name) is not None:
                self.findings.setdefault(name, FindingScores()).add(
                    np.asarray(predictions[name]), np.asarray(labels[name])
                )
        if "resp_rate_bpm" in labels and predictions.get("resp_rate_bpm") is not None:
            self.resp_rate = self.resp_rate or RespRateScores()
            self.resp_rate.add(per_second(predictions["resp_rate_bpm"], fps), per_second(labels["resp_rate_bpm"], fps))

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = {"clips": self.clips, "frames": self.frames}
        for name in FINDINGS:
            scores = self.findings.get(name)
            result[name] = scores.summary() if scores is not None else None
        result["resp_rate"] = self.resp_rate.summary() if self.resp_rate is not None else None
        return result
