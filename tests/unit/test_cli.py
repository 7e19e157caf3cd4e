import pytest

from icu.cli import build_parser, main


@pytest.mark.parametrize(
    ("argv", "variables"),
    [
        (["up"], ["ICU_BROKER_PORT", "ICU_POSTGRES_PORT", "ICU_STATE_DIR", "ICU_DATABASE_URL", "ICU_TOPIC_PREFIX"]),
        (["topics", "create"], ["ICU_KAFKA_BOOTSTRAP_SERVERS", "ICU_TOPIC_PARTITIONS"]),
        (["db", "migrate"], ["ICU_DATABASE_URL", "ICU_DATABASE_TIMESERIES"]),
    ],
)
def test_help_names_the_environment_variable_behind_each_flag(capsys, argv, variables):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*argv, "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for variable in variables:
        assert variable in text


def test_schemas_check_detects_drift(tmp_path, capsys):
    assert main(["schemas", "export", "--out", str(tmp_path)]) == 0
    assert main(["schemas", "export", "--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "vitals.v1.schema.json").write_text("{}")
    assert main(["schemas", "export", "--check", "--out", str(tmp_path)]) == 1
    assert "vitals.v1.schema.json" in capsys.readouterr().err
