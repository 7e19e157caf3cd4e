"""`icu bench ingest`: what one ingest process sustains, against the limits that bound it.

One run measures, on an embedded broker:

- **real time**: N file cameras at 10 fps (320x240 H.264 clips from the simulator), paced like
  live cameras: frames/s delivered, CPU cores used (process CPU time / wall time), CPU per
  camera, drops, and capture-to-broker-ack latency p50/p99. Cameras per core at 10 fps follows.
- **unpaced**: the same cameras decoding as fast as they can: the frame throughput the ingest
  path sustains (acked frames/s) and its CPU.
- **the limit**: raw kafka-python producer throughput for messages of the same size (the mean
  JPEG of the run), same producer settings, no decoding or encoding: the ceiling for frames/s.

Every figure is the median over ``repeats`` runs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from icu.contracts import Topic
from icu.kafka import close_producer
from infra.broker import EmbeddedBroker
from infra.topics import create_topics
from ingest.runner import IngestRunner, create_frame_producer
from ingest.settings import IngestSettings
from ingest.sources.file import FileSource
from simulator.clips import plan_clip_set, write_clip


def _clip(out: Path, *, fps: float, width: int, height: int, seconds: float) -> Path:
    (spec,) = plan_clip_set(n=1, seed=7, split="train", duration_s=seconds, fps=fps, width=width, height=height)
    return write_clip(spec, out).with_suffix(".mp4")


def _run_cameras(
    settings: IngestSettings, clip: Path, *, cameras: int, seconds: float, speed: float | None
) -> dict[str, float]:
    producer = create_frame_producer(settings)
    runner = IngestRunner(settings, producer).start()
    feeds = [
        runner.add_camera(bed_id=f"bench-{i:03d}", source=FileSource(clip, speed=speed, loop=True))
        for i in range(cameras)
    ]
    warmup = min(2.0, seconds / 4)
    time.sleep(warmup)  # let every camera open its file and reach a steady pace
    acked0 = runner.publisher.stats.frames_acked
    dropped0 = sum(f.slot.dropped for f in feeds)
    runner.publisher.stats.latencies_s.clear()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    acked = runner.publisher.stats.frames_acked - acked0
    dropped = sum(f.slot.dropped for f in feeds) - dropped0
    latencies = np.array(runner.publisher.stats.latencies_s) * 1000
    jpeg_bytes = runner.publisher.stats.bytes_sent / max(1, runner.publisher.stats.frames_sent)
    runner.close()
    close_producer(producer, 10)
    figures = {
        "frames_per_s": acked / wall,
        "cores": cpu / wall,
        "dropped_per_s": dropped / wall,
        "jpeg_bytes": jpeg_bytes,
    }
    if speed == 1.0 and latencies.size:
        # Capture times follow the file's clock, which is the wall clock only at real-time pace.
        figures["latency_p50_ms"] = float(np.percentile(latencies, 50))
        figures["latency_p99_ms"] = float(np.percentile(latencies, 99))
    return figures


def _raw_producer(settings: IngestSettings, *, size: int, seconds: float) -> float:
    """Messages/s kafka-python's producer sustains for ``size``-byte values, same settings."""
    producer = create_frame_producer(settings)
    topic = Topic.FRAMES.full_name(settings.topic_prefix)
    payload = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    keys = [f"bench-{i:03d}".encode() for i in range(32)]
    sent = 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        for key in keys:
            producer.send(topic, key=key, value=payload)
        sent += len(keys)
    producer.flush(timeout=60)
    elapsed = time.perf_counter() - began
    close_producer(producer, 10)
    return sent / elapsed


def bench_ingest(
    *,
    cameras: int = 32,
    seconds: float = 10.0,
    repeats: int = 3,
    fps: float = 10.0,
    width: int = 320,
    height: int = 240,
) -> dict[str, Any]:
    runs: dict[str, list[float]] = {}

    def keep(prefix: str, figures: dict[str, float]) -> None:
        for name, value in figures.items():
            runs.setdefault(f"{prefix}_{name}", []).append(value)

    with tempfile.TemporaryDirectory(prefix="icu-bench-ingest-") as tmp, EmbeddedBroker(port=0) as broker:
        clip = _clip(Path(tmp), fps=fps, width=width, height=height, seconds=20.0)
        for repeat in range(repeats):
            settings = IngestSettings(
                kafka_bootstrap_servers=broker.bootstrap_servers,
                topic_prefix=f"bench{repeat}",
                ingest_fps=fps,
                ingest_width=width,
                ingest_height=height,
            )
            create_topics(settings)
            keep("realtime", _run_cameras(settings, clip, cameras=cameras, seconds=seconds, speed=1.0))
            keep("unpaced", _run_cameras(settings, clip, cameras=cameras, seconds=seconds, speed=None))
            size = round(runs["realtime_jpeg_bytes"][-1])
            runs.setdefault("raw_producer_msgs_per_s", []).append(_raw_producer(settings, size=size, seconds=seconds))

    med = {name: statistics.median(values) for name, values in runs.items()}
    offered = cameras * fps
    cores = med["realtime_cores"]
    raw = med["raw_producer_msgs_per_s"]
    return {
        "cameras": cameras,
        "fps_per_camera": fps,
        "frame_size": f"{width}x{height}",
        "repeats": repeats,
        "seconds_per_run": seconds,
        "realtime": {
            "frames_per_s_offered": offered,
            "frames_per_s_delivered": round(med["realtime_frames_per_s"], 1),
            "delivered_ratio": round(med["realtime_frames_per_s"] / offered, 3),
            "dropped_per_s": round(med["realtime_dropped_per_s"], 2),
            "cpu_cores": round(cores, 3),
            "cpu_per_camera_cores": round(cores / cameras, 4),
            "cameras_per_core_at_fps": round(cameras / cores, 1) if cores > 0 else None,
            "target_cameras_per_core": 32,
            "capture_to_broker_p50_ms": round(med["realtime_latency_p50_ms"], 1),
            "capture_to_broker_p99_ms": round(med["realtime_latency_p99_ms"], 1),
        },
        "unpaced": {
            "frames_per_s": round(med["unpaced_frames_per_s"], 1),
            "cpu_cores": round(med["unpaced_cores"], 3),
            "frames_per_s_per_core": round(med["unpaced_frames_per_s"] / med["unpaced_cores"], 1),
        },
        "raw_producer": {
            "message_bytes": round(med["realtime_jpeg_bytes"]),
            "msgs_per_s": round(raw, 1),
            "unpaced_ingest_over_raw_producer": round(med["unpaced_frames_per_s"] / raw, 3),
        },
        "runs": {name: [round(v, 3) for v in values] for name, values in runs.items()},
    }
