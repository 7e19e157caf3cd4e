"""The demo's simulated bedside devices, in one process: per bed a WebRTC camera publishing to
the WHIP endpoint (the real camera ingest path) and a monitor sending 1 Hz vitals to Kafka.

Camera and monitor of a bed share one :class:`BedSimulation`, so the video and the vitals tell
the same course. A bed may start ``offset_s`` seconds into its scenario, so that a deterioration
that takes the library scenario ten minutes to develop is under way when the demo opens; the
monitor then first reports the values it would show at that point (one merged reading), as a
monitor plugged in mid-course would. A scenario that ends starts again from its offset.

Run by ``icu demo`` as ``python -m demo.bedside --bed sim-01=stable@0 ...`` with the token in
``ICU_SIM_WHIP_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiortc.mediastreams import MediaStreamError, VideoStreamTrack
from av import VideoFrame

from demo.plan import BedPlan, parse_bed_arg
from icu.contracts import Topic, Vitals, encode, kafka_key
from icu.kafka import Producer, close_producer, create_renewing_producer
from icu.settings import KafkaSettings, TopicSettings, configure_logging
from simulator.bed import BedSimulation
from simulator.camera import WhipSession, publish_whip
from simulator.scenario import load_scenario

log = logging.getLogger("demo.bedside")

VIDEO_CLOCK_RATE = 90_000
RECONNECT_S = 2.0


class BedsideSettings(KafkaSettings, TopicSettings):
    """Where the monitors publish (the cameras go to the WHIP endpoint given on the command line)."""


def merged_reading(readings: list[Vitals]) -> Vitals | None:
    """One reading with the newest value of every field in ``readings`` (oldest first), at the
    newest reading's time: what a monitor shows when it is plugged in mid-course."""
    if not readings:
        return None
    values: dict[str, object] = {}
    for reading in readings:
        values.update({k: v for k, v in reading.model_dump().items() if v is not None})
    return readings[-1].model_copy(update=values)


class BedTrack(VideoStreamTrack):
    """One bed's camera in real time from ``offset_s`` into its scenario, looping; each rendered
    frame also advances the bed's monitor, whose readings go to ``send_vitals``."""

    def __init__(
        self,
        bed: BedPlan,
        *,
        fps: float,
        size: tuple[int, int],
        seed: int,
        send_vitals: Callable[[Vitals], None],
        resume: BedTrack | None = None,
    ) -> None:
        super().__init__()
        self.bed = bed
        self.fps = fps
        self.size = size
        self.seed = seed
        self.send_vitals = send_vitals
        self.scenario = load_scenario(bed.scenario)
        self.frames_sent = 0
        self.frames_skipped = 0
        self.sim: BedSimulation
        self._wall0: float = time.monotonic()
        self._sent_index = -1  # frames counted since the track started (all runs)
        self._run_first = 0  # track index at which the current run starts
        if resume is not None:  # a new WebRTC session goes on with the same course and clock
            self.sim, self._wall0 = resume.sim, resume._wall0
            self._sent_index, self._run_first = resume._sent_index, resume._run_first
        else:
            self.sim = self._new_run(datetime.now(UTC))

    def _new_run(self, now: datetime) -> BedSimulation:
        width, height = self.size
        sim = BedSimulation(self.scenario, seed=self.seed, bed_id=self.bed.bed_id, index=self.bed.index,
                            fps=self.fps, width=width, height=height,
                            start=now - timedelta(seconds=self.bed.offset_s))  # fmt: skip
        # Step the course to the offset a second at a time (one frame per second is enough for
        # the monitor, which needs each second's respiration rate: None would mean apnea).
        skipped: list[Vitals] = []
        for second in range(int(self.bed.offset_s)):
            frame = sim.frame_at(round(second * self.fps))
            skipped += sim.vitals_until(frame.t, frame.truth.resp_rate_bpm)
        catch_up = merged_reading(skipped)
        if catch_up is not None:
            self.send_vitals(catch_up)
        return sim

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        index = max(int((now - self._wall0) * self.fps), self._sent_index + 1)
        next_at = self._wall0 + index / self.fps
        if next_at > now:
            await asyncio.sleep(next_at - now)
        else:
            self.frames_skipped += index - self._sent_index - 1
        self._sent_index = index
        local = round(self.bed.offset_s * self.fps) + index - self._run_first
        if local >= self.sim.frame_count:  # the scenario ended: again from its offset
            self._run_first = index
            self.sim = self._new_run(datetime.now(UTC))
            local = round(self.bed.offset_s * self.fps)
        local = max(local, self.sim.next_index)
        frame = self.sim.frame_at(local)
        for vitals in self.sim.vitals_until(frame.t, frame.truth.resp_rate_bpm):
            self.send_vitals(vitals)
        video = VideoFrame.from_ndarray(frame.image, format="bgr24")
        video.pts = round(index / self.fps * VIDEO_CLOCK_RATE)
        video.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        self.frames_sent += 1
        return video


