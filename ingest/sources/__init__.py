"""Video sources: each decodes frames in its own thread and offers them to a :class:`CameraFeed`."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from ingest import IngestError


class SourceError(IngestError):
    """A source that cannot work as configured (no such file, not a video); the message says why."""


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_QUERY = re.compile(r"(?i)((?:^|[?&;])[^=&;]*(?:pass|pwd|token|secret|key|auth|sig)[^=&;]*=)[^&;#\s]*")


def redact_url(url: str) -> str:
    """The URL with user:password and secret-looking query values replaced, safe for logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub("***@", url))
    netloc = parts.netloc
    if "@" in netloc:
        # Keep the host exactly as written (IPv6 brackets, odd ports) rather than re-parsing it.
        netloc = "***@" + netloc.rpartition("@")[2]
    query = _SECRET_QUERY.sub(r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, url: str) -> str:
    """``text`` (e.g. an FFmpeg error) with the URL's secrets removed wherever they appear."""
    text = text.replace(url, redact_url(url))
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")
    return _USERINFO.sub("***@", text)
