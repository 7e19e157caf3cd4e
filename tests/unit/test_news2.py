"""NEWS2 (RCP 2017): every band of every parameter on both sides of each boundary, risk, validation, CLI."""

import json
import math
from datetime import UTC, datetime

import pytest

from alerts.news2 import PARAMETERS, News2Error, score_news2, score_vitals
from icu.cli import main
from icu.contracts import Consciousness, Vitals

NORMAL = {"rr": 16, "spo2": 98, "on_oxygen": False, "sbp": 120, "hr": 70, "consciousness": "A", "temp_c": 37.0}
"""All seven parameters, each scoring 0."""


def _points(parameter: str, **vitals: object) -> int:
    return score_news2(**vitals).parameters[parameter]


# --- bands: (value, points), both sides of every printed limit --------------------------------


@pytest.mark.parametrize(
    ("rr", "points"),
    [
        (0, 3), (8, 3),
        (9, 1), (11, 1),
        (12, 0), (20, 0),
        (21, 2), (24, 2),
        (25, 3), (100, 3),
        # Between printed limits: the band above the limit passed.
        (8.5, 1), (11.5, 0), (20.5, 2), (24.5, 3),
    ],
)  # fmt: skip
def test_respiration_rate_bands(rr, points):
    assert _points("respiration_rate", rr=rr) == points


@pytest.mark.parametrize(
    ("spo2", "points"),
    [
        (0, 3), (91, 3),
        (92, 2), (93, 2),
        (94, 1), (95, 1),
        (96, 0), (100, 0),
        (91.5, 2), (93.5, 1), (95.5, 0),
    ],
)  # fmt: skip
@pytest.mark.parametrize("on_oxygen", [False, True, None])
def test_spo2_scale_1_bands_ignore_oxygen(spo2, points, on_oxygen):
    assert _points("spo2", spo2=spo2, spo2_scale=1, on_oxygen=on_oxygen) == points


@pytest.mark.parametrize(
    ("spo2", "on_air", "on_oxygen"),
    [
        (0, 3, 3), (83, 3, 3),
        (84, 2, 2), (85, 2, 2),
        (86, 1, 1), (87, 1, 1),
        (88, 0, 0), (92, 0, 0),
        # Above the 88-92% target: nothing on air, rising with saturation on oxygen.
        (93, 0, 1), (94, 0, 1),
        (95, 0, 2), (96, 0, 2),
        (97, 0, 3), (100, 0, 3),
        (83.5, 2, 2), (87.5, 0, 0), (92.5, 0, 1), (94.5, 0, 2), (96.5, 0, 3),
    ],
)  # fmt: skip
def test_spo2_scale_2_bands_on_air_and_on_oxygen(spo2, on_air, on_oxygen):
    assert _points("spo2", spo2=spo2, spo2_scale=2, on_oxygen=False) == on_air
    assert _points("spo2", spo2=spo2, spo2_scale=2, on_oxygen=True) == on_oxygen


@pytest.mark.parametrize("spo2", [0, 83, 87, 88, 92])
def test_spo2_scale_2_at_or_below_target_needs_no_oxygen_status(spo2):
    expected = _points("spo2", spo2=spo2, spo2_scale=2, on_oxygen=False)
    assert _points("spo2", spo2=spo2, spo2_scale=2) == expected


@pytest.mark.parametrize(("on_oxygen", "points"), [(False, 0), (True, 2)])
def test_air_or_oxygen(on_oxygen, points):
    assert _points("air_or_oxygen", on_oxygen=on_oxygen) == points


@pytest.mark.parametrize(
    ("sbp", "points"),
    [
        (0, 3), (90, 3),
        (91, 2), (100, 2),
        (101, 1), (110, 1),
        (111, 0), (219, 0),
        (220, 3), (300, 3),
        (90.5, 2), (100.5, 1), (110.5, 0), (219.5, 3),
    ],
)  # fmt: skip
def test_systolic_bp_bands(sbp, points):
    assert _points("systolic_bp", sbp=sbp) == points


