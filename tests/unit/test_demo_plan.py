"""`icu demo`'s pure plan: beds and scenario mix, offsets, services and their environments,
the parsing of `icu up`'s output, and the errors for bad arguments."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from demo import DemoError
from demo.broker_memory import should_rotate
from demo.plan import (
    ALERT_BEDS,
    DEFAULT_MIX,
    BedPlan,
    DemoOptions,
    Infra,
    parse_bed_arg,
    parse_scenario_spec,
    parse_up_output,
    plan_beds,
    plan_services,
    topic_names,
    up_service,
)
from icu.cli import build_parser
from simulator.scenario import library_names, load_scenario

INFRA = Infra(bootstrap_servers="127.0.0.1:40001", database_url="postgresql://postgres@127.0.0.1:40002/icu",
              topic_prefix="icu")  # fmt: skip


def options(tmp_path: Path, beds: int = 8, **extra: object) -> DemoOptions:
    return DemoOptions(state_dir=tmp_path / "demo", beds=plan_beds(beds), **extra)  # type: ignore[arg-type]


def test_default_ward_is_the_issue_mix_of_library_scenarios() -> None:
    beds = plan_beds(8)
    assert [b.bed_id for b in beds] == [f"sim-{i:02d}" for i in range(1, 9)]
    names = [b.scenario for b in beds]
    # stable, pain, respiratory deterioration, apneas, a seizure, sepsis, nuisances
    assert {"stable", "pain", "respiratory-deterioration", "apnea", "seizure", "sepsis"} <= set(names)
    assert any(name.startswith("nuisance-") for name in names)
    assert set(names) <= set(library_names())
    assert set(names) >= ALERT_BEDS
    for bed in beds:  # every offset lies inside its scenario
        assert 0 <= bed.offset_s < load_scenario(bed.scenario).duration_s


def test_default_offsets_put_each_episode_within_the_first_minutes() -> None:
    for bed in plan_beds(len(DEFAULT_MIX)):
        episodes = load_scenario(bed.scenario).episodes
        if not episodes:
            continue
        # An episode is under way at the start or begins within 2 minutes of it.
        assert any(e.onset_s <= bed.offset_s + 120 and e.end_s > bed.offset_s for e in episodes), bed


def test_scenarios_cycle_over_beds_and_offsets_parse() -> None:
    beds = plan_beds(3, ["stable", "sepsis@1620.5"])
    assert [(b.scenario, b.offset_s) for b in beds] == [("stable", 0.0), ("sepsis", 1620.5), ("stable", 0.0)]
    assert [b.index for b in beds] == [0, 1, 2]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-such-scenario", "no scenario named"),
        ("stable@600", "past the scenario's end (600 s)"),
        ("stable@-5", "expected NAME or NAME@SECONDS"),
        ("stable@x", "expected NAME or NAME@SECONDS"),
    ],
)
def test_bad_scenarios_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(DemoError, match="--scenario") as raised:
        parse_scenario_spec(spec)
    assert message in str(raised.value)


@pytest.mark.parametrize("beds", [0, 33, -1])
def test_bed_count_is_bounded(beds: int) -> None:
    with pytest.raises(DemoError, match="--beds must be within 1-32"):
        plan_beds(beds)


def test_options_refuse_bad_values(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="--duration must be positive"):
        options(tmp_path, duration_s=0)
    with pytest.raises(DemoError, match="--port"):
        options(tmp_path, dashboard_port=70000)
    with pytest.raises(DemoError, match="--broker-memory"):
        options(tmp_path, broker_memory_mib=64)


def test_bed_argument_round_trips() -> None:
    bed = BedPlan(bed_id="sim-02", scenario="respiratory-deterioration", offset_s=240.0, index=1)
    assert parse_bed_arg(bed.arg(), 1) == bed
    with pytest.raises(DemoError, match="BED=SCENARIO"):
        parse_bed_arg("stable@0", 0)


def test_up_runs_on_free_ports_in_the_demo_state_folder(tmp_path: Path) -> None:
    opts = options(tmp_path)
    up = up_service(opts, database_url=None)
    assert up.argv == [sys.executable, "-m", "icu.cli", "up"]
    assert up.env["ICU_STATE_DIR"] == str(tmp_path / "demo" / "infra")
    assert up.env["ICU_BROKER_PORT"] == "0"
    assert up.env["ICU_POSTGRES_PORT"] == "0"
    assert "ICU_DATABASE_URL" not in up.env
    assert up.critical
    assert up.restarts == 0
    given = up_service(opts, database_url="postgresql://me@db/icu")
    assert given.env["ICU_DATABASE_URL"] == "postgresql://me@db/icu"


def test_services_order_env_and_readiness(tmp_path: Path) -> None:
    opts = options(tmp_path, beds=2)
    services = plan_services(opts, INFRA, whip_port=41000, alerts_web_port=41001, dashboard_port=41002,
                             whip_token="t" * 32)  # fmt: skip
    assert [s.name for s in services] == ["ingest", "infer", "alerts", "sink", "dashboard", "bedside"]
    by_name = {s.name: s for s in services}
    for service in services:
        assert service.env["ICU_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:40001"
        assert service.env["ICU_DATABASE_URL"] == INFRA.database_url
        assert service.env["ICU_BEDS"] == "sim-01,sim-02"
        assert service.ready.port is not None or service.ready.log_pattern is not None
    ingest = by_name["ingest"]
    assert ingest.argv[-5:] == ["whip", "--host", "127.0.0.1", "--port", "41000"]
    assert ingest.env["ICU_WHIP_TOKENS"] == "*:" + "t" * 32
    assert (ingest.env["ICU_INGEST_WIDTH"], ingest.env["ICU_INGEST_HEIGHT"]) == ("160", "120")
    assert ingest.env["ICU_WHIP_ICE_ADDRESSES"] == "127.0.0.1"
    assert by_name["dashboard"].env["ICU_DEMO"] == "1"
    assert by_name["dashboard"].ready.port == 41002
    assert by_name["alerts"].env["ICU_ALERTS_WEB_PORT"] == "41001"
    assert by_name["alerts"].env["ICU_ALERTS_DATA_DIR"] == str(tmp_path / "demo" / "alerts")
    bedside = by_name["bedside"]
    assert bedside.env["ICU_SIM_WHIP_TOKEN"] == "t" * 32
    assert "http://127.0.0.1:41000" in bedside.argv
    assert [bedside.argv[i + 1] for i, a in enumerate(bedside.argv) if a == "--bed"] == [
        "sim-01=stable@0",
        "sim-02=respiratory-deterioration@240",
    ]


def test_up_output_gives_the_addresses() -> None:
    text = (
        "icu-watch infrastructure is up.\n"
        "export ICU_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:40001\n"
        "export ICU_DATABASE_URL=postgresql://postgres@127.0.0.1:40002/icu\n"
        "export ICU_TOPIC_PREFIX=icu\n\nPress Ctrl-C to stop.\n"
    )
    assert parse_up_output(text, database_url=None, topic_prefix="icu") == INFRA
    # A URL of the user's own is printed redacted: the given one is used.
    given = parse_up_output(text.replace("postgres@", "postgres:***@"), database_url="postgresql://u:pw@h/d",
                            topic_prefix="icu")  # fmt: skip
    assert given.database_url == "postgresql://u:pw@h/d"
    with pytest.raises(DemoError, match="did not print"):
        parse_up_output("icu up: port in use\n", database_url=None, topic_prefix="icu")


def test_topic_list_covers_every_topic() -> None:
    names = topic_names("icu")
    assert "icu.frames" in names
    assert "icu.alerts" in names
    assert "icu.dead-letter" in names
    assert len(names) == len(set(names)) == 10


def test_rotation_threshold() -> None:
    assert not should_rotate(None, 1024)
    assert not should_rotate(1023.9, 1024)
    assert should_rotate(1024, 1024)


def test_cli_parses_demo_flags() -> None:
    args = build_parser().parse_args(["demo", "--beds", "2", "--scenario", "stable", "--scenario",
                                      "sepsis@1620", "--duration", "60", "--port", "0"])  # fmt: skip
    assert (args.beds, args.scenario, args.duration, args.port) == (2, ["stable", "sepsis@1620"], 60.0, 0)
    assert args.broker_memory == 1024
    assert args.size == "160x120"
    assert not args.keep_data


def test_cli_refuses_bad_arguments_before_starting_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from icu.cli import main

    assert main(["demo", "--beds", "0", "--state-dir", str(tmp_path)]) == 2
    assert "--beds must be within 1-32" in capsys.readouterr().err
    assert main(["demo", "--scenario", "nope", "--state-dir", str(tmp_path)]) == 2
    assert "no scenario named 'nope'" in capsys.readouterr().err
    assert main(["demo", "--size", "15x9", "--state-dir", str(tmp_path)]) == 2
    assert "--size" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # nothing was started or created
