"""Decision rules: hysteresis over a trailing mean, streamed or over a whole clip, and fitting."""

from __future__ import annotations

import numpy as np
import pytest

from inference.decisions import (
    Decider,
    DecisionRule,
    DecisionRuleError,
    DecisionRules,
    decide,
    decide_grid,
    default_grid,
    fit_rule,
)
from inference.metrics import segments


def noisy_events(rng: np.random.Generator, frames: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """One true event per clip and a probability that wanders around 0.5 inside and outside it."""
    truth = np.zeros(frames, int)
    start = int(rng.integers(20, frames - 120))
    truth[start : start + int(rng.integers(40, 100))] = 1
    return np.clip(0.3 + 0.35 * truth + rng.normal(0.0, 0.18, frames), 0.0, 1.0), truth


def test_the_threshold_rule_is_the_plain_half_threshold() -> None:
    probabilities = np.random.default_rng(1).random(500)
    probabilities[::50] = 0.5  # exactly at the threshold counts as present
    assert np.array_equal(decide(probabilities, DecisionRule.threshold()), probabilities >= 0.5)
    assert DecisionRules().describe() == "grimace: threshold 0.5; twitch: threshold 0.5; apnea: threshold 0.5"


def test_streamed_in_pieces_the_grid_and_a_whole_clip_decide_alike_to_the_bit() -> None:
    # The live worker feeds a hop at a time, icu eval a whole clip, the fit every rule at once.
    probabilities, _ = noisy_events(np.random.default_rng(2))
    rules = default_grid()[::7]
    grid = decide_grid(probabilities, rules)
    for rule, decided in zip(rules, grid, strict=True):
        decider = Decider(rule)
        streamed = np.concatenate([decider.push_many(probabilities[i : i + 10]) for i in range(0, 300, 10)])
        assert np.array_equal(streamed, decide(probabilities, rule)), rule
        assert np.array_equal(streamed, decided), rule
        assert decider.on == streamed[-1]


def test_hysteresis_and_hold_keep_one_event_one_segment() -> None:
    flicker = np.array([0.1] * 5 + [0.8, 0.45, 0.7, 0.42, 0.9, 0.46] + [0.1] * 5)
    assert len([s for s in segments(decide(flicker, DecisionRule.threshold())) if s[0] == 1]) == 3
    hysteresis = decide(flicker, DecisionRule(on=0.6, off=0.4))
    assert hysteresis.astype(int).tolist() == [0] * 5 + [1] * 6 + [0] * 5
    # Below "off" for 3 frames: still on with hold 3, off at the fourth.
    dip = np.array([0.9, 0.9, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert decide(dip, DecisionRule(on=0.6, off=0.4, hold=3)).astype(int).tolist() == [1] * 9 + [0] * 2
    # A trailing mean of 3 frames: a lone spike does not reach 0.6, a sustained rise does.
    spike = np.array([0.1, 0.1, 1.0, 0.1, 0.1, 0.8, 0.8, 0.8])
    assert decide(spike, DecisionRule(window=3, on=0.6, off=0.4)).astype(int).tolist() == [0] * 7 + [1]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"window": 0}, "window"),
        ({"on": 0.3, "off": 0.5}, "off <= on"),
        ({"on": 1.5, "off": 0.5}, "on <= 1"),
        ({"hold": -1}, "hold"),
    ],
)
def test_nonsense_rules_are_refused_naming_the_parameter(values: dict[str, float], named: str) -> None:
    with pytest.raises(DecisionRuleError, match=named):
        DecisionRule(**values)  # type: ignore[arg-type]


def test_rules_round_trip_and_old_weights_without_rules_keep_the_threshold() -> None:
    rules = DecisionRules(apnea=DecisionRule(window=15, on=0.7, off=0.4, hold=5))
    assert DecisionRules.from_dict(rules.to_dict()) == rules
    assert DecisionRules.from_dict(None) == DecisionRules()
    assert DecisionRules.from_dict({"twitch": {"window": 1, "on": 0.8, "off": 0.8, "hold": 0}}).grimace == (
        DecisionRule.threshold()
    )
    with pytest.raises(DecisionRuleError, match="unknown findings"):
        DecisionRules.from_dict({"sneezing": {}})
    with pytest.raises(DecisionRuleError, match="unexpected keyword"):
        DecisionRules.from_dict({"apnea": {"window": 3, "delay": 2}})


def test_a_fitted_rule_beats_the_threshold_on_flicker_and_generalises() -> None:
    rng = np.random.default_rng(3)
    fitting = [noisy_events(rng) for _ in range(24)]
    fit = fit_rule(fitting)
    assert fit.rule != DecisionRule.threshold()
    assert fit.score > fit.threshold_score + 0.2
    # On clips it never saw, the fitted rule still cuts flicker: far fewer segments per event.
    held_out = [noisy_events(rng) for _ in range(12)]
    for probabilities, truth in held_out:
        fitted = len(segments(decide(probabilities, fit.rule)))
        plain = len(segments(decide(probabilities, DecisionRule.threshold())))
        assert fitted < plain
        assert fitted <= len(segments(truth)) + 2


def test_clean_probabilities_keep_the_plain_threshold() -> None:
    # Nothing to smooth: every rule that scores as well loses the tie to the threshold.
    truth = np.zeros(200, int)
    truth[50:120] = 1
    fit = fit_rule([(truth * 0.9 + 0.05, truth)])
    assert fit.rule == DecisionRule.threshold()
    assert fit.score == fit.threshold_score == pytest.approx(1.0)