@pytest.mark.parametrize(
    ("hr", "points"),
    [
        (0, 3), (40, 3),
        (41, 1), (50, 1),
        (51, 0), (90, 0),
        (91, 1), (110, 1),
        (111, 2), (130, 2),
        (131, 3), (300, 3),
        (40.5, 1), (50.5, 0), (90.5, 1), (110.5, 2), (130.5, 3),
    ],
)  # fmt: skip
def test_pulse_bands(hr, points):
    assert _points("pulse", hr=hr) == points


@pytest.mark.parametrize(
    ("consciousness", "points"),
    [
        ("A", 0), ("a", 0), (Consciousness.ALERT, 0),
        ("C", 3), ("c", 3), (Consciousness.NEW_CONFUSION, 3),
        ("V", 3), ("P", 3), ("U", 3), (" u ", 3), (Consciousness.UNRESPONSIVE, 3),
    ],
)  # fmt: skip
def test_consciousness_acvpu(consciousness, points):
    assert _points("consciousness", consciousness=consciousness) == points


@pytest.mark.parametrize(
    ("temp_c", "points"),
    [
        (20.0, 3), (35.0, 3),
        (35.1, 1), (36.0, 1),
        (36.1, 0), (38.0, 0),
        (38.1, 1), (39.0, 1),
        (39.1, 2), (45.0, 2),
        # Between the one-decimal limits: the band above the limit passed.
        (35.05, 1), (36.05, 0), (38.05, 1), (39.05, 2),
    ],
)  # fmt: skip
def test_temperature_bands(temp_c, points):
    assert _points("temperature", temp_c=temp_c) == points


# --- aggregate, risk, completeness -------------------------------------------------------------


def test_all_normal_is_complete_low_zero():
    result = score_news2(**NORMAL)
    assert result.score == 0
    assert result.risk == "low"
    assert result.complete
    assert result.red_parameter is None
    assert list(result.parameters) == list(PARAMETERS)
    assert result.to_dict() == {
        "score": 0,
        "risk": "low",
        "parameters": dict.fromkeys(PARAMETERS, 0),
        "complete": True,
        "red_parameters": [],
    }


@pytest.mark.parametrize(
    ("changes", "score", "risk"),
    [
        ({"hr": 95}, 1, "low"),                                       # pulse 1
        ({"hr": 95, "temp_c": 39.5, "spo2": 95}, 4, "low"),           # 1 + 2 + 1
        ({"rr": 22, "temp_c": 39.5, "spo2": 95}, 5, "medium"),        # 2 + 2 + 1
        ({"rr": 22, "on_oxygen": True, "hr": 115}, 6, "medium"),      # 2 + 2 + 2
        ({"rr": 22, "on_oxygen": True, "hr": 115, "spo2": 95}, 7, "high"),
        ({"rr": 26}, 3, "low-medium"),                                # red score alone
        ({"consciousness": "C"}, 3, "low-medium"),                    # new confusion is red
        ({"rr": 26, "hr": 95}, 4, "low-medium"),
        ({"rr": 26, "on_oxygen": True}, 5, "medium"),                 # the aggregate band wins over red
        ({"rr": 26, "spo2": 90, "hr": 35}, 9, "high"),
        ({"rr": 30, "spo2": 80, "on_oxygen": True, "sbp": 80, "hr": 150, "consciousness": "U", "temp_c": 34.0}, 20,
         "high"),                                                     # the maximum
    ],
)  # fmt: skip
def test_aggregate_and_risk(changes, score, risk):
    result = score_news2(**{**NORMAL, **changes})
    assert (result.score, result.risk) == (score, risk)
    assert result.complete


def test_red_parameters_in_chart_order():
    result = score_news2(**{**NORMAL, "temp_c": 34.0, "rr": 6})
    assert result.red_parameters == ("respiration_rate", "temperature")
    assert result.red_parameter == "respiration_rate"
    assert result.to_dict()["red_parameters"] == ["respiration_rate", "temperature"]


def test_incomplete_scores_only_what_is_given():
    result = score_news2(rr=26, hr=95)
    assert result.parameters == {"respiration_rate": 3, "pulse": 1}
    assert (result.score, result.risk, result.complete) == (4, "low-medium", False)


