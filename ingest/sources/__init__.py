"""Video sources: each decodes frames in its own thread and offers them to a :class:`CameraFeed`."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from ingest import IngestError


class SourceError(IngestError):
    """A source that cannot work as configured (no such file, not a video); the message says why."""


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact_url(url: str) -> str:
    """The URL with any user:password replaced, safe for logs and status messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub("***@", url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def redact_text(text: str, url: str) -> str:
    """``text`` (e.g. an FFmpeg error) with the URL's credentials removed wherever they appear."""
    parts = urlsplit(url)
    text = text.replace(url, redact_url(url))
    for secret in (parts.password, parts.username):
        if secret:
            text = text.replace(secret, "***")
    return _USERINFO.sub("***@", text)
