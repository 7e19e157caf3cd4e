"""A small RTSP server for the integration tests (GStreamer's gst-rtsp-server).

Runs under Debian's ``/usr/bin/python3`` (which has ``gi`` and GstRtspServer), not the venv:

    /usr/bin/python3 tests/integration/rtsp_server.py --port 8554 --path /bed [--user U --password P]

Serves a live H.264 test pattern (``videotestsrc is-live=true ! x264enc tune=zerolatency``) that
runs for as long as the server does, bound to 127.0.0.1 only. Prints ``ready`` on stdout once
listening, exits cleanly on SIGTERM or SIGINT. With ``--user``/``--password`` every request needs
HTTP basic credentials (anything else gets 401). ``--check`` only checks that the GStreamer
elements exist (exit 0) and is how the tests decide whether to skip. The server also exits when
its parent process goes away.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import gi  # type: ignore[import-not-found]

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # type: ignore[import-not-found]  # noqa: E402

ROLE = "user"
ELEMENTS = ("videotestsrc", "videoconvert", "x264enc", "rtph264pay")


def pipeline(width: int, height: int, fps: int) -> str:
    """The media pipeline: a live moving test pattern, encoded for low latency, one keyframe a second."""
    return (
        f"( videotestsrc is-live=true pattern=ball "
        f"! video/x-raw,width={width},height={height},framerate={fps}/1 "
        f"! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=500 "
        f"! video/x-h264,profile=baseline "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def build_server(args: argparse.Namespace) -> GstRtspServer.RTSPServer:
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(pipeline(args.width, args.height, args.fps))
    factory.set_shared(True)

    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", ROLE)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role(ROLE, "media.factory.access", True)
        permissions.add_permission_for_role(ROLE, "media.factory.construct", True)
        factory.set_permissions(permissions)

    server.get_mount_points().add_factory(args.path, factory)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RTSP test server (H.264 test pattern) on 127.0.0.1")
    parser.add_argument("--check", action="store_true", help="only check that the GStreamer elements exist")
    parser.add_argument("--port", type=int)
    parser.add_argument("--path", default="/bed", help="mount path, e.g. /bed")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    args = parser.parse_args(argv)
    if not args.path.startswith("/"):
        parser.error("--path must start with /")

    Gst.init(None)
    missing = [name for name in ELEMENTS if Gst.ElementFactory.find(name) is None]
    if missing:
        print(f"GStreamer elements missing: {', '.join(missing)}", file=sys.stderr, flush=True)
        return 1
    if args.check:
        return 0
    if args.port is None:
        parser.error("--port is required")
    server = build_server(args)
    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    def quit_loop() -> bool:
        loop.quit()
        return bool(GLib.SOURCE_REMOVE)

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, quit_loop)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, quit_loop)
    parent = os.getppid()

    def orphaned() -> bool:
        """Exit with the test run that started us, even if it could not stop us (killed pytest)."""
        if os.getppid() != parent:
            loop.quit()
            return bool(GLib.SOURCE_REMOVE)
        return bool(GLib.SOURCE_CONTINUE)

    GLib.timeout_add_seconds(1, orphaned)
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