def test_nothing_given_scores_zero_incomplete():
    result = score_news2()
    assert result.to_dict() == {"score": 0, "risk": "low", "parameters": {}, "complete": False, "red_parameters": []}


@pytest.mark.parametrize("missing", sorted(NORMAL))
def test_any_one_missing_parameter_makes_it_incomplete(missing):
    vitals = {name: value for name, value in NORMAL.items() if name != missing}
    result = score_news2(**vitals)
    assert not result.complete
    assert len(result.parameters) == 6


def test_result_is_frozen():
    result = score_news2(rr=16)
    with pytest.raises(AttributeError):
        result.score = 5
    with pytest.raises(TypeError):
        result.parameters["respiration_rate"] = 3


def test_score_vitals_uses_the_contract_fields():
    vitals = Vitals(
        bed_id="icu1-01",
        ts=datetime(2026, 1, 1, tzinfo=UTC),
        source="sim",
        rr=26,
        spo2=95,
        spo2_scale=2,
        on_oxygen=True,
        hr=70,
        consciousness=Consciousness.ALERT,
    )
    result = score_vitals(vitals)
    assert result.parameters == {"respiration_rate": 3, "spo2": 2, "air_or_oxygen": 2, "pulse": 0, "consciousness": 0}
    assert (result.score, result.risk, result.complete) == (7, "high", False)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("rr", -1, "respiration rate must be within 0-100 breaths/min"),
        ("rr", 101, "respiration rate must be within 0-100 breaths/min"),
        ("rr", math.nan, "respiration rate must be a finite number"),
        ("rr", math.inf, "respiration rate must be a finite number"),
        ("rr", "16", "respiration rate must be a number"),
        ("rr", True, "respiration rate must be a number"),
        ("spo2", -0.5, "SpO2 must be within 0-100 %"),
        ("spo2", 100.5, "SpO2 must be within 0-100 %"),
        ("spo2", -math.inf, "SpO2 must be a finite number"),
        ("sbp", -10, "systolic blood pressure must be within 0-300 mmHg"),
        ("sbp", 301, "systolic blood pressure must be within 0-300 mmHg"),
        ("hr", -1, "pulse must be within 0-300 beats/min"),
        ("hr", 301, "pulse must be within 0-300 beats/min"),
        ("hr", math.nan, "pulse must be a finite number"),
        ("temp_c", 19.9, "temperature must be within 20-45 degrees C"),
        ("temp_c", 45.1, "temperature must be within 20-45 degrees C"),
        ("temp_c", -37.0, "temperature must be within 20-45 degrees C"),
        ("temp_c", math.inf, "temperature must be a finite number"),
        ("consciousness", "X", "consciousness must be one of A, C, V, P, U"),
        ("consciousness", "", "consciousness must be one of A, C, V, P, U"),
        ("consciousness", 1, "consciousness must be one of A, C, V, P, U"),
        ("spo2_scale", 3, "SpO2 scale must be 1 or 2"),
        ("spo2_scale", 0, "SpO2 scale must be 1 or 2"),
        ("on_oxygen", "yes", "on_oxygen must be true, false or absent"),
    ],
)
def test_invalid_values_name_the_parameter_and_range(argument, value, message):
    with pytest.raises(News2Error, match=message) as raised:
        score_news2(**{argument: value})
    assert raised.value.argument == argument
    assert str(raised.value).startswith(f"{argument}: ")
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("spo2", [93, 92.5, 100])
def test_spo2_scale_2_above_target_needs_oxygen_status(spo2):
    with pytest.raises(News2Error, match="scale 2 scores by air or oxygen") as raised:
        score_news2(spo2=spo2, spo2_scale=2)
    assert raised.value.argument == "on_oxygen"


