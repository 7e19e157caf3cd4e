"""Running the dashboard as a real `icu dashboard` subprocess and driving it with Chromium: used by
the browser test, the benchmark's screenshots and anyone scripting the app. Playwright (a dev
dependency) drives Debian's /usr/bin/chromium; `playwright install` is never needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from infra.ports import free_port, wait_for_listener

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class ServeError(RuntimeError):
    """The dashboard process did not come up (its log tail is in the message)."""


@contextmanager
def dashboard_process(env: Mapping[str, str], *, log_file: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """`icu dashboard` on a free loopback port with ``env`` (ICU_* variables) added to ours;
    yields its base URL and stops it (SIGINT, then kill) on exit."""
    port = free_port()
    full_env = {**os.environ, **env, "ICU_DASHBOARD_HOST": "127.0.0.1", "ICU_DASHBOARD_PORT": str(port)}
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "icu.cli", "dashboard"], env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        if not wait_for_listener(port, timeout_s=timeout_s) or process.poll() is not None:
            tail = log_file.read_text(errors="replace")[-2000:]
            raise ServeError(f"the dashboard did not start on port {port}:\n{tail}")
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@contextmanager
def chromium_page(*, width: int = 1600, height: int = 1100) -> Iterator[Any]:
    """A Playwright page in a fresh headless Chromium profile."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise ServeError(f"{CHROMIUM} is missing (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="icu-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport={"width": width, "height": height},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            context.close()


def log_in(page: Any, base_url: str, *, user: str | None = None, password: str | None = None) -> None:
    """Open the app and, when credentials are given, log in through its form."""
    page.goto(base_url)
    if user is not None and password is not None:
        page.get_by_role("textbox", name="User").fill(user)
        page.get_by_role("textbox", name="Password").fill(password)
        page.get_by_role("button", name="Log in").click()


def ward_order(page: Any, expected_tiles: int) -> list[str]:
    """Bed ids of the ward's tiles in page order, once ``expected_tiles`` are shown."""
    page.locator(".icu-tile").nth(expected_tiles - 1).wait_for()
    return [str(bed) for bed in page.locator(".icu-tile").evaluate_all("els => els.map(e => e.dataset.bed)")]
