"""`icu eval --group-by`: the same scores per group of clips (a field of the clips' JSON, or their events)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from icu.cli import main
from inference.evaluate import MISSING, Clip, EvalError, clip_groups
from simulator.clips import ClipSpec, write_clip
from simulator.scenario import parse_scenario


def clip(document: dict[str, Any]) -> Clip:
    return Clip("c", Path("c.mp4"), 10.0, {}, document)


def test_groups_are_field_values_events_or_numeric_ranges() -> None:
    clips = [
        clip({"meta": {"pattern": "plain", "px": 1.0, "n": 1}, "events": [{"type": "apnea"}, {"type": "pain"}]}),
        clip({"meta": {"pattern": "checks", "px": 2.0, "n": 2}, "events": []}),
        clip({"meta": {"pattern": "plain", "px": 3.0, "n": 1}, "events": [{"type": "apnea"}, {"type": "apnea"}]}),
        clip({"meta": {"px": 4.0, "n": 2}}),
        clip({"meta": {"pattern": "checks", "px": 5.0}}),
        clip({"meta": {"pattern": "plain", "px": 6.0, "n": 1}}),
    ]
    assert clip_groups(clips, "meta.pattern") == [["plain"], ["checks"], ["plain"], [MISSING], ["checks"], ["plain"]]
    # Each event type once per clip; a clip in every group of its types; none without events.
    assert clip_groups(clips, "events") == [["apnea", "pain"], ["none"], ["apnea"], ["none"], ["none"], ["none"]]
    # More distinct numbers than groups: three ranges of about as many clips each.
    assert clip_groups(clips, "meta.px") == [["1 to 2"], ["1 to 2"], ["3 to 4"], ["3 to 4"], ["5 to 6"], ["5 to 6"]]
    # Few distinct numbers are groups of their own, and a missing value is its own group.
    assert clip_groups(clips, "meta.n") == [["1"], ["2"], ["1"], ["2"], [MISSING], ["1"]]


def test_a_field_no_clip_has_or_a_malformed_path_is_named() -> None:
    clips = [clip({"meta": {"split": "test"}, "fps": 10})]
    with pytest.raises(EvalError, match=r"--group-by meta\.splt: no clip has this field .*fps, meta"):
        clip_groups(clips, "meta.splt")
    with pytest.raises(EvalError, match="dotted path"):
        clip_groups(clips, "meta..split")


def test_icu_eval_scores_each_group_as_it_would_score_those_clips_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    everything = tmp_path / "all"
    cases = [(14.0, [{"kind": "apnea", "onset_s": 10, "duration_s": 10}], 3), (22.0, [], 13), (10.0, [], 5)]
    for i, (rr, episodes, seed) in enumerate(cases):
        scenario = parse_scenario({"name": f"c{i}", "duration_s": 25, "baseline": {"rr": rr}, "episodes": episodes},
                                  source="test")  # fmt: skip
        write_clip(ClipSpec(f"c{i}", scenario, seed=seed, split="test", index=i, fps=10.0, width=320, height=240),
                   everything)  # fmt: skip
    alone = {"apnea": tmp_path / "apnea", "none": tmp_path / "none"}
    for name in ("c0", "c1", "c2"):
        folder = alone["apnea" if name == "c0" else "none"]
        folder.mkdir(exist_ok=True)
        for suffix in (".json", ".mp4"):
            shutil.copy(everything / f"{name}{suffix}", folder)

    def scores(*args: str) -> dict[str, Any]:
        assert main(["eval", "--model", "classical", *args]) == 0
        result: dict[str, Any] = json.loads(capsys.readouterr().out)
        return result

    result = scores("--data", str(everything), "--group-by", "events", "--group-by", "meta.split")
    assert result["clips"] == 3
    by_events = result["groups"]["events"]
    assert set(by_events) == {"apnea", "none"}
    for group, folder in alone.items():
        expected = {k: v for k, v in scores("--data", str(folder)).items() if k not in ("fps", "model")}
        assert by_events[group] == expected
    assert (by_events["apnea"]["clips"], by_events["none"]["clips"]) == (1, 2)
    # One group holding every clip scores what the whole directory scores.
    whole = {k: v for k, v in result.items() if k not in ("fps", "model", "groups")}
    assert result["groups"]["meta.split"] == {"test": whole}

    # A mistyped field fails before any clip is scored, naming the field.
    assert main(["eval", "--data", str(everything), "--group-by", "meta.splt"]) == 2
    assert "--group-by meta.splt: no clip has this field" in capsys.readouterr().err
