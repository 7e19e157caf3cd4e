"""`icu demo`: its flags and handler (imports the demo lazily, so `icu --help` stays instant)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from icu.cli_common import env_help

DESCRIPTION = """\
Runs the whole pipeline on this machine: `icu up` (embedded broker and database, own state folder
<state dir>/demo), a simulated ward whose WebRTC cameras publish to the WHIP endpoint (`icu ingest
whip`) and whose monitors publish vitals, `icu infer`, `icu alerts`, `icu sink` and `icu dashboard`
(ICU_DEMO=1: no login). Prints progress while starting, then the dashboard URL and the topics;
restarts a service that dies (up to 3 times, with the tail of its log); Ctrl-C / SIGTERM stops
everything in reverse order. Logs: <state dir>/demo/logs/*.log. The embedded broker keeps every
record in RAM: past --broker-memory MiB the frames topic is deleted and created again."""


def add_demo_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the whole pipeline with a simulated ward, up to the dashboard (Ctrl-C stops)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--beds", type=int, default=8, help="simulated beds, 1-32 (default 8)")
    demo.add_argument(
        "--scenario",
        action="append",
        metavar="NAME[@SECONDS]",
        help="scenario per bed, cycled; @SECONDS starts it that far in (library name or file; repeatable; "
        "default a mixed ward: see `icu sim scenarios` and README)",
    )
    demo.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--port", type=int, default=8501, help="dashboard port on 127.0.0.1, 0 = any free (default 8501)")
    demo.add_argument(
        "--state-dir",
        type=Path,
        help=env_help(
            "the demo keeps its logs and database in STATE_DIR/demo", "ICU_STATE_DIR", "~/.local/state/icu-watch"
        ),
    )
    demo.add_argument(
        "--broker-memory",
        type=int,
        default=1024,
        metavar="MIB",
        help="rotate the frames topic when the embedded broker's RSS passes this (default 1024)",
    )
    demo.add_argument("--size", default="160x120", help="camera frame size WIDTHxHEIGHT (default 160x120)")
    demo.add_argument(
        "--keep-data", action="store_true", help="keep the previous run's database (default: start empty)"
    )
    demo.set_defaults(handler=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    from demo import DemoError
    from demo.plan import DemoOptions, plan_beds
    from demo.supervisor import Demo
    from icu.settings import configure_logging, load_settings
    from infra.settings import UpSettings
    from simulator.settings import parse_size

    settings = load_settings(UpSettings, state_dir=args.state_dir)
    configure_logging(settings.log_level)
    try:
        try:
            size = parse_size(args.size)
        except ValueError as exc:
            raise DemoError(f"--size: {exc}") from None
        options = DemoOptions(
            state_dir=Path(settings.state_dir).expanduser() / "demo",
            beds=plan_beds(args.beds, args.scenario),
            duration_s=args.duration,
            dashboard_port=args.port,
            frame_size=size,
            broker_memory_mib=args.broker_memory,
            keep_data=args.keep_data,
            topic_prefix=settings.topic_prefix,
        )
    except DemoError as exc:
        sys.stderr.write(f"icu demo: {exc}\n")
        return 2
    database_url = os.environ.get("ICU_DATABASE_URL") or None
    result = Demo(options, sys.stdout, database_url=database_url).install_signals().run()
    return result.exit_code
