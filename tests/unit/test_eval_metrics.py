"""The evaluation metrics, checked against hand-worked cases from their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference.metrics import (
    FindingScores,
    RespRateScores,
    SplitScores,
    edit_score,
    levenshtein,
    per_second,
    segment_matches,
    segments,
)


def test_segments_are_runs_of_equal_labels() -> None:
    assert segments([0, 0, 1, 1, 1, 0]) == [(0, 0, 2), (1, 2, 5), (0, 5, 6)]
    assert segments([]) == []
    assert segments([1]) == [(1, 0, 1)]


def test_levenshtein_textbook_cases() -> None:
    assert levenshtein([], []) == 0
    assert levenshtein([1, 2, 3], [1, 2, 3]) == 0
    assert levenshtein([1, 2, 3], [1, 3]) == 1
    assert levenshtein(list(b"kitten"), list(b"sitting")) == 3


def test_edit_score_ignores_boundaries_and_penalises_flicker() -> None:
    truth = [0] * 10 + [1] * 10 + [0] * 10
    shifted = [0] * 12 + [1] * 10 + [0] * 8
    assert edit_score(shifted, truth) == 100.0  # same segment sequence 0-1-0
    flicker = truth.copy()
    flicker[3] = 1  # 0-1-0-1-0: two extra segments against three
    assert edit_score(flicker, truth) == pytest.approx(100 * (1 - 2 / 5))
    assert edit_score([0] * 30, truth) == pytest.approx(100 * (1 - 2 / 3))
    assert edit_score([], []) == 100.0


def test_segmental_f1_needs_half_overlap_and_matches_each_truth_once() -> None:
    truth = [0] * 10 + [1] * 10 + [0] * 10
    good = [0] * 12 + [1] * 10 + [0] * 8  # IoU 8/12 = 0.67
    assert segment_matches(good, truth) == (1, 0, 0)
    poor = [0] * 17 + [1] * 10 + [0] * 3  # IoU 3/17
    assert segment_matches(poor, truth) == (0, 1, 1)
    split = [0] * 10 + [1] * 5 + [0] + [1] * 4 + [0] * 10  # two predictions, one truth
    tp, fp, fn = segment_matches(split, truth)
    # The first half has IoU 5/10 = 0.5 exactly and takes the truth; the second finds it matched.
    assert (tp, fp, fn) == (1, 1, 0)


def test_finding_scores_pool_frames_and_report_every_figure() -> None:
    scores = FindingScores()
    scores.add(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    scores.add(np.array([0, 0]), np.array([0, 0]))
    summary = scores.summary()
    assert summary["precision"] == 0.5
    assert summary["recall"] == 0.5
    assert summary["f1"] == 0.5
    assert set(summary) == {"precision", "recall", "f1", "edit", "f1_at_50"}
    with pytest.raises(ValueError, match="predictions"):
        scores.add(np.array([1]), np.array([1, 0]))


def test_no_positives_anywhere_is_perfect_not_nan() -> None:
    scores = FindingScores()
    scores.add(np.zeros(5), np.zeros(5))
    assert scores.summary()["f1"] == 1.0
    assert scores.summary()["f1_at_50"] == 1.0


def test_per_second_means_and_unknowns() -> None:
    values = [10.0, 12.0, None, None, 20.0]
    out = per_second(values, fps=2)
    assert out[0] == 11.0
    assert math.isnan(out[1])
    assert out[2] == 20.0


def test_resp_rate_mae_within_and_coverage() -> None:
    scores = RespRateScores()
    truth = np.array([15.0, 15.0, 15.0, np.nan])
    estimate = np.array([16.0, 18.0, np.nan, 12.0])
    scores.add(estimate, truth)
    summary = scores.summary()
    assert summary["mae_bpm"] == 2.0
    assert summary["within_2bpm"] == 0.5
    assert summary["coverage"] == pytest.approx(2 / 3, abs=1e-4)


def test_split_scores_null_where_unlabelled_or_unpredicted() -> None:
    split = SplitScores()
    labels = {"twitch": [0, 1, 1, 0], "resp_rate_bpm": [12.0, 12.0, 12.0, 12.0]}
    split.add_clip(fps=2, labels=labels, predictions={"twitch": [0, 1, 1, 0], "grimace": [0, 0, 0, 0],
                                                      "resp_rate_bpm": [12.5, None, 11.0, 11.0]})  # fmt: skip
    result = split.summary()
    assert result["clips"] == 1
    assert result["frames"] == 4
    assert result["grimace"] is None  # not annotated
    assert result["apnea"] is None  # neither
    assert result["twitch"]["f1"] == 1.0
    assert result["resp_rate"]["coverage"] == 1.0
    assert result["resp_rate"]["mae_bpm"] == pytest.approx(0.75)
