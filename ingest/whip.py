"""WHIP endpoint (WebRTC-HTTP Ingestion Protocol, RFC 9725) for bedside cameras, on aiohttp + aiortc.

- ``POST /whip/{bed_id}`` with ``Content-Type: application/sdp`` and ``Authorization: Bearer <token>``:
  ``201 Created``, the SDP answer, and ``Location: /whip/{bed_id}/sessions/{id}``.
- ``DELETE`` on that location ends the session (same token).
- ``OPTIONS`` answers CORS preflights and advertises ``Accept-Post: application/sdp``.
- ``PATCH`` (trickle ICE, ICE restart) is not supported: ``405``; offers must carry their candidates.

One bed, one publisher: a new session for a bed **replaces** the current one. A camera that
reboots reconnects long before its old session's ICE consent times out, and refusing it would
leave the bed unwatched until then; a token is per bed (or deployment-wide), so only a holder of
that bed's token can take it over. The replacement is logged and counted as a reconnect. A bed
that already has a camera of another kind in the same process (an RTSP camera in the cameras
file) is refused with ``409``.

Tokens are compared in constant time and never logged: log lines carry the bed, the client's
address and the outcome only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aioice.ice
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from icu.contracts import CameraState
from icu.settings import BED_ID_PATTERN
from ingest.auth import bearer_token
from ingest.camera import CameraFeed, StreamClock
from ingest.settings import IngestSettings

log = logging.getLogger(__name__)

MAX_SDP_BYTES = 64 * 1024
SDP_TYPE = "application/sdp"

FeedFactory = Callable[[str], CameraFeed]


@dataclass
class WhipSession:
    session_id: str
    bed_id: str
    pc: RTCPeerConnection
    feed: CameraFeed
    peer: str
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def pin_ice_host_addresses(addresses: tuple[str, ...]) -> None:
    """Offer only ``addresses`` as ICE host candidates (aioice otherwise offers every interface
    except loopback). Process-wide, as aioice gathers in a module function."""
    if not addresses:
        return
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def sdp_problem(sdp: str) -> str | None:
    """Why ``sdp`` cannot be a camera's offer, or None. aiortc's own parser gives the rest."""
    if not sdp.strip():
        return "empty body: expected an SDP offer"
    if not sdp.lstrip().startswith("v=0"):
        return "not an SDP offer (must start with 'v=0')"
    if "\nm=video " not in sdp.replace("\r\n", "\n"):
        return "the offer has no video media section (m=video)"
    return None


class WhipServer:
    """The WHIP resources for every bed. ``feed_for`` gives the camera feed of a bed."""

    def __init__(self, settings: IngestSettings, feed_for: FeedFactory, retire: Callable[[CameraFeed], None]) -> None:
        self.settings = settings
        self.feed_for = feed_for
        self.retire = retire
        self._negotiating = 0
        # JPEG work off the event loop, so RTCP, ICE consent and HTTP never wait on it.
        self._encoder = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="whip-encode")
        self.sessions: dict[str, WhipSession] = {}
        self.by_bed: dict[str, str] = {}
        self.feeds: dict[str, CameraFeed] = {}
        self.rejected = 0
        pin_ice_host_addresses(settings.whip_ice_addresses)
        if not settings.token_table():
            log.warning("ICU_WHIP_TOKENS is empty: every WHIP publish will be refused with 401")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_SDP_BYTES, middlewares=[self._cors])
        app.router.add_route("OPTIONS", "/whip/{bed_id}", self.options)
        app.router.add_post("/whip/{bed_id}", self.publish)
        app.router.add_route("OPTIONS", "/whip/{bed_id}/sessions/{session_id}", self.options)
        app.router.add_delete("/whip/{bed_id}/sessions/{session_id}", self.delete)
        app.router.add_patch("/whip/{bed_id}/sessions/{session_id}", self.patch)
        app.router.add_get("/healthz", self.health)
        app.on_shutdown.append(self._shutdown)
        return app

    # --- HTTP handlers ----------------------------------------------------------------------

    @web.middleware
    async def _cors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        response.headers["Access-Control-Allow-Origin"] = self.settings.whip_cors_origin
        response.headers["Access-Control-Expose-Headers"] = "Location, Link, ETag, Accept-Post"
        return response

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(
            status=204,
            headers={
                "Accept-Post": SDP_TYPE,
                "Access-Control-Allow-Methods": "OPTIONS, POST, DELETE",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
                "Access-Control-Max-Age": "86400",
            },
        )

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(self.sessions)})

    async def patch(self, _request: web.Request) -> web.Response:
        response = _problem(405, "trickle ICE and ICE restarts are not supported; send a complete offer")
        response.headers["Allow"] = "OPTIONS, DELETE"
        return response

    def _authorised(self, request: web.Request, bed_id: str) -> bool:
        return self.settings.token_allows(bed_id, bearer_token(request.headers.get("Authorization")))

    def _refuse(self, request: web.Request, bed_id: str, status: int, reason: str) -> web.Response:
        self.rejected += 1
        log.warning("WHIP %s %s from %s refused (%d): %s", request.method, bed_id, request.remote, status, reason)
        response = _problem(status, reason)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="icu-watch whip"'
        return response

    async def publish(self, request: web.Request) -> web.Response:
        bed_id = request.match_info["bed_id"]
        if not BED_ID_PATTERN.match(bed_id):
            return self._refuse(request, bed_id[:64], 404, "not a bed id")
        if not self._authorised(request, bed_id):
            return self._refuse(request, bed_id, 401, "missing or wrong bearer token")
        if not self.settings.is_known_bed(bed_id):
            return self._refuse(request, bed_id, 404, f"bed {bed_id} is not in ICU_BEDS")
        if request.content_type != SDP_TYPE:
            return self._refuse(request, bed_id, 415, f"Content-Type must be {SDP_TYPE}")
        try:
            sdp = (await request.read()).decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse(request, bed_id, 400, "SDP offer is not UTF-8 text")
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, bed_id, 413, f"SDP offer larger than {MAX_SDP_BYTES} bytes")
        problem = sdp_problem(sdp)
        if problem is not None:
            return self._refuse(request, bed_id, 400, problem)
        try:
            feed = self._feed(bed_id)
        except ValueError as exc:
            return self._refuse(request, bed_id, 409, str(exc))
        if bed_id not in self.by_bed and len(self.sessions) + self._negotiating >= self.settings.whip_max_sessions:
            return self._refuse(request, bed_id, 503, "too many WHIP sessions on this ingest process")

        self._negotiating += 1  # counted against the cap while ICE gathers (concurrent POSTs)
        try:
            pc = await self._answer(sdp)
        except Exception as exc:
            # aiortc raises ValueError (and a few others) for SDP it cannot use.
            return self._refuse(request, bed_id, 400, f"unusable SDP offer: {exc}"[:300])
        finally:
            self._negotiating -= 1

        # Read only now: another publisher for this bed may have registered while we negotiated.
        replaced = False
        while (replacing := self.by_bed.get(bed_id)) is not None:
            log.warning("WHIP bed %s: a new publisher from %s replaces session %s", bed_id, request.remote, replacing)
            await self._end(replacing, reason="replaced by a new publisher", outcome=None)
            replaced = True
        if replaced:
            feed.mark_replaced("a new WHIP publisher replaced the previous session; waiting for media")
        else:
            feed.mark_connecting("WHIP session negotiated; waiting for media")
        session = WhipSession(uuid.uuid4().hex, bed_id, pc, feed, str(request.remote))
        self.sessions[session.session_id] = session
        self.by_bed[bed_id] = session.session_id
        self._watch(session)
        location = f"/whip/{bed_id}/sessions/{session.session_id}"
        log.info("WHIP bed %s: session %s from %s", bed_id, session.session_id, request.remote)
        assert pc.localDescription is not None
        return web.Response(
            status=201,
            body=pc.localDescription.sdp.encode(),
            headers={"Location": location, "Content-Type": SDP_TYPE},
        )

    async def _answer(self, sdp: str) -> RTCPeerConnection:
        """Negotiate a receive-only peer connection for ``sdp``; closes it again on failure."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if not any(t.kind == "video" for t in pc.getTransceivers()):
                raise ValueError("the offer has no video media section")
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.direction = "recvonly"
            await pc.setLocalDescription(await pc.createAnswer())  # non-trickle: gathers every candidate
        except BaseException:
            await pc.close()
            raise
        return pc

    def _feed(self, bed_id: str) -> CameraFeed:
        """The bed's WHIP camera feed, created on first use. ValueError when the bed already has
        a camera of another kind in this process (e.g. an RTSP camera in the same cameras file)."""
        feed = self.feeds.get(bed_id)
        if feed is None:
            feed = self.feeds[bed_id] = self.feed_for(bed_id)
        return feed

    async def delete(self, request: web.Request) -> web.Response:
        bed_id = request.match_info["bed_id"]
        session = self.sessions.get(request.match_info["session_id"])
        if not self._authorised(request, bed_id):
            return self._refuse(request, bed_id, 401, "missing or wrong bearer token")
        if session is None or session.bed_id != bed_id:
            return _problem(404, "no such WHIP session")
        await self._end(session.session_id, reason="publisher ended the session", outcome=CameraState.STOPPED)
        return web.Response(status=200)

    # --- sessions ---------------------------------------------------------------------------

    def _watch(self, session: WhipSession) -> None:
        pc = session.pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                task = asyncio.ensure_future(self._consume(session, track))
                session.tasks.add(task)
                task.add_done_callback(session.tasks.discard)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "failed" and session.session_id in self.sessions:
                await self._end(session.session_id, reason="WebRTC connection failed", outcome=CameraState.LOST)

        # Tracks were created by setRemoteDescription, before this handler existed.
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video" and transceiver.receiver.track is not None:
                on_track(transceiver.receiver.track)

    async def _consume(self, session: WhipSession, track: MediaStreamTrack) -> None:
        """Take every frame as it arrives (aiortc's own queue must not grow) and hand kept ones
        to the encoder pool, at most one per session at a time: while one is being encoded,
        newer kept frames are dropped and counted (latest-frame-wins, never a backlog)."""
        clock = StreamClock()
        feed = session.feed
        loop = asyncio.get_running_loop()
        encoding: asyncio.Future[None] | None = None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            if not isinstance(frame, VideoFrame):
                continue
            capture_ts = clock.capture_ts(frame.time, datetime.now(UTC))
            seq = feed.accept(capture_ts)
            if seq is None:
                continue
            if encoding is not None and not encoding.done():
                feed.slot.count_dropped()
                continue
            encoding = loop.run_in_executor(self._encoder, feed.encode_into_slot, frame, capture_ts, seq)
            encoding.add_done_callback(_log_failure)
        if session.session_id in self.sessions:
            await self._end(session.session_id, reason="the camera's video track ended", outcome=CameraState.LOST)

    async def _end(self, session_id: str, *, reason: str, outcome: CameraState | None) -> None:
        """Close a session. ``outcome`` is the bed's camera state afterwards (stopped for a DELETE,
        lost for a failure), None when a new session takes over the bed."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        if self.by_bed.get(session.bed_id) == session_id:
            del self.by_bed[session.bed_id]
            if outcome is CameraState.STOPPED:
                session.feed.mark_stopped(reason)
                # Ended on purpose: publish its final status, then forget the feed, so beds that
                # come and go do not accumulate.
                self.retire(session.feed)
                self.feeds.pop(session.bed_id, None)
            elif outcome is CameraState.LOST:
                session.feed.mark_lost(reason)  # kept: a lost camera stays visible as lost
        log.info("WHIP bed %s: session %s ended (%s)", session.bed_id, session_id, reason)
        current = asyncio.current_task()
        for task in list(session.tasks):
            if task is not current:  # the track consumer may be the one ending its own session
                task.cancel()
        # Shielded: if the caller is cancelled, the peer connection (sockets, ICE, DTLS) still closes.
        await asyncio.shield(session.pc.close())

    async def _shutdown(self, _app: web.Application) -> None:
        for session_id in list(self.sessions):
            await self._end(session_id, reason="ingest stopped", outcome=CameraState.STOPPED)
        self._encoder.shutdown(wait=True)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("encoding a WHIP frame failed", exc_info=future.exception())


def _problem(status: int, reason: str) -> web.Response:
    return web.Response(status=status, text=reason + "\n", content_type="text/plain")
