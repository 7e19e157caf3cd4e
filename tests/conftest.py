"""Isolation every test gets: `icu` commands run in-process reconfigure logging (a handler on the
stderr pytest captures, and closes, per test) and install SIGINT/SIGTERM handlers; both are put
back after each test so later tests, and threads still logging, never write to a closed stream."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator

import pytest

_QUIETED = ("kafka", "aioice")


@pytest.fixture(autouse=True)
def _restore_logging_and_signals() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in _QUIETED}
    signals = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)
        for sig, handler in signals.items():
            signal.signal(sig, handler)
