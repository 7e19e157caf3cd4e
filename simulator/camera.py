"""A simulated bedside camera that publishes over WHIP, like a real WebRTC camera would.

The track renders a :class:`BedSimulation` in real time at its frame rate (latest-frame-wins: a
late frame is skipped, not queued); :func:`publish_whip` does the WHIP exchange (RFC 9725) with
aiortc and returns the session so the caller can end it with DELETE.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from dataclasses import dataclass

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame
from yarl import URL

from simulator.bed import BedSimulation
from simulator.errors import SimulatorError
from simulator.scenario import Scenario

log = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90_000


class WhipPublishError(SimulatorError):
    """The WHIP endpoint refused the camera; the message carries its status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"WHIP endpoint answered {status}: {reason.strip()}")
        self.status = status


class SimulatedCameraTrack(VideoStreamTrack):
    """Video of one simulated bed in real time; the track ends with the scenario."""

    def __init__(self, sim: BedSimulation) -> None:
        super().__init__()
        self.sim = sim
        self.frames_sent = 0
        self.frames_skipped = 0
        self._started: float | None = None

    async def recv(self) -> VideoFrame:
        now = time.monotonic()
        if self._started is None:
            self._started = now
        index = max(int((now - self._started) * self.sim.fps), self.sim.next_index)
        if index >= self.sim.frame_count:
            self.stop()
            raise MediaStreamError("end of scenario")
        next_at = self._started + index / self.sim.fps
        if next_at > now:
            await asyncio.sleep(next_at - now)
        else:
            self.frames_skipped += index - self.sim.next_index
        frame = VideoFrame.from_ndarray(self.sim.frame_at(index).image, format="bgr24")
        frame.pts = round(index / self.sim.fps * VIDEO_CLOCK_RATE)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        self.frames_sent += 1
        return frame


@dataclass
class WhipSession:
    pc: RTCPeerConnection
    location: str
    endpoint: str
    token: str

    async def close(self, *, delete: bool = True) -> int | None:
        """End the session: DELETE its resource (unless ``delete`` is False: a camera that vanishes)."""
        status = None
        try:
            if delete:
                url = str(URL(self.endpoint).join(URL(self.location)))
                async with (
                    aiohttp.ClientSession() as http,
                    http.delete(url, headers={"Authorization": f"Bearer {self.token}"}) as response,
                ):
                    status = response.status
        finally:
            await self.pc.close()
        return status


async def publish_whip(endpoint: str, token: str, track: VideoStreamTrack) -> WhipSession:
    """Offer ``track`` to a WHIP endpoint (e.g. http://127.0.0.1:8080/whip/icu1-01)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate (no trickle)
    assert pc.localDescription is not None
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(endpoint, data=pc.localDescription.sdp, headers=headers) as response,
    ):
        body = await response.text()
        if response.status != 201:
            await pc.close()
            raise WhipPublishError(response.status, body)
        location = response.headers.get("Location")
    if not location:
        await pc.close()
        raise WhipPublishError(201, "no Location header in the answer")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return WhipSession(pc=pc, location=location, endpoint=endpoint, token=token)


async def run_camera(
    endpoint: str,
    token: str,
    scenario: Scenario,
    *,
    seed: int = 0,
    fps: float = 10.0,
    duration_s: float | None = None,
    ice_addresses: tuple[str, ...] = (),
) -> dict[str, int | str | None]:
    """Publish ``scenario`` as a camera until its end, ``duration_s``, or cancellation; then DELETE."""
    if ice_addresses:
        from ingest.whip import pin_ice_host_addresses

        pin_ice_host_addresses(ice_addresses)
    track = SimulatedCameraTrack(BedSimulation(scenario, seed=seed, fps=fps))
    session = await publish_whip(endpoint, token, track)
    log.info("publishing %s to %s (session %s)", scenario.name, endpoint, session.location)
    ended = asyncio.Event()
    track.on("ended", ended.set)

    @session.pc.on("connectionstatechange")
    def _on_state() -> None:
        if session.pc.connectionState in ("failed", "closed"):  # the endpoint went away
            log.warning("WebRTC connection %s; stopping", session.pc.connectionState)
            ended.set()

    try:
        await asyncio.wait_for(ended.wait(), timeout=duration_s)
    except TimeoutError:
        pass
    finally:
        status = await session.close()
    return {
        "location": session.location,
        "frames_sent": track.frames_sent,
        "frames_skipped": track.frames_skipped,
        "delete_status": status,
    }
