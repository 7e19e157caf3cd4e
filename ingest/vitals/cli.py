"""`icu ingest vitals`: the command line of the vitals ingest.

:func:`add_vitals_command` mounts the subcommand on any argparse subparsers; its handler
builds :class:`VitalsIngestSettings` once (flags override ``ICU_*`` variables), configures
logging, routes SIGTERM/SIGINT to a clean stop, and runs the service on an asyncio loop.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from icu.cli_common import env_help
from icu.settings import configure_logging, load_settings
from ingest.vitals.settings import VitalsIngestSettings

log = logging.getLogger("icu.ingest.vitals")

DESCRIPTION = """\
Receive vital signs from bedside monitors and publish them to <prefix>.vitals.

HL7 v2 over MLLP: ORU^R01 messages, one per MLLP block (<VT> message <FS><CR>). OBX
observations coded in MDC (IEEE 11073-10101) or LOINC are mapped to heart rate, respiration
rate, SpO2, NIBP systolic/diastolic/mean, temperature and supplemental oxygen; the bed comes
from PV1-3 (point of care-room-bed), the time from OBX-14, else OBR-7, else MSH-7 (no UTC
offset = UTC). Every message is answered with an ACK:
  AA  accepted, and stored in Kafka
  AE  content error (impossible value, unknown bed or unit, timestamp in the future, no
      supported observation): fix the message; it is on <prefix>.dead-letter with the reason
  AR  not an ORU^R01, unparseable, too large, or Kafka unavailable: resend (after fixing)

JSON over HTTP: POST /vitals with one vitals object or an array of them (the vitals
contract, see schemas/). 202 = all stored; 422 = some rejected (the valid ones were stored;
the body lists each rejected item's reason); 400 = not JSON; 413 = too large; 401 = missing
or wrong bearer token; 503 = Kafka unavailable, resend. GET /healthz answers 200.
"""

EPILOG = """\
environment (flags win):
  ICU_KAFKA_BOOTSTRAP_SERVERS, ICU_TOPIC_PREFIX   where to publish
  ICU_BEDS                      beds accepted, comma-separated (empty = any well-formed id)
  ICU_VITALS_MLLP_HOST/_PORT    MLLP listener (default 127.0.0.1:2575; port 0 = any free)
  ICU_VITALS_HTTP_HOST/_PORT    HTTP listener (default 127.0.0.1:8082; port 0 = any free)
  ICU_VITALS_MLLP_ENABLED, ICU_VITALS_HTTP_ENABLED   switch a listener off (default on)
  ICU_VITALS_HTTP_TOKEN         bearer token for POST /vitals (required off loopback
                                outside demo mode; never pass it as a flag)
  ICU_VITALS_MAX_FUTURE_SKEW_S  reject readings timed further ahead (default 300)
  ICU_VITALS_MAX_MESSAGE_BYTES  largest HL7 message / JSON body (default 1048576)
  ICU_VITALS_ACK_TIMEOUT_S      wait this long for Kafka before AR / 503 (default 15)
Stops cleanly on Ctrl-C / SIGTERM (twice to force).
"""


def add_vitals_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``vitals`` subcommand (handler in ``handler``) to ``subparsers``."""
    parser = subparsers.add_parser(
        "vitals",
        help="receive vitals: HL7 v2 ORU^R01 over MLLP and JSON over HTTP -> <prefix>.vitals",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--mllp-host",
        dest="vitals_mllp_host",
        metavar="HOST",
        help=env_help("MLLP bind address", "ICU_VITALS_MLLP_HOST", "127.0.0.1"),
    )
    parser.add_argument(
        "--mllp-port",
        dest="vitals_mllp_port",
        type=int,
        metavar="PORT",
        help=env_help("MLLP port, 0 = any free", "ICU_VITALS_MLLP_PORT", 2575),
    )
    parser.add_argument(
        "--http-host",
        dest="vitals_http_host",
        metavar="HOST",
        help=env_help("HTTP bind address", "ICU_VITALS_HTTP_HOST", "127.0.0.1"),
    )
    parser.add_argument(
        "--http-port",
        dest="vitals_http_port",
        type=int,
        metavar="PORT",
        help=env_help("HTTP port, 0 = any free", "ICU_VITALS_HTTP_PORT", 8082),
    )
    parser.add_argument(
        "--kafka-bootstrap-servers",
        "--bootstrap-servers",
        dest="kafka_bootstrap_servers",
        metavar="HOST:PORT,...",
        help=env_help("Kafka host:port list", "ICU_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    parser.add_argument(
        "--topic-prefix",
        dest="topic_prefix",
        metavar="PREFIX",
        help=env_help("topic name prefix", "ICU_TOPIC_PREFIX", "icu"),
    )
    parser.add_argument(
        "--beds", dest="beds", metavar="BED,...", help=env_help("accepted bed ids, comma-separated", "ICU_BEDS", "any")
    )
    parser.set_defaults(handler=run_vitals_command)


def settings_from_args(args: argparse.Namespace) -> VitalsIngestSettings:
    """Settings from the environment with the flags given on the command line on top."""
    flags = (
        "vitals_mllp_host",
        "vitals_mllp_port",
        "vitals_http_host",
        "vitals_http_port",
        "kafka_bootstrap_servers",
        "topic_prefix",
        "beds",
    )
    return load_settings(VitalsIngestSettings, **{name: getattr(args, name, None) for name in flags})


def run_vitals_command(args: argparse.Namespace) -> int:
    """Run the vitals ingest until SIGTERM/SIGINT. Configuration errors raise ConfigError."""
    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    return asyncio.run(serve(settings))


async def serve(settings: VitalsIngestSettings) -> int:
    """Run the service on the current loop until SIGTERM or SIGINT; a second signal forces."""
    from infra.observability import start_observability
    from ingest.vitals.service import VitalsIngest, observe

    service = VitalsIngest(settings)
    observability = start_observability(settings, "vitals-ingest")
    heartbeat = observe(observability, service)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal(signum: signal.Signals) -> None:
        log.info("received %s; shutting down (again to force)", signum.name)
        stop.set()
        for sig in signals:
            # Back to the default action, so a second signal ends the process at once.
            loop.remove_signal_handler(sig)

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        stats = await service.run(stop)
    finally:
        heartbeat.cancel()
        observability.close()
        for sig in signals:
            loop.remove_signal_handler(sig)
    log.info(
        "vitals ingest done: %d HL7 messages and %d JSON items accepted, %d + %d rejected",
        stats.hl7_accepted,
        stats.json_accepted,
        stats.hl7_rejected,
        stats.json_rejected,
    )
    return 0
