"""Decision rules: from a finding's per-frame probability to "present" or "absent", causally.

A probability that wanders around 0.5 cuts one event into many short segments (flicker), which
the edit score and segmental F1 punish and which would make a nurse's screen blink. A
:class:`DecisionRule` is the classic remedy, hysteresis over a smoothed signal:

- the trailing mean of the last ``window`` frames' probabilities (no look into the future, so no
  delay beyond the model's own lookahead);
- a finding turns on when that mean reaches ``on``;
- it turns off once the mean has stayed below ``off`` for more than ``hold`` frames in a row.

``DecisionRule.threshold()`` (window 1, on = off = 0.5, hold 0) is the plain 0.5 threshold. One
rule per finding is fitted on validation clips with :func:`fit_rule` and kept with the weights
(:class:`DecisionRules`), so `icu eval`, the live worker, its evidence and the alert rules all
act on the same decision. :class:`Decider` runs a rule over a stream, frame by frame, for a bed;
:func:`decide` over a whole clip is the same code.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from inference.metrics import FINDINGS, FindingScores


class DecisionRuleError(ValueError):
    """A decision rule whose parameters make no sense; the message names the parameter."""


@dataclass(frozen=True, slots=True)
class DecisionRule:
    window: int = 1  # frames in the trailing mean
    on: float = 0.5  # the mean at or above which the finding turns on
    off: float = 0.5  # the mean below which it starts to turn off
    hold: int = 0  # frames the mean may stay below ``off`` and the finding still be on

    def __post_init__(self) -> None:
        if self.window < 1:
            raise DecisionRuleError(f"window must be at least 1 frame, got {self.window}")
        if not 0.0 <= self.off <= self.on <= 1.0:
            raise DecisionRuleError(f"need 0 <= off <= on <= 1, got off {self.off}, on {self.on}")
        if self.hold < 0:
            raise DecisionRuleError(f"hold must be 0 or more frames, got {self.hold}")

    @classmethod
    def threshold(cls) -> DecisionRule:
        """The plain 0.5 threshold: on exactly where the probability is at least 0.5."""
        return cls()

    def describe(self) -> str:
        """The rule in words, e.g. "mean of 3 frames: on at 0.6, off below 0.5"."""
        if self == DecisionRule.threshold():
            return "threshold 0.5"
        signal = "probability" if self.window == 1 else f"mean of {self.window} frames"
        off = f"off below {self.off:g}" + (f" for more than {self.hold} frames" if self.hold else "")
        return f"{signal}: on at {self.on:g}, {off}"


@dataclass(frozen=True, slots=True)
class DecisionRules:
    """One rule per finding: what a set of weights decides with."""

    grimace: DecisionRule = DecisionRule()
    twitch: DecisionRule = DecisionRule()
    apnea: DecisionRule = DecisionRule()

    def for_finding(self, name: str) -> DecisionRule:
        rule: DecisionRule = getattr(self, name)
        return rule

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(self.for_finding(name)) for name in FINDINGS}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DecisionRules:
        """Rules saved with :meth:`to_dict`; a finding without one keeps the 0.5 threshold
        (weights saved before rules existed have none)."""
        data = data or {}
        unknown = set(data) - set(FINDINGS)
        if unknown:
            raise DecisionRuleError(f"decision rules for unknown findings: {sorted(unknown)}")
        try:
            return cls(**{name: DecisionRule(**rule) for name, rule in data.items()})
        except TypeError as exc:
            raise DecisionRuleError(f"decision rule: {exc}") from None

    def describe(self) -> str:
        return "; ".join(f"{name}: {self.for_finding(name).describe()}" for name in FINDINGS)


class Decider:
    """One finding's decision for one stream, a frame at a time (state: the last ``window``
    probabilities, whether the finding is on, and how long the mean has been below ``off``)."""

    __slots__ = ("_below", "_cumulative", "_on", "_total", "rule")

    def __init__(self, rule: DecisionRule) -> None:
        self.rule = rule
        # Running totals of the probabilities, the last window + 1 of them: the trailing mean is
        # a difference of two, the same arithmetic as :func:`decide_grid`'s cumulative sum, so
        # the live stream and the fitted grid decide alike to the last bit.
        self._cumulative: deque[float] = deque([0.0], maxlen=rule.window + 1)
        self._total = 0.0
        self._on = False
        self._below = 0

    @property
    def on(self) -> bool:
        return self._on

    def push(self, probability: float) -> bool:
        """The decision for the next frame, given its probability."""
        self._total += probability
        self._cumulative.append(self._total)
        mean = (self._total - self._cumulative[0]) / (len(self._cumulative) - 1)
        if not self._on:
            if mean >= self.rule.on:
                self._on, self._below = True, 0
        elif mean < self.rule.off:
            self._below += 1
            if self._below > self.rule.hold:
                self._on, self._below = False, 0
        else:
            self._below = 0
        return self._on

    def push_many(self, probabilities: Iterable[float]) -> np.ndarray:
        return np.array([self.push(float(p)) for p in probabilities], dtype=bool)


def decide(probabilities: Sequence[float] | np.ndarray, rule: DecisionRule) -> np.ndarray:
    """Decisions (bool per frame) for a whole sequence, from a fresh :class:`Decider`."""
    return Decider(rule).push_many(np.asarray(probabilities, dtype=np.float64))


def decide_grid(probabilities: np.ndarray, rules: Sequence[DecisionRule]) -> np.ndarray:
    """:func:`decide` for many rules at once, (rules, frames) bool: the frame loop runs once with
    every rule's state in arrays, which is what makes fitting over a grid affordable."""
    p = np.asarray(probabilities, dtype=np.float64)
    windows = sorted({rule.window for rule in rules})
    cumulative = np.concatenate(([0.0], np.cumsum(p)))
    means = {}
    for w in windows:
        ends = np.arange(1, p.size + 1)
        starts = np.maximum(0, ends - w)
        means[w] = (cumulative[ends] - cumulative[starts]) / (ends - starts)
    mean = np.stack([means[rule.window] for rule in rules]) if rules else np.zeros((0, p.size))
    on_at = np.array([rule.on for rule in rules])
    off_at = np.array([rule.off for rule in rules])
    hold = np.array([rule.hold for rule in rules])
    state = np.zeros(len(rules), bool)
    below = np.zeros(len(rules), np.int64)
    out = np.zeros((len(rules), p.size), bool)
    for t in range(p.size):
        m = mean[:, t]
        turning_on = ~state & (m >= on_at)
        low = state & (m < off_at)
        below = np.where(low, below + 1, 0)
        turning_off = low & (below > hold)
        state = (state | turning_on) & ~turning_off
        below = np.where(turning_off, 0, below)
        out[:, t] = state
    return out


