"""`icu bench inference`: the model's raw throughput and the worker's, on this machine.

- **raw model**: per-frame encoding (frames/s) by batch size, the grimace and twitch detectors'
  frames/s by batch size when the model has them, and the temporal heads over 128-frame windows
  (windows/s) by batch size, on the selected device.
- **worker, end to end**: N simulated beds publish JPEG frames at 10 fps to an embedded broker
  (pre-rendered, so rendering does not compete with the worker), one worker consumes them and
  publishes detections; reported: frames/s sustained against frames/s offered, window latency
  (detection time - capture time of the window's newest frame, ``window_end``) p50/p99, and the worker's frames/s
  as a ratio of the raw model's per frame (the encoder and, when it has them, the grimace and
  twitch detectors, each at its best batch size).

Weights do not change the cost: without ``weights`` the default variant's architecture, with a
grimace detector as the packaged weights have, is timed with its initial weights; ``weights``
with a twitch detector (``icu train-twitch``) time it too.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from kafka import KafkaConsumer

from icu.contracts import Detection, FrameHeader, Topic, decode, make_frame
from icu.kafka import GracefulStop, close_producer, create_producer
from inference.grimace import GrimaceNet
from inference.model import TemporalNet, build_model
from inference.train import load_variant, load_weights, weights_contents
from inference.twitch import TwitchNet
from inference.worker import PACKAGED_VARIANT, InferenceWorker, InferSettings, build_engine, consume_loop
from infra.broker import EmbeddedBroker
from infra.topics import create_topics
from simulator.bed import BedSimulation
from simulator.scenario import load_scenario

WARMUP_S = 5.0


def _model(weights: Path | None, device: torch.device) -> TemporalNet:
    if weights is not None:
        return load_weights(weights, device)
    config, _ = load_variant(PACKAGED_VARIANT)
    model = build_model(config=config)
    model.grimace_detector = GrimaceNet()  # the packaged weights carry one (and no twitch detector)
    return model.to(device).eval()


def _per_second(run: Callable[[], object], count: int, device: torch.device, repeats: int) -> float:
    """Median items/s of ``run`` (``count`` items per call) over ``repeats`` calls after a warm-up."""
    run()
    runs = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        runs.append(count / (time.perf_counter() - began))
    return round(statistics.median(runs), 1)


@torch.no_grad()
def raw_throughput(model: TemporalNet, device: torch.device, *, repeats: int = 3) -> dict[str, Any]:
    cfg = model.config
    frames_per_s: dict[str, float] = {}
    for batch in (1, 8, 32, 128):
        x = torch.rand(1, batch, 3, cfg.height, cfg.width, device=device)
        frames_per_s[str(batch)] = _per_second(lambda: model.frame_pair_features(x, x), batch, device, repeats)  # noqa: B023
    windows_per_s: dict[str, float] = {}
    for batch in (1, 8, 32):
        vectors = torch.rand(batch, 128, 2 * cfg.dim, device=device)
        windows_per_s[str(batch)] = _per_second(lambda: model.heads(vectors), batch, device, repeats)  # noqa: B023
    result = {"encode_frames_per_s_by_batch": frames_per_s, "heads_windows_per_s_by_batch": windows_per_s}
    for name, detector in (("grimace", model.grimace_detector), ("twitch", model.twitch_detector)):
        if detector is None:
            continue
        frames_read = detector.config.span if isinstance(detector, TwitchNet) else 1  # a stack, or one frame
        per_s: dict[str, float] = {}
        for batch in (1, 8, 32, 128):
            grey = torch.rand(batch, frames_read, detector.config.height, detector.config.width, device=device)
            per_s[str(batch)] = _per_second(lambda: detector(grey), batch, device, repeats)  # noqa: B023
        result[f"{name}_frames_per_s_by_batch"] = per_s
    return result


def _prerender(beds: int, seconds: float) -> list[list[bytes]]:
    clips = []
    for bed in range(beds):
        sim = BedSimulation(load_scenario("stable"), seed=bed, fps=10)
        jpegs = []
        for index in range(int(seconds * 10)):
            ok, jpeg = cv2.imencode(".jpg", sim.frame_at(index).image, [cv2.IMWRITE_JPEG_QUALITY, 80])
            assert ok
            jpegs.append(jpeg.tobytes())
        clips.append(jpegs)
    return clips


def worker_end_to_end(
    broker: EmbeddedBroker,
    *,
    prefix: str,
    clips: list[list[bytes]],
    seconds: float,
    weights: Path,
    device: str,
    paced: bool,
) -> dict[str, Any]:
    """One worker over ``len(clips)`` beds at 10 fps for ``seconds`` of video: paced like live
    cameras, or (``paced=False``) published first and then drained as fast as the worker can."""
    settings = InferSettings(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=prefix,
        infer_weights=weights,
        infer_device=device,
        infer_start="earliest",
    )
    create_topics(settings)
    producer = create_producer(settings, linger_ms=20, batch_size=512 * 1024)
    engine = build_engine(settings)
    stop = GracefulStop()
    worker = InferenceWorker(settings, engine, producer)
    loop = consume_loop(settings, worker, producer, stop)
    worker_thread = threading.Thread(target=loop.run, daemon=True)
    frames_topic = Topic.FRAMES.full_name(prefix)
    start = datetime.now(UTC)
    total = int(seconds * 10)
    if paced:
        worker_thread.start()
    began = time.monotonic()
    sent = 0
    for index in range(total):
        if paced:
            delay = began + index / 10 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        capture = start + timedelta(seconds=index / 10)
        for bed, jpegs in enumerate(clips):
            header = FrameHeader(bed_id=f"bench-{bed:03d}", camera_id=f"bench-{bed:03d}-cam", seq=index,
                                 width=320, height=240, capture_ts=capture)  # fmt: skip
            frame = make_frame(header, jpegs[index % len(jpegs)])
            producer.send(frames_topic, key=frame.key(), value=frame.jpeg, headers=frame.kafka_headers())
            sent += 1
    producer.flush()
    if not paced:
        began = time.monotonic()
        worker_thread.start()
    deadline = time.monotonic() + max(60.0, seconds * 3)
    while engine.stats.frames < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.monotonic() - began
    stop.set()
    worker_thread.join(timeout=30)
    engine.close()
    latencies = _latencies(settings, skip_before=start + timedelta(seconds=WARMUP_S)) if paced else []
    close_producer(producer, 10)
    result: dict[str, Any] = {
        "frames_sent": sent,
        "frames_processed": engine.stats.frames,
        "frames_processed_per_s": round(engine.stats.frames / elapsed, 1),
        "detections": engine.stats.detections,
        "encode_ms_per_frame": round(engine.stats.encode_s / max(1, engine.stats.frames) * 1000, 3),
        "baseline_ms_per_frame": round(engine.stats.baseline_s / max(1, engine.stats.frames) * 1000, 3),
    }
    if paced:
        result["frames_offered_per_s"] = round(sent / seconds, 1)
        result["window_latency_p50_ms"] = round(float(np.percentile(latencies, 50)), 1) if latencies else None
        result["window_latency_p99_ms"] = round(float(np.percentile(latencies, 99)), 1) if latencies else None
    return result


def _latencies(settings: InferSettings, *, skip_before: datetime) -> list[float]:
    """Detection time minus capture time of the run's detections, ms, leaving out the start-up
    (joining the consumer group takes seconds, during which frames queue)."""
    consumer = KafkaConsumer(
        Topic.DETECTIONS.full_name(settings.topic_prefix),
        **settings.kafka_client_config(),
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    out = []
    for record in consumer:
        detection = decode(Detection, record.value)
        newest = detection.window_end or detection.ts
        if newest < skip_before:
            continue
        out.append((detection.inferred_at - newest).total_seconds() * 1000)
    consumer.close()
    return out


def bench_inference(
    *, beds: int = 8, seconds: float = 20.0, weights: Path | None = None, device: str = "auto"
) -> dict[str, Any]:
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    target = torch.device(auto if device == "auto" else device)
    model = _model(weights, target)
    raw = raw_throughput(model, target)
    clips = _prerender(beds, min(seconds, 20.0))
    with tempfile.TemporaryDirectory(prefix="icu-bench-infer-") as tmp, EmbeddedBroker(port=0) as broker:
        weights_path = weights
        if weights_path is None:
            weights_path = Path(tmp) / "model.pt"
            torch.save(weights_contents(model), weights_path)
        live, drain = (
            worker_end_to_end(
                broker,
                prefix=prefix,
                paced=paced,
                clips=clips,
                seconds=seconds,
                weights=weights_path,
                device=str(target),
            )
            for prefix, paced in (("live", True), ("drain", False))
        )
    # Per frame the raw model is the encoder and, when the model has them, the detectors too.
    per_frame_s = sum(
        1.0 / max(raw[key].values())
        for key in ("encode_frames_per_s_by_batch", "grimace_frames_per_s_by_batch", "twitch_frames_per_s_by_batch")
        if key in raw
    )
    best_raw = 1.0 / per_frame_s
    return {
        "device": str(target),
        "model": model.config.name,
        "torch_threads": torch.get_num_threads(),
        "beds": beds,
        "fps_per_bed": 10,
        "raw": raw,
        "worker_live": live,
        "worker_unpaced": drain,
        "raw_frames_per_s": round(best_raw, 1),
        "worker_unpaced_over_raw_model": round(drain["frames_processed_per_s"] / best_raw, 3),
        "beds_at_10fps_sustainable": round(drain["frames_processed_per_s"] / 10, 1),
        "live_kept_up": live["frames_processed"] >= 0.99 * live["frames_sent"],
    }