class Monitors:
    """Sends every bed's vitals to ``<prefix>.vitals`` (keyed by bed), counting failures."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.sent = 0
        self.failed = 0

    def send(self, vitals: Vitals) -> None:
        try:
            future = self.producer.send(self.topic, key=kafka_key(vitals), value=encode(vitals))
        except Exception as exc:  # a full buffer while the broker restarts: count, go on
            self.failed += 1
            log.warning("vitals of %s not sent: %s", vitals.bed_id, exc)
            return
        future.add_errback(self._failed)
        self.sent += 1

    def _failed(self, exc: BaseException) -> None:
        self.failed += 1
        if self.failed in (1, 10, 100) or self.failed % 1000 == 0:
            log.warning("vitals delivery failed (%d so far): %s", self.failed, exc)


async def run_camera(endpoint: str, token: str, tracks: list[BedTrack], index: int, stop: asyncio.Event) -> None:
    """Keep bed ``index``'s camera published at ``endpoint``; republish (a new track on the same
    course: aiortc does not move a track to a second connection) after the session drops."""
    track = tracks[index]
    url = f"{endpoint.rstrip('/')}/whip/{track.bed.bed_id}"
    while not stop.is_set():
        session: WhipSession | None = None
        try:
            session = await publish_whip(url, token, track)
            log.info("bed %s: %s from %g s publishing to %s", track.bed.bed_id, track.bed.scenario,
                     track.bed.offset_s, url)  # fmt: skip
            ended = asyncio.Event()

            @session.pc.on("connectionstatechange")
            def _on_state(pc: object = session.pc, ended: asyncio.Event = ended) -> None:
                if getattr(pc, "connectionState", "") in ("failed", "closed"):
                    ended.set()

            stop_task = asyncio.ensure_future(stop.wait())
            ended_task = asyncio.ensure_future(ended.wait())
            await asyncio.wait({stop_task, ended_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            ended_task.cancel()
        except Exception as exc:  # endpoint not up yet or restarting: retry
            log.warning("bed %s: WHIP publish failed (%s); retrying in %g s", track.bed.bed_id, exc, RECONNECT_S)
        finally:
            if session is not None:
                try:
                    await asyncio.wait_for(session.close(delete=stop.is_set()), timeout=3)
                except Exception as exc:  # the endpoint may be gone already
                    log.debug("closing bed %s's session: %s", track.bed.bed_id, exc)
        if not stop.is_set():
            await asyncio.sleep(RECONNECT_S)
            # aiortc cannot re-add a track to a second peer connection once stopped; a fresh one
            # continues the same simulation.
            track = BedTrack(track.bed, fps=track.fps, size=track.size, seed=track.seed,
                             send_vitals=track.send_vitals, resume=track)  # fmt: skip
            tracks[track.bed.index] = track


async def run_bedside(beds: list[BedPlan], *, endpoint: str, token: str, fps: float, size: tuple[int, int],
                      seed: int, monitors: Monitors) -> None:  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tracks = [BedTrack(bed, fps=fps, size=size, seed=seed, send_vitals=monitors.send) for bed in beds]
    tasks = [asyncio.ensure_future(run_camera(endpoint, token, tracks, i, stop)) for i in range(len(tracks))]

    async def report() -> None:
        while not stop.is_set():
            await asyncio.sleep(30)
            log.info("bedside: frames sent %d, skipped %d; vitals sent %d, failed %d",
                     sum(t.frames_sent for t in tracks), sum(t.frames_skipped for t in tracks),
                     monitors.sent, monitors.failed)  # fmt: skip

    reporter = asyncio.ensure_future(report())
    await stop.wait()
    reporter.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.bedside", description=__doc__.split("\n\n")[0])
    parser.add_argument("--whip", required=True, help="WHIP endpoint base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--bed", action="append", required=True, help="BED=SCENARIO@OFFSET_S, repeatable")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--size", default="160x120")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = BedsideSettings()
    configure_logging(settings.log_level)
    token = os.environ.get("ICU_SIM_WHIP_TOKEN", "")
    if not token:
        parser.error("ICU_SIM_WHIP_TOKEN is not set: the WHIP endpoint needs the cameras' bearer token")
    from ingest.whip import pin_ice_host_addresses
    from simulator.settings import parse_size

    pin_ice_host_addresses(("127.0.0.1",))
    beds = [parse_bed_arg(value, index) for index, value in enumerate(args.bed)]
    producer = create_renewing_producer(settings, name="bedside monitors", linger_ms=20)
    monitors = Monitors(producer, Topic.VITALS.full_name(settings.topic_prefix))
    try:
        asyncio.run(run_bedside(beds, endpoint=args.whip, token=token, fps=args.fps, size=parse_size(args.size),
                                seed=args.seed, monitors=monitors))  # fmt: skip
    finally:
        close_producer(producer, 5)
    log.info("bedside stopped: vitals sent %d, failed %d", monitors.sent, monitors.failed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
