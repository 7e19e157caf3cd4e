"""Scenario files: the library loads, and every bad field is named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from icu.cli import main
from simulator.scenario import ScenarioError, library_names, load_scenario, load_scenario_file, parse_scenario

FINDINGS = {"pain", "respiratory_deterioration", "apnea", "irregular_breathing", "myoclonus", "seizure", "sepsis"}
NUISANCES = {"walk_through", "night_mode", "blanket_adjustment", "camera_shake", "noise", "head_turn"}


def test_library_covers_every_finding_nuisance_and_long_courses() -> None:
    names = library_names()
    scenarios = [load_scenario(name) for name in names]
    kinds = {episode.kind for scenario in scenarios for episode in scenario.episodes}
    assert FINDINGS | NUISANCES | {"agitation"} <= kinds
    assert "stable" in names
    courses = [s for s in scenarios if s.name.startswith("course-")]
    assert len(courses) >= 3
    assert all(s.duration_s >= 2 * 3600 for s in courses)
    for scenario in scenarios:
        assert scenario.description, scenario.name


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"name": "x", "duration_s": 60, "episodes": [{"kind": "sneeze", "onset_s": 1, "duration_s": 2}]},
         "episodes[0]: unknown episode kind 'sneeze'"),
        ({"name": "x", "duration_s": 60, "episodes": [{"onset_s": 1, "duration_s": 2}]},
         "episodes[0]: an episode needs 'kind'"),
        ({"name": "x", "duration_s": 60, "episodes": [{"kind": "pain", "onset_s": 1, "duration_s": 5},
                                                      {"kind": "apnea", "onset_s": 10, "duration_s": 5}]},
         "episodes[1].duration_s: Input should be greater than or equal to 10"),
        ({"name": "x", "duration_s": 60, "episodes": [{"kind": "pain", "onset_s": -1, "duration_s": 5}]},
         "episodes[0].onset_s: Input should be greater than or equal to 0"),
        ({"name": "x", "duration_s": 60, "episodes": [{"kind": "apnea", "onset_s": 55, "duration_s": 20}]},
         "episodes[0] (apnea) ends at 75 s, after the scenario's duration_s 60"),
        ({"name": "x", "duration_s": 60, "episodes": [{"kind": "seizure", "onset_s": 1, "duration_s": 5,
                                                       "frequency_hz": 9}]},
         "episodes[0].frequency_hz: Input should be less than or equal to 5"),
        ({"name": "x", "duration_s": 60, "episodes": [{"kind": "pain", "onset_s": 1, "duration_s": 5,
                                                       "bout_s": [6, 2]}]},
         "episodes[0]: bout_s must be an increasing range"),
        ({"name": "x", "duration_s": 60, "episodes": [{"kind": "myoclonus", "onset_s": 1, "duration_s": 5,
                                                       "limbs": ["tail"]}]},
         "episodes[0].limbs[0]: Input should be 'head'"),
        ({"name": "x", "duration_s": 60, "baseline": {"sbp": 80, "dbp": 90}}, "baseline: dbp 90.0 must be below sbp"),
        ({"name": "x", "duration_s": 60, "baseline": {"heart_rate": 80}}, "baseline.heart_rate: unknown field"),
        ({"name": "x", "duration_s": 0}, "duration_s: Input should be greater than 0"),
        ({"name": "Bad Name", "duration_s": 10}, "name: String should match pattern"),
    ],
)  # fmt: skip
def test_invalid_scenarios_name_the_field(document: dict[str, object], expected: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(document, source="case.yaml")
    assert expected in str(caught.value)
    assert str(caught.value).startswith("case.yaml: invalid scenario")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nduration_s: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"broken\.yaml: not valid YAML"):
        load_scenario_file(broken)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(ScenarioError, match=r"list\.json: a scenario must be a mapping, got list"):
        load_scenario_file(listing)
    with pytest.raises(ScenarioError, match=r"no scenario named 'nope'.*library: .*stable"):
        load_scenario("nope")


def test_json_and_yaml_give_the_same_scenario(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "name: a\nduration_s: 30\nepisodes:\n  - {kind: apnea, onset_s: 5, duration_s: 12}\n"
    )
    (tmp_path / "a.json").write_text(
        '{"name": "a", "duration_s": 30, "episodes": [{"kind": "apnea", "onset_s": 5, "duration_s": 12}]}'
    )
    assert load_scenario_file(tmp_path / "a.yaml") == load_scenario_file(tmp_path / "a.json")


def test_cli_validate_reports_each_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("name: good\nduration_s: 30\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nduration_s: 30\nepisodes:\n  - {kind: seizure, onset_s: 1, duration_s: 3, limbs: []}\n")
    assert main(["sim", "validate", str(good), str(bad)]) == 2
    out, err = capsys.readouterr()
    assert "good.yaml: ok (good, 30 s, 0 episodes)" in out
    assert "bad.yaml: invalid scenario" in err
    assert "episodes[0].limbs: Tuple should have at least 1 item" in err
