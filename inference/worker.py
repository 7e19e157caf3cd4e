"""`icu infer`: the inference worker, a Kafka consumer group on ``frames`` publishing ``detections`` and ``evidence``.

Scale out by starting more workers with the same group: Kafka spreads the frame partitions (and
so the beds) across them, and a bed that moves to another worker after a rebalance has its
buffer rebuilt from the stream within a couple of seconds. Offsets are committed only after the
detections a batch produced are acknowledged (at-least-once); a frame that cannot be used goes to
the dead-letter topic with the reason.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from icu.contracts import Detection, Evidence, Frame, Topic, encode
from icu.kafka import ConsumeLoop, DeadLetterPublisher, GracefulStop, Producer, Received, Rejected, create_consumer
from icu.settings import ConfigError, ObservabilitySettings, env_name
from inference.engine import EngineConfig, InferenceEngine, decode_jpeg
from inference.train import load_weights_and_rules
from infra.settings import TopicsAdminSettings

if TYPE_CHECKING:
    from infra.observability import Observability

log = logging.getLogger(__name__)

STAGE = "inference"


PACKAGED_VARIANT = "temporal-small-attnpool"  # the config the committed weights were trained with


def packaged_weights() -> Path:
    """The committed weights (temporal-small-attnpool with its decision rules, trained on
    synthetic data; see MODEL_CARD.md)."""
    return Path(str(resources.files("inference") / "weights" / f"{PACKAGED_VARIANT}.pt"))


class InferSettings(TopicsAdminSettings, ObservabilitySettings):
    """`icu infer`: which weights, which device, how windows are cut."""

    infer_weights: Path | None = Field(
        default=None, description="model.pt from `icu train` (default: the packaged temporal-small-attnpool weights)."
    )
    infer_device: str = Field(default="auto", description="auto (CUDA when present), cpu, cuda, cuda:N.")
    infer_threads: int | None = Field(default=None, ge=1, le=256, description="CPU threads for torch.")
    infer_window_frames: int = Field(default=128, ge=16, le=2048, description="Frames per window (12.8 s at 10 fps).")
    infer_hop_s: float = Field(default=1.0, gt=0, le=60, description="Detections per bed every this many seconds.")
    infer_fps: float = Field(default=10.0, gt=0, le=60, description="Frame rate the model expects.")
    infer_silence_s: float = Field(default=30.0, gt=0, description="Forget a bed's buffer after this much silence.")
    infer_evidence_cooldown_s: float = Field(
        default=30.0, ge=0, le=3600, description="At most one evidence record per bed and finding this often."
    )
    infer_group: str = Field(default="icu-infer", min_length=1, description="Kafka consumer group.")
    infer_start: Literal["latest", "earliest"] = Field(
        default="latest", description="Where a new group starts: latest (live) or earliest (replay a topic)."
    )

    def device(self) -> torch.device:
        if self.infer_device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.infer_device)
        except RuntimeError:
            raise ConfigError(f"{env_name('infer_device')}: not a device: {self.infer_device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{env_name('infer_device')} is {self.infer_device} but no CUDA device is available")
        return device

    def weights(self) -> Path:
        if self.infer_weights is None:
            packaged = packaged_weights()
            if not packaged.is_file():
                raise ConfigError(
                    f"{env_name('infer_weights')} is not set and the packaged weights are missing ({packaged}): "
                    "point it at a model.pt written by `icu train`"
                )
            return packaged
        if not self.infer_weights.is_file():
            raise ConfigError(f"{env_name('infer_weights')}: no such file {self.infer_weights}")
        return self.infer_weights


class DeliveryError(Exception):
    """Detections or evidence were not acknowledged by Kafka; the batch is retried, nothing committed."""


class InferenceWorker:
    """Glue between the consume loop and the engine: decode, buffer, infer, publish."""

    def __init__(
        self,
        settings: InferSettings,
        engine: InferenceEngine,
        producer: Producer,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.producer = producer
        self.observe_latency: Callable[[float], None] | None = None
        """Called with each delivered detection's latency (inferred_at - window_end), seconds."""
        self.detections_topic = Topic.DETECTIONS.full_name(settings.topic_prefix)
        self.evidence_topic = Topic.EVIDENCE.full_name(settings.topic_prefix)
        self._unsent: list[Detection | Evidence] = []
        self._next_eviction = time.monotonic() + settings.infer_silence_s

    def handle(self, received: list[Received]) -> list[Rejected]:
        usable = []
        rejected = []
        for item in received:
            frame = item.message
            if not isinstance(frame, Frame):  # the loop decodes frames by contract; anything else is a bug upstream
                rejected.append(Rejected(item.record, "not a frame", "frame"))
                continue
            decoded = decode_jpeg(frame)
            if isinstance(decoded, str):
                rejected.append(Rejected(item.record, decoded, "frame"))
                continue
            usable.append((frame, decoded))
        self.engine.add(usable)
        # Messages of an earlier attempt that Kafka did not take go first: a retried batch
        # finds its frames already buffered and would not cut them again.
        detections = self.engine.due()
        messages = [*self._unsent, *detections, *self.engine.take_evidence()]
        futures = [
            self.producer.send(
                self.evidence_topic if isinstance(message, Evidence) else self.detections_topic,
                key=message.key(),
                value=encode(message),
            )
            for message in messages
        ]
        if futures:
            self.producer.flush(timeout=30)
        self._unsent = [m for m, future in zip(messages, futures, strict=True) if not future.succeeded()]
        if self._unsent:
            # The loop retries with backoff and commits nothing until they are delivered.
            raise DeliveryError(f"{len(self._unsent)} detections/evidence not acknowledged by Kafka")
        if self.observe_latency is not None:
            for message in messages:
                if isinstance(message, Detection) and message.window_end is not None:
                    self.observe_latency((message.inferred_at - message.window_end).total_seconds())
        now = time.monotonic()
        if now >= self._next_eviction:
            self._next_eviction = now + self.settings.infer_silence_s
            for bed in self.engine.evict_silent(now):
                log.info("bed %s silent for %.0f s: its buffer is dropped", bed, self.settings.infer_silence_s)
        return rejected