@pytest.mark.parametrize(
    ("argument", "value", "points"),
    [
        ("rr", 0, 3), ("rr", 100, 3),
        ("spo2", 0, 3), ("spo2", 100, 0),
        ("sbp", 0, 3), ("sbp", 300, 3),
        ("hr", 0, 3), ("hr", 300, 3),
        ("temp_c", 20, 3), ("temp_c", 45, 2),
    ],
)  # fmt: skip
def test_range_limits_are_accepted(argument, value, points):
    assert score_news2(**{argument: value}).score == points


# --- CLI ----------------------------------------------------------------------------------------

FULL_ARGV = ["news2", "--rr", "16", "--spo2", "98", "--air", "--sbp", "120", "--hr", "70", "--consciousness", "A",
             "--temp", "37"]  # fmt: skip


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse's own errors
        code = int(exited.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prints_the_score_as_json(capsys):
    code, out, err = _run(capsys, FULL_ARGV)
    assert code == 0
    assert err == ""
    assert json.loads(out) == {
        "score": 0,
        "risk": "low",
        "parameters": dict.fromkeys(PARAMETERS, 0),
        "complete": True,
        "red_parameters": [],
    }


@pytest.mark.parametrize(
    ("argv", "score", "risk", "parameters"),
    [
        (["--rr", "26"], 3, "low-medium", {"respiration_rate": 3}),
        (["--consciousness", "c"], 3, "low-medium", {"consciousness": 3}),
        (["--oxygen", "--scale", "2", "--spo2", "97"], 5, "medium", {"spo2": 3, "air_or_oxygen": 2}),
        (["--air", "--scale", "2", "--spo2", "97"], 0, "low", {"spo2": 0, "air_or_oxygen": 0}),
        (["--scale", "2", "--spo2", "90"], 0, "low", {"spo2": 0}),
        (["--rr", "24", "--hr", "115", "--oxygen", "--temp", "35.05"], 7, "high",
         {"respiration_rate": 2, "air_or_oxygen": 2, "pulse": 2, "temperature": 1}),
        ([], 0, "low", {}),
    ],
)  # fmt: skip
def test_cli_scores_what_is_given(capsys, argv, score, risk, parameters):
    code, out, _ = _run(capsys, ["news2", *argv])
    assert code == 0
    result = json.loads(out)
    assert (result["score"], result["risk"], result["parameters"]) == (score, risk, parameters)
    assert result["complete"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rr", "-3"], "--rr: respiration rate must be within 0-100 breaths/min, got -3"),
        (["--spo2", "101"], "--spo2: SpO2 must be within 0-100 %, got 101"),
        (["--sbp", "400"], "--sbp: systolic blood pressure must be within 0-300 mmHg"),
        (["--hr", "350"], "--hr: pulse must be within 0-300 beats/min"),
        (["--temp", "50"], "--temp: temperature must be within 20-45 degrees C, got 50"),
        (["--rr", "nan"], "--rr: respiration rate must be a finite number"),
        (["--hr", "inf"], "--hr: pulse must be a finite number"),
        (["--consciousness", "Z"], "--consciousness: consciousness must be one of A, C, V, P, U"),
        (["--scale", "2", "--spo2", "95"], "--oxygen/--air: SpO2 95% on scale 2 scores by air or oxygen"),
        # argparse's own checks
        (["--rr", "fast"], "argument --rr: invalid float value: 'fast'"),
        (["--scale", "3"], "argument --scale: invalid choice: 3"),
        (["--scale", "two"], "argument --scale: invalid int value: 'two'"),
        (["--oxygen", "--air"], "argument --air: not allowed with argument --oxygen"),
    ],
)
def test_cli_rejects_bad_values_with_exit_code_2(capsys, argv, message):
    code, out, err = _run(capsys, ["news2", *argv])
    assert code == 2
    assert out == ""
    assert message in err
    assert "icu news2" in err


def test_cli_help_describes_news2(capsys):
    code, out, _ = _run(capsys, ["news2", "--help"])
    text = " ".join(out.split())
    assert code == 0
    assert "Royal College of Physicians, 2017" in text
    assert '"complete": false' in text
    for flag in ("--rr", "--spo2", "--scale", "--oxygen", "--air", "--sbp", "--hr", "--consciousness", "--temp"):
        assert flag in text
