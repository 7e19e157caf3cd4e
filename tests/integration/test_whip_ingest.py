"""WHIP ingest against real peers: aiortc cameras publishing simulated video, the real broker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest

from icu.contracts import CameraState, CameraStatus, Topic, decode, decode_frame
from icu.kafka import close_producer
from infra.settings import TopicsAdminSettings
from ingest.runner import IngestRunner, create_frame_producer
from ingest.service import WhipService
from ingest.settings import IngestSettings
from simulator.bed import BedSimulation
from simulator.camera import SimulatedCameraTrack, WhipPublishError, publish_whip
from simulator.scenario import load_scenario
from tests.integration.records import read_records, wait_for_record

TOKEN_A = "token-for-bed-a-0123456789"
TOKEN_B = "token-for-bed-b-9876543210"


@dataclass
class Whip:
    settings: IngestSettings
    runner: IngestRunner
    service: WhipService

    def endpoint(self, bed: str) -> str:
        return f"http://127.0.0.1:{self.service.port}/whip/{bed}"


@pytest.fixture
def whip(kafka_settings: TopicsAdminSettings) -> Iterator[Whip]:
    settings = IngestSettings(
        kafka_bootstrap_servers=kafka_settings.kafka_bootstrap_servers,
        topic_prefix=kafka_settings.topic_prefix,
        topic_partitions=3,
        beds="icu1-01,icu1-02",
        whip_port=0,
        whip_tokens=f"icu1-01:{TOKEN_A},icu1-02:{TOKEN_B}",
        whip_ice_addresses="127.0.0.1",  # aioice leaves loopback out by default
        ingest_fps=5,
        ingest_status_interval_s=0.5,
        ingest_stall_after_s=1.0,
        ingest_lost_after_s=2.5,
    )
    producer = create_frame_producer(settings)
    runner = IngestRunner(settings, producer).start()
    service = WhipService(settings, runner)
    thread = service.start_in_thread()
    try:
        yield Whip(settings, runner, service)
    finally:
        runner.stop.set()  # the WHIP loop ends its sessions first, then the publisher drains
        thread.join(timeout=10)
        runner.close()
        close_producer(producer, 10)


def camera(seed: int = 1) -> SimulatedCameraTrack:
    return SimulatedCameraTrack(BedSimulation(load_scenario("stable"), seed=seed, fps=10))


def wait_for_status(
    settings: IngestSettings, bed: str, predicate: Callable[[CameraStatus], bool], timeout_s: float
) -> CameraStatus:
    def matches(record: Any) -> bool:
        status = decode(CameraStatus, record.value)
        return status.bed_id == bed and predicate(status)

    topic = Topic.CAMERA_STATUS.full_name(settings.topic_prefix)
    return decode(CameraStatus, wait_for_record(settings, topic, matches, timeout_s).value)


def wait_for_state(settings: IngestSettings, bed: str, state: CameraState, timeout_s: float) -> CameraStatus:
    return wait_for_status(settings, bed, lambda s: s.state is state, timeout_s)


def test_two_cameras_publish_sampled_jpeg_frames_in_order(whip: Whip) -> None:
    async def scenario() -> None:
        sessions = [
            await publish_whip(whip.endpoint("icu1-01"), TOKEN_A, camera(1)),
            await publish_whip(whip.endpoint("icu1-02"), TOKEN_B, camera(2)),
        ]
        await asyncio.sleep(4.0)
        for session in sessions:
            assert await session.close() == 200

    started = time.time()
    asyncio.run(scenario())
    frames_topic = Topic.FRAMES.full_name(whip.settings.topic_prefix)
    records = read_records(whip.settings, frames_topic, expected=10_000, timeout_s=3)
    by_bed: dict[str, list[int]] = {}
    for record in records:
        frame = decode_frame(record.value, record.headers)
        assert record.key == frame.header.bed_id.encode()
        assert frame.header.camera_id == f"{frame.header.bed_id}-cam"
        assert (frame.header.width, frame.header.height) == (320, 240)
        assert started - 1 <= frame.header.capture_ts.timestamp() <= time.time() + 1
        image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        assert image.shape == (240, 320, 3)
        assert float(image.mean()) > 20  # a rendered bed, not a black frame
        by_bed.setdefault(frame.header.bed_id, []).append(frame.header.seq)
    assert set(by_bed) == {"icu1-01", "icu1-02"}
    for bed, seqs in by_bed.items():
        assert seqs == sorted(set(seqs)), f"{bed}: out of order or repeated {seqs}"
        # 10 fps camera sampled to 5 fps for ~4 s (connection set-up eats a little of it).
        assert 10 <= len(seqs) <= 24, f"{bed}: {len(seqs)} frames"
    for bed in ("icu1-01", "icu1-02"):
        wait_for_status(whip.settings, bed, lambda s: s.state is CameraState.LIVE and s.fps_in > 5, 5)
        wait_for_status(whip.settings, bed, lambda s: s.state is CameraState.LIVE and 3 <= s.fps_out <= 7, 5)
    for bed in ("icu1-01", "icu1-02"):
        assert wait_for_state(whip.settings, bed, CameraState.STOPPED, 5).detail == "publisher ended the session"


def test_bad_requests_get_clear_errors_and_tokens_stay_out_of_logs(
    whip: Whip, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-ABCDEFGHIJKLMNOP"

    async def scenario() -> dict[str, tuple[int, str]]:
        results: dict[str, tuple[int, str]] = {}
        sdp = {"Content-Type": "application/sdp"}
        async with aiohttp.ClientSession() as http:

            async def call(name: str, method: str, url: str, **kwargs: object) -> None:
                async with http.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
                    results[name] = (response.status, await response.text())
                    results[name + ".headers"] = (0, str(dict(response.headers)))

            url = whip.endpoint("icu1-01")
            await call("garbage", "POST", url, data="hello", headers={**sdp, "Authorization": f"Bearer {TOKEN_A}"})
            await call(
                "no-video",
                "POST",
                url,
                data="v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n",
                headers={**sdp, "Authorization": f"Bearer {TOKEN_A}"},
            )
            await call(
                "broken",
                "POST",
                url,
                data="v=0\r\nm=video x\r\n",
                headers={**sdp, "Authorization": f"Bearer {TOKEN_A}"},
            )
            await call("wrong-token", "POST", url, data="v=0", headers={**sdp, "Authorization": f"Bearer {wrong}"})
            await call(
                "other-bed-token", "POST", url, data="v=0", headers={**sdp, "Authorization": f"Bearer {TOKEN_B}"}
            )
            await call("no-token", "POST", url, data="v=0", headers=sdp)
            await call("content-type", "POST", url, data="{}", headers={"Authorization": f"Bearer {TOKEN_A}"})
            await call(
                "unknown-bed",
                "POST",
                whip.endpoint("icu9-99"),
                data="v=0",
                headers={**sdp, "Authorization": f"Bearer {TOKEN_A}"},
            )
            await call("options", "OPTIONS", url)
            await call("patch", "PATCH", url + "/sessions/abc", data="a=candidate")
            await call(
                "delete-unknown", "DELETE", url + "/sessions/abc", headers={"Authorization": f"Bearer {TOKEN_A}"}
            )
        return results

    results = asyncio.run(scenario())
    assert results["garbage"][0] == 400
    assert "v=0" in results["garbage"][1]
    assert results["no-video"][0] == 400
    assert "video" in results["no-video"][1]
    assert results["broken"][0] == 400
    assert "unusable SDP" in results["broken"][1]
    assert results["wrong-token"][0] == 401
    assert results["other-bed-token"][0] == 401  # a bed's token opens only that bed
    assert results["no-token"][0] == 401
    assert "WWW-Authenticate" in results["no-token.headers"][1]
    assert results["content-type"][0] == 415
    assert results["unknown-bed"][0] == 401  # icu9-99 has no token; nothing says whether it exists
    assert results["options"][0] == 204
    assert "application/sdp" in results["options.headers"][1]
    assert "Access-Control-Allow-Origin" in results["options.headers"][1]
    assert results["patch"][0] == 405
    assert results["delete-unknown"][0] == 404
    assert whip.service.server.sessions == {}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused (401)" in logged
    for secret in (wrong, TOKEN_A, TOKEN_B):
        assert secret not in logged


def test_a_new_publisher_replaces_the_current_one_and_the_bed_stays_watched(whip: Whip) -> None:
    async def scenario() -> tuple[str, str, int | None, str]:
        first = await publish_whip(whip.endpoint("icu1-01"), TOKEN_A, camera(1))
        await asyncio.sleep(1.0)
        second = await publish_whip(whip.endpoint("icu1-01"), TOKEN_A, camera(3))
        await asyncio.sleep(1.5)
        stale_delete = await first.close()
        await asyncio.sleep(0.5)
        assert len(whip.service.server.sessions) == 1
        current = next(iter(whip.service.server.sessions.values()))
        # The rebooted camera's new session is live; then it vanishes without a goodbye.
        await asyncio.to_thread(
            wait_for_status, whip.settings, "icu1-01",
            lambda s: s.state is CameraState.LIVE and s.reconnects >= 1 and s.ts.timestamp() > replaced_at, 5,
        )  # fmt: skip
        await second.close(delete=False)
        return first.location, current.session_id, stale_delete, second.location

    replaced_at = time.time() + 1.0
    first_location, current_id, stale_delete, _ = asyncio.run(scenario())
    assert current_id not in first_location
    assert stale_delete == 404  # the replaced session is gone; deleting it changes nothing
    # A replacement never leaves the bed "stopped": the vanished second camera is reported lost.
    status = wait_for_status(
        whip.settings, "icu1-01", lambda s: s.state is CameraState.LOST and s.ts.timestamp() > replaced_at + 2.5, 10
    )
    assert status.reconnects >= 1


def test_a_camera_that_vanishes_is_reported_lost_and_its_connection_closed(whip: Whip) -> None:
    async def scenario() -> tuple[float, Any]:
        session = await publish_whip(whip.endpoint("icu1-02"), TOKEN_B, camera(2))
        await asyncio.sleep(1.5)
        server_pc = next(iter(whip.service.server.sessions.values())).pc
        await session.close(delete=False)  # gone without a goodbye
        return time.monotonic(), server_pc

    vanished, server_pc = asyncio.run(scenario())
    wait_for_state(whip.settings, "icu1-02", CameraState.LIVE, 5)
    status = wait_for_state(whip.settings, "icu1-02", CameraState.LOST, 10)
    bound = whip.settings.ingest_lost_after_s + whip.settings.ingest_status_interval_s + 2.0
    assert time.monotonic() - vanished <= bound + 3  # + the status reader's own polling
    assert status.detail
    deadline = time.monotonic() + 5
    while server_pc.connectionState != "closed":  # sockets, ICE and DTLS released, not leaked
        assert time.monotonic() < deadline, f"server peer connection still {server_pc.connectionState}"
        time.sleep(0.1)
    assert whip.service.server.sessions == {}


def test_a_bed_with_a_configured_camera_refuses_whip(whip: Whip) -> None:
    whip.runner.new_feed(bed_id="icu1-02", camera_id=None, source="file")  # e.g. from a cameras file

    async def scenario() -> None:
        await publish_whip(whip.endpoint("icu1-02"), TOKEN_B, camera(2))

    with pytest.raises(WhipPublishError) as refused:
        asyncio.run(scenario())
    assert refused.value.status == 409
    assert "already running" in str(refused.value)


def test_refused_publish_raises_with_the_status() -> None:
    error = WhipPublishError(401, "missing or wrong bearer token\n")
    assert error.status == 401
    assert "401" in str(error)