def build_engine(settings: InferSettings) -> InferenceEngine:
    device = settings.device()
    if settings.infer_threads is not None:
        torch.set_num_threads(settings.infer_threads)
    weights = settings.weights()
    model, rules = load_weights_and_rules(weights, device)
    version = f"{model.config.name}@{weights.stem}-{int(weights.stat().st_mtime)}"
    config = EngineConfig(
        fps=settings.infer_fps,
        window_frames=settings.infer_window_frames,
        hop_s=settings.infer_hop_s,
        silence_s=settings.infer_silence_s,
        evidence_cooldown_s=settings.infer_evidence_cooldown_s,
    )
    if config.window_frames < model.config.receptive_field:
        log.warning("%s=%d is shorter than the model's receptive field (%d frames): detections will differ from "
                    "offline evaluation", env_name("infer_window_frames"), config.window_frames,
                    model.config.receptive_field)  # fmt: skip
    log.info("model %s on %s (window %d frames, a detection per bed every %g s)", version, device,
             config.window_frames, config.hop_s)  # fmt: skip
    log.info("decision rules: %s", rules.describe())
    if model.grimace_detector is None:
        log.info("no grimace detector in %s: grimace comes from the temporal model's own head", weights)
    else:
        detector = model.grimace_detector.config
        log.info("grimace from the grimace detector at %dx%d greyscale", detector.width, detector.height)
    if model.twitch_detector is None:
        log.info("no twitch detector in %s: twitch comes from the temporal model's own head", weights)
    else:
        twitch = model.twitch_detector.config
        log.info("twitch from the twitch detector at %dx%d greyscale, each frame read between its %d neighbours "
                 "each side (a reading lags its frame by %d frames)", twitch.width, twitch.height, twitch.neighbours,
                 twitch.neighbours)  # fmt: skip
    return InferenceEngine(model, config=config, device=device, model_version=version, rules=rules)


def consume_loop(
    settings: InferSettings, worker: InferenceWorker, producer: Producer, stop: GracefulStop
) -> ConsumeLoop:
    frames_topic = Topic.FRAMES.full_name(settings.topic_prefix)
    consumer = create_consumer(
        settings,
        group_id=settings.infer_group,
        topics=[frames_topic],
        auto_offset_reset=settings.infer_start,
        max_poll_records=256,
    )
    dead_letters = DeadLetterPublisher(producer, Topic.DEAD_LETTER.full_name(settings.topic_prefix), STAGE)
    return ConsumeLoop(
        consumer=consumer,
        topics={frames_topic: Topic.FRAMES},
        handler=worker.handle,
        dead_letters=dead_letters,
        stop=stop,
        poll_timeout_ms=200,
    )


def observe(observability: Observability, worker: InferenceWorker, loop: ConsumeLoop) -> None:
    """Health and Prometheus metrics of an inference worker (read from the stats it keeps)."""
    from infra.observability import stat_sample, watch_consume_loop

    engine = worker.engine
    stats = engine.stats
    watch_consume_loop(observability, loop, STAGE)
    observability.health.set("model", True, f"{engine.model_version} on {engine.device}")
    for name, documentation, field in (
        ("icu_infer_frames_used", "Frames the model encoded.", "frames"),
        ("icu_infer_frames_skipped", "Late, repeated or too-dense frames not used.", "skipped"),
        ("icu_infer_detections", "Detections published (one per bed per hop).", "detections"),
        ("icu_infer_evidence", "Evidence records published.", "evidence"),
        ("icu_infer_windows", "Windows run through the temporal heads.", "windows"),
    ):
        observability.counter_from(name, documentation, functools.partial(stat_sample, stats, field))
    observability.gauge_from("icu_infer_beds", "Beds with a buffer on this worker.", lambda: [((), len(engine.beds))])
    latency = observability.histogram(
        "icu_infer_latency_seconds", "Detection latency: inferred_at - window_end (the newest frame seen), seconds."
    )
    worker.observe_latency = latency.observe
