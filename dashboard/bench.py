"""`icu bench dashboard`: page render time with a full ward's day of data.

Seeds a scratch database with the known ward scenario (:mod:`dashboard.seed`), then renders the
ward and patient pages with Streamlit's AppTest: the same script run a browser session triggers
(queries, core, element tree), minus the websocket and the browser's drawing. Figures are medians
over repeats after one warm-up render (which pays the imports)."""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.conninfo import make_conninfo

from dashboard.seed import seed_ward
from infra.db.migrate import connect, migrate
from infra.postgres import EmbeddedPostgres

WARD_TARGET_S = 1.5


@contextmanager
def scratch_database(url: str | None) -> Iterator[str]:
    """A new database beside ``url``'s (dropped afterwards), or an embedded PostgreSQL when None."""
    if url is None:
        with tempfile.TemporaryDirectory(prefix="icu-bench-dashboard-") as tmp, EmbeddedPostgres(
            Path(tmp) / "data", port=0, database="icu_bench"
        ) as server:  # fmt: skip
            yield server.url()
        return
    name = f"icu_bench_{uuid.uuid4().hex[:8]}"
    with connect(url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(url, dbname=name)
    finally:
        with connect(url) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _render_times(page: str, repeats: int, session: dict[str, Any]) -> list[float]:
    from streamlit.testing.v1 import AppTest

    times = []
    for _ in range(repeats + 1):
        at = AppTest.from_string(f"from dashboard.app import main\nmain(page={page!r})", default_timeout=120)
        for key, value in session.items():
            at.session_state[key] = value
        began = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - began)
        if at.exception:
            raise RuntimeError(f"the {page} page failed: {at.exception[0].message}")
    return times[1:]  # the first run pays imports and cache fills


def bench_dashboard(
    *, database_url: str | None, beds: int, hours: float, repeats: int, screenshots: Path | None = None
) -> dict[str, Any]:
    import streamlit as st

    # AppTest renders outside a Streamlit server; its 'missing ScriptRunContext' warnings say
    # nothing about the pages and would bury the figures.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
    with scratch_database(database_url) as url:
        report = migrate(url)
        with connect(url) as conn:
            seeded = seed_ward(conn, report.backend, beds=beds, hours=hours)
        saved = {name: os.environ.get(name) for name in ("ICU_DATABASE_URL", "ICU_DEMO")}
        os.environ.update({"ICU_DATABASE_URL": url, "ICU_DEMO": "1"})
        try:
            st.cache_resource.clear()
            ward = _render_times("ward", repeats, {})
            patient_bed = next(bed for bed, profile in seeded.profiles.items() if profile == "apnea")
            patient = _render_times("patient", repeats, {"bed": patient_bed, "span": "24 h"})
            st.cache_resource.clear()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        shots = _screenshots(url, screenshots, patient_bed, seeded.now) if screenshots else []
    ward_median = statistics.median(ward)
    return {
        "backend": report.backend,
        "beds": beds,
        "hours": hours,
        "rows": {
            "vitals": seeded.vitals_rows,
            "detections": seeded.detection_rows,
            "camera_status": seeded.camera_rows,
        },
        "seed_s": seeded.seconds,
        "ward_render_s_median": round(ward_median, 3),
        "ward_target_s": WARD_TARGET_S,
        "ward_within_target": ward_median <= WARD_TARGET_S,
        "patient_render_s_median": round(statistics.median(patient), 3),
        "patient_span": "24 h",
        "repeats": repeats,
        "runs": {"ward_s": [round(t, 3) for t in ward], "patient_s": [round(t, 3) for t in patient]},
        "screenshots": [str(p) for p in shots],
    }


def _screenshots(url: str, folder: Path, patient_bed: str, seeded_until: datetime) -> list[Path]:
    """Ward and patient pages from Chromium against ``url``'s seeded data.

    The seeded data ends when seeding began, minutes before the screenshots; the staleness
    limits are widened by that age (the lost-vitals limit stays), so the beds the scenario makes
    stale or lost are still the only ones flagged, as they would be on a live ward."""
    from dashboard.serve import chromium_page, dashboard_process, log_in, ward_order

    folder.mkdir(parents=True, exist_ok=True)
    age = (datetime.now(UTC) - seeded_until).total_seconds() + 60
    env = {
        "ICU_DATABASE_URL": url,
        "ICU_DEMO": "1",
        "ICU_DASHBOARD_STALE_VITALS_S": str(round(60 + age)),
        "ICU_DASHBOARD_LOST_VITALS_S": str(round(max(300, 90 + age))),
        "ICU_DASHBOARD_STALE_CAMERA_S": str(round(30 + age)),
        "ICU_DASHBOARD_STALE_VIDEO_S": str(round(30 + age)),
    }
    ward_png, patient_png = folder / "dashboard-ward.png", folder / "dashboard-patient.png"
    with (
        tempfile.TemporaryDirectory() as tmp,
        dashboard_process(env, log_file=Path(tmp) / "app.log") as base,
        chromium_page(width=1500, height=1000) as page,
    ):
        log_in(page, base)
        ward_order(page, 8)
        page.wait_for_timeout(500)  # let the fonts settle
        page.screenshot(path=str(ward_png), full_page=False)
        page.set_viewport_size({"width": 1500, "height": 2300})  # the page scrolls inside Streamlit's frame
        page.goto(f"{base}/patient?bed={patient_bed}")
        page.get_by_text(f"Bed {patient_bed}").first.wait_for()
        page.locator("[data-testid='stImage']").first.wait_for()
        page.locator("canvas, svg.marks").nth(5).wait_for()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(patient_png), full_page=True)
    return [ward_png, patient_png]
