"""The camera ingest process: sources and the WHIP endpoint around one :class:`IngestRunner`."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

from aiohttp import web

from ingest.config import CameraEntry
from ingest.runner import IngestRunner, Source
from ingest.settings import IngestSettings
from ingest.sources.file import FileSource
from ingest.sources.rtsp import RtspSource
from ingest.whip import WhipServer

log = logging.getLogger(__name__)


def source_for(entry: CameraEntry, settings: IngestSettings) -> Source:
    """Build (and for files, check) the source of one cameras-file entry."""
    if entry.rtsp is not None:
        return rtsp_source(entry.rtsp, settings)
    assert entry.file is not None  # guaranteed by CameraEntry
    return FileSource(entry.file, speed=entry.pace, loop=entry.loop)


def rtsp_source(url: str, settings: IngestSettings) -> RtspSource:
    return RtspSource(
        url,
        transport=settings.rtsp_transport,
        open_timeout_s=settings.rtsp_open_timeout_s,
        stall_timeout_s=settings.ingest_stall_after_s,
        backoff_initial_s=settings.rtsp_backoff_initial_s,
        backoff_max_s=settings.rtsp_backoff_max_s,
    )


def add_cameras(runner: IngestRunner, entries: Sequence[CameraEntry]) -> None:
    sources = [(entry, source_for(entry, runner.settings)) for entry in entries]  # all checked before any starts
    for entry, source in sources:
        runner.add_camera(bed_id=entry.bed, camera_id=entry.camera_id, source=source)


class WhipService:
    """Serves the WHIP endpoint on an asyncio loop until ``stop`` is set."""

    def __init__(self, settings: IngestSettings, runner: IngestRunner) -> None:
        self.settings = settings
        self.runner = runner
        self.server = WhipServer(
            settings,
            feed_for=lambda bed: runner.new_feed(bed_id=bed, camera_id=None, source="whip"),
            retire=runner.publisher.remove,
        )
        self.port: int | None = None
        self.ready = threading.Event()

    async def serve(self) -> None:
        app_runner = web.AppRunner(self.server.app(), access_log=None, handle_signals=False)
        await app_runner.setup()
        site = web.TCPSite(app_runner, self.settings.whip_host, self.settings.whip_port)
        try:
            await site.start()
        except OSError as exc:
            await app_runner.cleanup()
            raise OSError(
                f"cannot listen on {self.settings.whip_host}:{self.settings.whip_port} "
                f"(ICU_WHIP_HOST/ICU_WHIP_PORT): {exc.strerror}"
            ) from None
        server = site._server  # aiohttp exposes the bound socket only here
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        log.info("WHIP endpoint: POST http://%s:%d/whip/{bed_id}", self.settings.whip_host, self.port)
        self.ready.set()
        try:
            while not self.runner.stop.is_set():
                await asyncio.sleep(0.2)
        finally:
            await app_runner.cleanup()

    def run(self) -> None:
        asyncio.run(self.serve())

    def start_in_thread(self, timeout_s: float = 10.0) -> threading.Thread:
        """For tests and embedding: serve on a background thread; returns once listening."""
        thread = threading.Thread(target=self.run, name="whip", daemon=True)
        thread.start()
        if not self.ready.wait(timeout_s):
            raise RuntimeError("WHIP endpoint did not start")
        return thread
