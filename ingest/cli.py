"""`icu ingest`: cameras (WHIP, RTSP, files) into ``frames`` and ``camera-status``; vitals into ``vitals``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from icu.cli_common import add_kafka_flags, env_help
from icu.settings import configure_logging, load_settings

log = logging.getLogger("icu.ingest")

CAMERA_EPILOG = """\
Frames are sampled to ICU_INGEST_FPS, resized to ICU_INGEST_WIDTHxICU_INGEST_HEIGHT, JPEG-encoded and
published to <prefix>.frames keyed by bed, latest-frame-wins: when Kafka is slow or down the newest
frame replaces a waiting one and the drop is counted. Every ICU_INGEST_STATUS_INTERVAL_S each camera's
health (state, fps in/out, drops, reconnects, last-frame age) goes to <prefix>.camera-status; a camera
silent for ICU_INGEST_STALL_AFTER_S is 'stalled', for ICU_INGEST_LOST_AFTER_S 'lost'.
Ctrl-C (SIGTERM) stops cleanly: what is waiting is published, then a final status per camera."""


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from ingest.settings import IngestSettings

    settings = load_settings(
        IngestSettings,
        kafka_bootstrap_servers=args.kafka_bootstrap_servers,
        topic_prefix=args.topic_prefix,
        ingest_fps=args.fps,
        **extra,
    )
    configure_logging(settings.log_level)
    return settings


def _run(settings: Any, *, entries: list[Any], whip: bool) -> int:
    """Run cameras (and optionally the WHIP endpoint) until they end or Ctrl-C."""
    from icu.contracts import Topic
    from icu.kafka import GracefulStop, close_producer
    from infra.observability import start_observability
    from infra.topics import require_topics
    from ingest.runner import IngestRunner, create_frame_producer, observe
    from ingest.service import WhipService, source_for

    sources = [(entry, source_for(entry, settings)) for entry in entries]  # bad files fail here, before Kafka
    observability = start_observability(settings, "ingest")
    require_topics(settings, [Topic.FRAMES, Topic.CAMERA_STATUS])
    stop = GracefulStop().install()
    producer = create_frame_producer(settings)
    runner = IngestRunner(settings, producer, stop.event)
    observe(observability, runner)
    runner.start()
    observability.health.set("kafka", True, "topics present, producer connected")
    try:
        for entry, source in sources:
            runner.add_camera(bed_id=entry.bed, camera_id=entry.camera_id, source=source)
        if whip:
            service = WhipService(settings, runner)
            observability.health.check("whip", lambda: (service.ready.is_set(), f"listening on port {service.port}"))
            service.run()
        else:
            runner.wait()
    finally:
        runner.close()
        close_producer(producer, 10)
        observability.close()
    failed = {camera_id: c.error for camera_id, c in runner.cameras.items() if c.error}
    for camera_id, error in failed.items():
        print(f"icu ingest: camera {camera_id}: {error}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_whip(args: argparse.Namespace) -> int:
    settings = _settings(args, whip_host=args.host, whip_port=args.port)
    return _run(settings, entries=[], whip=True)


def _cmd_rtsp(args: argparse.Namespace) -> int:
    from ingest.config import camera_entry

    settings = _settings(args, rtsp_transport=args.transport)
    return _run(settings, entries=[camera_entry(bed=args.bed, camera_id=args.camera_id, rtsp=args.url)], whip=False)


def _cmd_file(args: argparse.Namespace) -> int:
    from ingest.config import camera_entry

    settings = _settings(args)
    entry = camera_entry(bed=args.bed, camera_id=args.camera_id, file=args.path, speed=args.speed, loop=args.loop)
    return _run(settings, entries=[entry], whip=False)


def _cmd_cameras(args: argparse.Namespace) -> int:
    from ingest.config import load_cameras_file

    config = load_cameras_file(args.config)
    settings = _settings(args, whip_host=args.host, whip_port=args.port)
    return _run(settings, entries=list(config.cameras), whip=config.whip)


def _speed(text: str) -> float | str:
    if text == "max":
        return "max"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("speed is a positive number or 'max'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("speed must be positive")
    return value


def _camera_flags(parser: argparse.ArgumentParser) -> None:
    add_kafka_flags(parser)
    parser.add_argument("--fps", type=float, help=env_help("frames/s published per camera", "ICU_INGEST_FPS", 10))


def add_ingest_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ingest = commands.add_parser(
        "ingest",
        help="bring cameras (WHIP, RTSP, files) and vitals (HL7 v2, JSON) into Kafka",
        description="Bedside cameras into <prefix>.frames and <prefix>.camera-status; monitors into <prefix>.vitals.",
    ).add_subparsers(dest="ingest_command", metavar="SOURCE", required=True)
    formatter = argparse.RawDescriptionHelpFormatter

    whip = ingest.add_parser(
        "whip",
        help="serve the WHIP endpoint (WebRTC cameras push to POST /whip/{bed_id})",
        description="WebRTC-HTTP Ingestion Protocol (RFC 9725) endpoint. Cameras POST an SDP offer to "
        "/whip/{bed_id} with 'Authorization: Bearer <token>' (tokens in ICU_WHIP_TOKENS as bed:token pairs, "
        "'*:token' for any bed) and get 201 with the answer and a session Location to DELETE when done. "
        "A new publisher for a bed replaces the current one.",
        epilog=CAMERA_EPILOG,
        formatter_class=formatter,
    )
    whip.add_argument("--host", help=env_help("bind address", "ICU_WHIP_HOST", "127.0.0.1"))
    whip.add_argument("--port", type=int, help=env_help("port; 0 = any free", "ICU_WHIP_PORT", 8080))
    _camera_flags(whip)
    whip.set_defaults(handler=_cmd_whip)

    rtsp = ingest.add_parser(
        "rtsp",
        help="pull one RTSP camera",
        description="Pulls an RTSP stream with FFmpeg (TCP by default), reconnecting with exponential "
        "backoff and jitter for as long as it runs. Credentials in the URL are never logged.",
        epilog=CAMERA_EPILOG,
        formatter_class=formatter,
    )
    rtsp.add_argument("url", help="rtsp://[user:password@]host[:port]/path")
    rtsp.add_argument("--bed", required=True, help="bed id the camera watches, e.g. icu1-07")
    rtsp.add_argument("--camera-id", help="camera id (default <bed>-cam)")
    rtsp.add_argument(
        "--transport", choices=["tcp", "udp"], help=env_help("RTSP transport", "ICU_RTSP_TRANSPORT", "tcp")
    )
    _camera_flags(rtsp)
    rtsp.set_defaults(handler=_cmd_rtsp)

    file = ingest.add_parser(
        "file",
        help="play a video file or clip directory as a camera",
        description="Plays any FFmpeg-readable file, or a directory of clips (the simulator's clip "
        "dataset format) in name order, paced by the video's timestamps. Exits at the end unless --loop.",
        epilog=CAMERA_EPILOG,
        formatter_class=formatter,
    )
    file.add_argument("path", type=Path, help="video file or clip directory")
    file.add_argument("--bed", required=True, help="bed id to publish as, e.g. icu1-07")
    file.add_argument("--camera-id", help="camera id (default <bed>-cam)")
    file.add_argument("--speed", type=_speed, default=1.0, help="pace: 1 = real time, 10 = ten times, max = unpaced")
    file.add_argument("--loop", action="store_true", help="start again at the end, forever")
    _camera_flags(file)
    file.set_defaults(handler=_cmd_file)

    cameras = ingest.add_parser(
        "cameras",
        help="run every camera of a YAML file in one process (optionally with WHIP)",
        description="Runs many cameras in one process. The file lists 'cameras' (each: bed, camera_id?, "
        "and rtsp: URL or file: PATH with speed/loop) and 'whip: true' to also serve the WHIP endpoint. "
        "A camera that fails is reported lost; the others go on.",
        epilog=CAMERA_EPILOG,
        formatter_class=formatter,
    )
    cameras.add_argument("config", type=Path, help="cameras YAML file")
    cameras.add_argument("--host", help=env_help("WHIP bind address", "ICU_WHIP_HOST", "127.0.0.1"))
    cameras.add_argument("--port", type=int, help=env_help("WHIP port", "ICU_WHIP_PORT", 8080))
    _camera_flags(cameras)
    cameras.set_defaults(handler=_cmd_cameras)

    from ingest.vitals.cli import add_vitals_command

    add_vitals_command(ingest)
