"""Flag helpers shared by every service's part of the `icu` command."""

from __future__ import annotations

import argparse


def env_help(flag_help: str, variable: str, default: object | None = None) -> str:
    default_text = f", default {default}" if default is not None else ""
    return f"{flag_help} (env {variable}{default_text})"


def add_kafka_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        dest="kafka_bootstrap_servers",
        help=env_help("Kafka host:port list", "ICU_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    parser.add_argument(
        "--topic-prefix", dest="topic_prefix", help=env_help("topic name prefix", "ICU_TOPIC_PREFIX", "icu")
    )