def default_grid() -> list[DecisionRule]:
    """The rules :func:`fit_rule` tries: the plain threshold among them, so a fitted rule is never
    worse than it on the clips it was fitted on."""
    levels = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    grid = [
        DecisionRule(window=window, on=on, off=off, hold=hold)
        for window, on, off, hold in itertools.product((1, 3, 5, 9, 15, 25), levels[2:], levels, (0, 5, 10, 20, 40))
        if off <= on
    ]
    return grid


def objective(scores: FindingScores) -> float:
    """What a rule is fitted for: the mean of frame F1, edit score / 100 and segmental F1@50,
    the three figures `icu eval` reports per finding."""
    summary = scores.summary()
    return (summary["f1"] + summary["edit"] / 100.0 + summary["f1_at_50"]) / 3.0


@dataclass(frozen=True)
class FitResult:
    rule: DecisionRule
    score: float  # the objective with the fitted rule
    threshold_score: float  # the objective with the plain 0.5 threshold


def fit_rule(
    clips: Sequence[tuple[np.ndarray, np.ndarray]], *, grid: Sequence[DecisionRule] | None = None
) -> FitResult:
    """The rule of ``grid`` (default :func:`default_grid`) with the best :func:`objective` over
    ``clips``, each (probabilities, 0/1 labels) per frame. Ties go to the earlier rule of the
    grid, and the plain threshold wins any tie with it."""
    threshold = DecisionRule.threshold()
    candidates = [threshold, *[rule for rule in (grid or default_grid()) if rule != threshold]]
    scores = [FindingScores() for _ in candidates]
    for probabilities, labels in clips:
        truth = np.asarray(labels).astype(bool)
        decisions = decide_grid(probabilities, candidates)
        for score, decided in zip(scores, decisions, strict=True):
            score.add(decided, truth)
    values = [objective(score) for score in scores]
    best = int(np.argmax(values))
    return FitResult(candidates[best], values[best], values[0])
