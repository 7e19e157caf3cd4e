"""The `icu` command: one subcommand per service.

Every flag falls back to an ``ICU_*`` environment variable (named in ``--help``); flags win.
Subcommands import their service lazily so ``icu --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from icu import __version__
from icu.settings import ConfigError, configure_logging, load_settings
from infra.settings import DatabaseAdminSettings, TopicsAdminSettings, UpSettings

log = logging.getLogger("icu")

Handler = Callable[[argparse.Namespace], int]


def _env(flag_help: str, variable: str, default: object | None = None) -> str:
    default_text = f", default {default}" if default is not None else ""
    return f"{flag_help} (env {variable}{default_text})"


def _add_kafka_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        dest="kafka_bootstrap_servers",
        help=_env("Kafka host:port list", "ICU_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    parser.add_argument(
        "--topic-prefix", dest="topic_prefix", help=_env("topic name prefix", "ICU_TOPIC_PREFIX", "icu")
    )


def _add_database_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", dest="database_url", help=_env("PostgreSQL URL", "ICU_DATABASE_URL"))
    parser.add_argument(
        "--timeseries",
        dest="database_timeseries",
        choices=["auto", "timescale", "plain"],
        help=_env("time-series storage", "ICU_DATABASE_TIMESERIES", "auto"),
    )


# --- handlers ------------------------------------------------------------------------------


def _cmd_up(args: argparse.Namespace) -> int:
    from icu.kafka import GracefulStop
    from infra.up import run_up

    settings = load_settings(
        UpSettings,
        broker_port=args.broker_port,
        postgres_port=args.postgres_port,
        state_dir=args.state_dir,
        topic_prefix=args.topic_prefix,
        database_url=args.database_url,
        database_timeseries=args.database_timeseries,
    )
    configure_logging(settings.log_level)
    return run_up(settings, GracefulStop().install())


def _topic_settings(args: argparse.Namespace) -> TopicsAdminSettings:
    return load_settings(
        TopicsAdminSettings,
        kafka_bootstrap_servers=args.kafka_bootstrap_servers,
        topic_prefix=args.topic_prefix,
        topic_partitions=getattr(args, "partitions", None),
    )


def _cmd_topics_create(args: argparse.Namespace) -> int:
    from infra.topics import create_topics

    settings = _topic_settings(args)
    configure_logging(settings.log_level)
    for report in create_topics(settings):
        state = "created" if report.created else "exists"
        print(f"{report.name}\t{report.partitions} partitions\t{state}")
    return 0


def _cmd_topics_list(args: argparse.Namespace) -> int:
    from infra.topics import list_topics

    settings = _topic_settings(args)
    configure_logging(settings.log_level)
    topics = list_topics(settings, all_topics=args.all)
    if not topics:
        print(f"no topics with prefix '{settings.topic_prefix}.' (run `icu topics create`)", file=sys.stderr)
        return 1
    for name, partitions in topics.items():
        print(f"{name}\t{partitions} partitions")
    return 0


def _database_settings(args: argparse.Namespace) -> DatabaseAdminSettings:
    return load_settings(
        DatabaseAdminSettings, database_url=args.database_url, database_timeseries=args.database_timeseries
    )


def _cmd_db_migrate(args: argparse.Namespace) -> int:
    from infra.db.migrate import migrate

    settings = _database_settings(args)
    configure_logging(settings.log_level)
    # Schema only: retention (which drops old partitions) runs in `icu db maintain` / `icu up`.
    report = migrate(settings.require_database_url(), preference=settings.database_timeseries)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in report.applied) or "none pending"
    print(f"schema version {report.current_version} ({report.backend}); applied: {names}")
    return 0


def _cmd_db_maintain(args: argparse.Namespace) -> int:
    from infra.db.maintenance import prepare_database

    settings = _database_settings(args)
    configure_logging(settings.log_level)
    _, report = prepare_database(
        settings.require_database_url(),
        preference=settings.database_timeseries,
        retention_days=settings.database_retention_days,
    )
    print(
        f"partitions created: {len(report.created)}, dropped: {len(report.dropped)}, "
        f"rows moved from default partitions: {report.rows_moved}"
    )
    return 0


def _cmd_schemas_export(args: argparse.Namespace) -> int:
    from icu.contracts import dump_schema, json_schemas

    out: Path = args.out
    schemas = {name: dump_schema(schema) for name, schema in json_schemas().items()}
    if args.check:
        stale = [
            name for name, text in schemas.items() if not (out / name).is_file() or (out / name).read_text() != text
        ]
        extra = sorted(p.name for p in out.glob("*.schema.json") if p.name not in schemas) if out.is_dir() else []
        if stale or extra:
            print(
                f"schemas in {out} are out of date: {', '.join(stale + extra)}; run `icu schemas export`",
                file=sys.stderr,
            )
            return 1
        print(f"{len(schemas)} schemas in {out} are current")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in schemas.items():
        (out / name).write_text(text)
    print(f"wrote {len(schemas)} schemas to {out}")
    return 0


def _cmd_bench_db(args: argparse.Namespace) -> int:
    from infra.bench import bench_db

    settings = _database_settings(args)
    configure_logging(settings.log_level)
    result = bench_db(settings.require_database_url(), rows=args.rows, batch=args.batch, repeats=args.repeats)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_bench_broker(args: argparse.Namespace) -> int:
    from infra.bench import bench_broker

    configure_logging("WARNING")
    print(json.dumps(bench_broker(repeats=args.repeats), indent=2))
    return 0


# --- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icu",
        description="icu-watch: ICU remote-monitoring streaming pipeline. Not a medical device; "
        "the video model is trained on synthetic data and is not clinically validated.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"icu-watch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = commands.add_parser(
        "up",
        help="run the embedded Kafka broker and PostgreSQL in the foreground",
        description="Start the embedded Kafka-protocol broker (Tansu, in memory, 127.0.0.1) and a PostgreSQL "
        "(ICU_DATABASE_URL, or an embedded one kept under the state folder), migrate the schema, create the "
        "topics, print the env lines other commands need, and run until Ctrl-C / SIGTERM.",
    )
    up.add_argument(
        "--broker-port",
        type=int,
        help=_env("broker port on 127.0.0.1, 0 = any free", "ICU_BROKER_PORT", 9092),
    )
    up.add_argument(
        "--postgres-port",
        type=int,
        help=_env("embedded PostgreSQL port, 0 = any free", "ICU_POSTGRES_PORT", 5433),
    )
    up.add_argument(
        "--state-dir",
        type=Path,
        help=_env("data folder for the embedded database", "ICU_STATE_DIR", "~/.local/state/icu-watch"),
    )
    up.add_argument("--topic-prefix", dest="topic_prefix", help=_env("topic name prefix", "ICU_TOPIC_PREFIX", "icu"))
    _add_database_flags(up)
    up.set_defaults(handler=_cmd_up)

    topics = commands.add_parser("topics", help="create or list the Kafka topics").add_subparsers(
        dest="topics_command", metavar="ACTION", required=True
    )
    create = topics.add_parser(
        "create",
        help="create every topic (idempotent)",
        description="Create every icu-watch topic with explicit partitions and "
        "retention. Existing topics are left unchanged.",
    )
    _add_kafka_flags(create)
    create.add_argument(
        "--partitions", type=int, help=_env("partitions per bed-keyed topic", "ICU_TOPIC_PARTITIONS", 8)
    )
    create.set_defaults(handler=_cmd_topics_create)
    listing = topics.add_parser("list", help="list this deployment's topics with partition counts")
    _add_kafka_flags(listing)
    listing.add_argument("--all", action="store_true", help="list every topic on the cluster, not just this prefix")
    listing.set_defaults(handler=_cmd_topics_list)

    db = commands.add_parser("db", help="database migrations and maintenance").add_subparsers(
        dest="db_command", metavar="ACTION", required=True
    )
    db_migrate = db.add_parser("migrate", help="apply pending schema migrations (safe to repeat; never deletes data)")
    _add_database_flags(db_migrate)
    db_migrate.set_defaults(handler=_cmd_db_migrate)
    db_maintain = db.add_parser(
        "maintain",
        help="one pass: create partitions, drop data older than ICU_DATABASE_RETENTION_DAYS, refresh rollups",
    )
    _add_database_flags(db_maintain)
    db_maintain.set_defaults(handler=_cmd_db_maintain)

    schemas = commands.add_parser("schemas", help="JSON Schema files for the topics").add_subparsers(
        dest="schemas_command", metavar="ACTION", required=True
    )
    export = schemas.add_parser("export", help="write one JSON Schema per JSON topic (and frame headers)")
    export.add_argument("--out", type=Path, default=Path("schemas"), help="folder (default ./schemas)")
    export.add_argument("--check", action="store_true", help="fail if the folder's files differ from the code")
    export.set_defaults(handler=_cmd_schemas_export)

    bench = commands.add_parser("bench", help="benchmarks that print figures").add_subparsers(
        dest="bench_command", metavar="STAGE", required=True
    )
    bench_db = bench.add_parser(
        "db",
        help="COPY rate into vitals: raw COPY vs the project's write path",
        description="Creates a scratch database next to ICU_DATABASE_URL's, migrates it, measures rows/s "
        "of raw COPY and of the write path (staging COPY + idempotent insert), and drops it.",
    )
    _add_database_flags(bench_db)
    bench_db.add_argument("--rows", type=int, default=200_000, help="rows per measurement (default 200000)")
    bench_db.add_argument("--batch", type=int, default=5_000, help="rows per write-path batch (default 5000)")
    bench_db.add_argument("--repeats", type=int, default=5, help="measurements to take the median of (default 5)")
    bench_db.set_defaults(handler=_cmd_bench_db)
    bench_broker = bench.add_parser("broker", help="embedded broker start time and topic creation time")
    bench_broker.add_argument("--repeats", type=int, default=5, help="runs to take the median of (default 5)")
    bench_broker.set_defaults(handler=_cmd_bench_broker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    from infra.errors import InfraError

    try:
        return handler(args)
    except (ConfigError, InfraError) as exc:
        print(f"icu {args.command}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
