"""`icu bench all`: every stage's benchmark in one run, and one table of its figures.

Two parts:

- **pure**: :func:`rows_from` turns each stage's result (the dicts the per-stage benchmarks
  return, as `icu bench <stage>` prints them) into :class:`Row` s, each figure beside the limit it
  is measured against (a raw limit measured in the same run, or the project's target) and their
  ratio; :func:`format_table` writes them as a Markdown table. A stage that failed, or a figure
  missing from its result, becomes a row saying ``failed: <reason>``.
- **runner**: :func:`bench_all` calls the stages in turn with sizes that fit the time budget
  (``quick``: minutes on 2 CPU cores), records each stage's exception instead of stopping, and
  returns the results, the rows and a description of the machine.

The ratio is always value / limit; the Limit column says which way the target points
("target >= 5,000 msg/s", "target <= 1.5 s"), and the Ratio column says whether it is met.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

STAGES = ("broker", "db", "sim", "ingest", "inference", "alerts", "dashboard")
DATABASE_STAGES = frozenset({"db", "dashboard"})

# The targets, where a stage's result does not carry its own.
INGEST_TARGET_CAMERAS_PER_CORE = 32
INFERENCE_TARGET_CPU_BEDS = 8  # at 10 fps, on 2 CPU cores
INFERENCE_TARGET_GPU_BEDS = 300  # at 10 fps, per GPU
ALERTS_TARGET_MSGS_PER_S = 5000
ALERTS_TARGET_P99_MS = 1000
DASHBOARD_TARGET_WARD_S = 1.5
SIM_TARGET_RENDER_MS = 2.0

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Row:
    """One figure of the table. ``ratio`` is ``value / limit``; ``target_met`` is set where the
    limit is a target (``None`` where it is a raw limit or there is none)."""

    stage: str
    figure: str
    value: float | None
    unit: str
    limit: float | None = None
    limit_label: str = ""
    ratio: float | None = None
    note: str = ""
    target_met: bool | None = None

    @property
    def failed(self) -> bool:
        return self.value is None


class _Missing(Exception):
    """A figure absent from a stage's result (or not a number)."""


def _pick(result: dict[str, Any], path: str) -> float:
    node: Any = result
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise _Missing(f"missing '{path}'")
        node = node[key]
    if node is None:
        raise _Missing(f"'{path}' is null")
    if isinstance(node, bool) or not isinstance(node, int | float):
        raise _Missing(f"'{path}' is not a number: {node!r}")
    return float(node)


def _label(value: object) -> str:
    """A size from a result, for a figure's name: 10.0 as 10, 12000 as 12,000."""
    if isinstance(value, float):
        return f"{value:g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _sub(result: dict[str, Any], key: str) -> dict[str, Any]:
    node = result.get(key)
    return node if isinstance(node, dict) else {}


def _num(value: float, *, whole: bool = True) -> str:
    """A figure as a person reads it: thousands separators, about three significant digits;
    whole numbers without decimals unless ``whole`` is false (a ratio of 1 reads 1.00)."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    magnitude = abs(value)
    if whole and value == int(value) and magnitude < 1e15:
        return f"{int(value):,}"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    decimals = 1 - math.floor(math.log10(magnitude))  # two significant digits
    return f"{value:.{max(2, decimals)}f}"


def _figure(
    stage: str,
    figure: str,
    unit: str,
    result: dict[str, Any],
    value: str,
    *,
    limit: str | float | None = None,
    limit_label: str = "",
    better: Better | None = None,
    note: str = "",
) -> Row:
    """A row for ``result[value]`` (a dotted path) against ``limit`` (a path or a constant);
    ``limit_label`` may name the limit as ``{limit}``; ``better`` marks the limit as a target."""
    try:
        number = _pick(result, value)
        bound = _pick(result, limit) if isinstance(limit, str) else limit
    except _Missing as exc:
        return Row(stage, figure, None, unit, note=f"failed: {exc}")
    ratio = number / bound if bound else None
    met = None
    if better is not None and ratio is not None:
        met = ratio >= 1 if better == "higher" else ratio <= 1
    label = limit_label.format(limit=_num(bound)) if bound is not None else limit_label
    return Row(stage, figure, number, unit, bound, label, ratio, note, met)


def _failed(stage: str, figure: str, reason: str) -> Row:
    return Row(stage, figure, None, "", note=f"failed: {reason}")


# --- one function per stage: its result dict, as the stage's bench function returns it -------


def _broker_rows(r: dict[str, Any]) -> list[Row]:
    s = "broker"
    topics = f"create {r.get('topics', '?')} topics, {r.get('partitions_total', '?')} partitions"
    return [
        _figure(s, "embedded broker start to listening", "ms", r, "broker_start_ms_median"),
        _figure(s, topics, "ms", r, "topics_create_ms_median"),
    ]


def _db_rows(r: dict[str, Any]) -> list[Row]:
    s = "db"
    raw = "raw COPY {limit} rows/s (same run)"
    note = (
        f"{_label(r.get('rows', '?'))} rows, batches of {_label(r.get('batch', '?'))}, {r.get('backend', '?')} tables"
    )
    return [
        _figure(s, "raw COPY into vitals", "rows/s", r, "raw_copy_rows_per_s_median", limit_label="limit", note=note),
        _figure(
            s,
            "write path, new batches",
            "rows/s",
            r,
            "write_path_rows_per_s_median",
            limit="raw_copy_rows_per_s_median",
            limit_label=raw,
        ),
        _figure(
            s,
            "write path, redelivered batches",
            "rows/s",
            r,
            "redelivered_rows_per_s_median",
            limit="raw_copy_rows_per_s_median",
            limit_label=raw,
        ),
    ]


def _sim_rows(r: dict[str, Any]) -> list[Row]:
    s = "sim"
    size = r.get("size", "?")
    return [
        _figure(
            s,
            f"render one {size} frame, one core",
            "ms",
            r,
            "render_ms_per_frame_median",
            limit=r.get("render_target_ms", SIM_TARGET_RENDER_MS),
            limit_label="target <= {limit} ms",
            better="lower",
        ),
        _figure(s, "JPEG-encode one frame", "ms", r, "jpeg_encode_ms_per_frame_median"),
    ]


def _ingest_rows(r: dict[str, Any]) -> list[Row]:
    s = "ingest"
    cameras, fps = r.get("cameras", "?"), r.get("fps_per_camera", "?")
    target = _sub(r, "realtime").get("target_cameras_per_core", INGEST_TARGET_CAMERAS_PER_CORE)
    return [
        _figure(
            s,
            f"{cameras} cameras at {_label(fps)} fps, paced: delivered",
            "frames/s",
            r,
            "realtime.frames_per_s_delivered",
            limit="realtime.frames_per_s_offered",
            limit_label="offered {limit} frames/s (same run)",
        ),
        _figure(
            s,
            "cameras per core at that pace",
            "cameras/core",
            r,
            "realtime.cameras_per_core_at_fps",
            limit=target,
            limit_label="target >= {limit} cameras/core",
            better="higher",
            note="ingest process CPU only; the broker's is not counted",
        ),
        _figure(s, "capture to broker ack, p50", "ms", r, "realtime.capture_to_broker_p50_ms"),
        _figure(s, "capture to broker ack, p99", "ms", r, "realtime.capture_to_broker_p99_ms"),
        _figure(
            s,
            "unpaced (decode as fast as possible)",
            "frames/s",
            r,
            "unpaced.frames_per_s",
            limit="raw_producer.msgs_per_s",
            limit_label="raw producer {limit} msg/s (same run)",
        ),
        _figure(
            s,
            "raw kafka-python producer, same message size",
            "msg/s",
            r,
            "raw_producer.msgs_per_s",
            limit_label="limit",
        ),
    ]


def _best_encoder(r: dict[str, Any]) -> tuple[str, float]:
    """The raw encoder's largest frames/s over batch sizes, and that batch."""
    by_batch = _sub(_sub(r, "raw"), "encode_frames_per_s_by_batch")
    numbers = {
        batch: float(v) for batch, v in by_batch.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if not numbers:
        raise _Missing("missing 'raw.encode_frames_per_s_by_batch'")
    return max(numbers.items(), key=lambda item: item[1])


def _best_grimace(r: dict[str, Any]) -> float | None:
    """The grimace detector's largest frames/s over batch sizes (None: the model has none)."""
    by_batch = _sub(r, "raw").get("grimace_frames_per_s_by_batch")
    if not isinstance(by_batch, dict):
        return None
    numbers = [float(v) for v in by_batch.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    return max(numbers) if numbers else None


def _inference_rows(r: dict[str, Any]) -> list[Row]:
    s = "inference"
    device = str(r.get("device", "cpu"))
    beds = r.get("beds", "?")
    gpu = device.startswith("cuda")
    target_beds = INFERENCE_TARGET_GPU_BEDS if gpu else INFERENCE_TARGET_CPU_BEDS
    kept_up = ""
    if isinstance(r.get("live_kept_up"), bool):
        kept_up = "kept up" if r["live_kept_up"] else "fell behind"
        kept_up += " (the bench's test: at least 99% of the frames sent were processed)"
    try:
        batch, best = _best_encoder(r)
    except _Missing as exc:
        encoder = _failed(s, "raw model: per-frame encoder", str(exc))
        vs_raw = _failed(s, "worker unpaced vs the raw encoder", str(exc))
    else:
        # A frame costs the encoder and, when the weights carry one, the grimace detector too.
        grimace = _best_grimace(r)
        per_frame = best if grimace is None else 1.0 / (1.0 / best + 1.0 / grimace)
        with_best = {**r, "_best_encoder": best, "_raw_per_frame": round(per_frame, 1)}
        encoder = _figure(
            s,
            f"raw model ({device}): per-frame encoder, batch {batch}",
            "frames/s",
            with_best,
            "_best_encoder",
            limit_label="limit",
        )
        vs_raw = _figure(
            s,
            "worker unpaced (sustained)",
            "frames/s",
            with_best,
            "worker_unpaced.frames_processed_per_s",
            limit="_raw_per_frame",
            limit_label=(
                "raw encoder {limit} frames/s (same run)"
                if grimace is None
                else "raw encoder + grimace detector {limit} frames/s (same run)"
            ),
        )
    return [
        encoder,
        _figure(
            s,
            f"worker, {beds} beds at 10 fps, paced",
            "frames/s",
            r,
            "worker_live.frames_processed_per_s",
            limit="worker_live.frames_offered_per_s",
            limit_label="offered {limit} frames/s (same run)",
            note=kept_up,
        ),
        vs_raw,
        _figure(
            s,
            "worker unpaced (sustained)",
            "frames/s",
            r,
            "worker_unpaced.frames_processed_per_s",
            limit=target_beds * 10.0,
            better="higher",
            limit_label=f"target >= {target_beds} beds at 10 fps = {{limit}} frames/s ({'GPU' if gpu else 'CPU'})",
        ),
    ]


def _alerts_rows(r: dict[str, Any]) -> list[Row]:
    s = "alerts"
    target = _sub(r, "targets").get("messages_per_s", ALERTS_TARGET_MSGS_PER_S)
    messages = _label(r.get("worker_messages", "?"))
    rows = [
        _figure(
            s,
            f"one alerts worker (Faust), {messages} messages",
            "msg/s",
            r,
            "worker_messages_per_s",
            limit="raw_consume_produce_messages_per_s",
            limit_label="raw loop {limit} msg/s (same run)",
        ),
        _figure(
            s,
            f"one alerts worker (Faust), {messages} messages",
            "msg/s",
            r,
            "worker_messages_per_s",
            limit=target,
            limit_label="target >= {limit} msg/s",
            better="higher",
        ),
        _figure(
            s,
            "raw kafka-python consume-produce loop, same records",
            "msg/s",
            r,
            "raw_consume_produce_messages_per_s",
            limit_label="limit",
        ),
    ]
    if r.get("faust_noop_messages_per_s") is not None:  # results from before the ceiling was measured lack it
        rows.insert(
            1,
            _figure(
                s,
                f"one alerts worker (Faust), {messages} messages",
                "msg/s",
                r,
                "worker_messages_per_s",
                limit="faust_noop_messages_per_s",
                limit_label="Faust's ceiling {limit} msg/s (same run)",
                note="Faust's ceiling: a Faust app with the worker's settings and subscription whose agent only "
                "counts the events (no decoding, rules or table), over the same records",
            ),
        )
    return rows


def _dashboard_rows(r: dict[str, Any]) -> list[Row]:
    s = "dashboard"
    data = f"{r.get('beds', '?')} beds x {_label(r.get('hours', '?'))} h"
    return [
        _figure(
            s,
            f"ward page render, {data}",
            "s",
            r,
            "ward_render_s_median",
            limit=r.get("ward_target_s", DASHBOARD_TARGET_WARD_S),
            limit_label="target <= {limit} s",
            better="lower",
            note="server side (AppTest: queries, core, element tree), no browser",
        ),
        _figure(s, f"patient page render, {r.get('patient_span', '24 h')} span", "s", r, "patient_render_s_median"),
    ]


def _end_to_end_rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    s = "end-to-end"
    rows: list[Row] = []
    frame = "frame capture -> detection"
    frame_note = (
        "from the capture time of a window's newest frame to the detection's inference time, frames published "
        "to the broker at 10 fps per bed (the first 5 s left out); the camera-to-broker leg is ingest's "
        "capture-to-broker-ack row"
    )
    inference = results.get("inference")
    if inference is not None:
        if "error" in inference:
            rows.append(_failed(s, frame, f"inference stage: {inference['error']}"))
        else:
            for q in ("p50", "p99"):
                rows.append(
                    _figure(s, f"{frame}, {q}", "ms", inference, f"worker_live.window_latency_{q}_ms", note=frame_note)
                )
    vital = "threshold-crossing vital -> alert"
    alerts = results.get("alerts")
    if alerts is not None:
        if "error" in alerts:
            rows.append(_failed(s, vital, f"alerts stage: {alerts['error']}"))
        else:
            count = alerts.get("latency_alerts", "?")
            note = (
                f"{count} NEWS2 alerts: from the wall time the reading that moves the last minute's median "
                "across the band is sent to the wall time the alert's first version arrives on alerts"
            )
            target = _sub(alerts, "targets").get("p99_ms", ALERTS_TARGET_P99_MS)
            rows.append(_figure(s, f"{vital}, p50", "ms", alerts, "vitals_to_alert_p50_ms", note=note))
            rows.append(
                _figure(
                    s,
                    f"{vital}, p99",
                    "ms",
                    alerts,
                    "vitals_to_alert_p99_ms",
                    limit=target,
                    limit_label="p99 target <= {limit} ms",
                    better="lower",
                    note=note,
                )
            )
    return rows


_STAGE_ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "broker": _broker_rows,
    "db": _db_rows,
    "sim": _sim_rows,
    "ingest": _ingest_rows,
    "inference": _inference_rows,
    "alerts": _alerts_rows,
    "dashboard": _dashboard_rows,
}


def rows_from(results: dict[str, dict[str, Any]]) -> list[Row]:
    """The table's rows for ``{stage: result}``, in the order given, then the end-to-end latencies.

    A result ``{"error": reason}`` (a stage that raised) gives one ``failed: reason`` row; a
    figure missing from a result gives a ``failed: missing '<key>'`` row; neither raises."""
    rows: list[Row] = []
    for stage, result in results.items():
        if not isinstance(result, dict):
            rows.append(_failed(stage, "(stage)", f"result is not a dict: {result!r}"))
        elif "error" in result:
            rows.append(_failed(stage, "(stage)", str(result["error"])))
        elif stage not in _STAGE_ROWS:
            rows.append(_failed(stage, "(stage)", "unknown stage"))
        else:
            try:
                rows.extend(_STAGE_ROWS[stage](result))
            except Exception as exc:  # a result of an unexpected shape: say so in the table
                rows.append(_failed(stage, "(stage)", f"unreadable result: {type(exc).__name__}: {exc}"))
    rows.extend(_end_to_end_rows(results))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_table(rows: list[Row]) -> str:
    """A Markdown table (Stage | Figure | Value | Limit | Ratio); notes follow it, numbered."""
    lines = ["| Stage | Figure | Value | Limit | Ratio |", "|---|---|---|---|---|"]
    notes: list[str] = []
    for row in rows:
        figure = row.figure
        if row.value is None:
            value = row.note or "failed"
        else:
            value = f"{_num(row.value)} {row.unit}".strip()
            if row.note:
                if row.note not in notes:
                    notes.append(row.note)
                figure += f" [{notes.index(row.note) + 1}]"
        ratio = ""
        if row.ratio is not None:
            ratio = f"{_num(row.ratio, whole=False)}x"
            if row.target_met is not None:
                ratio += ", met" if row.target_met else ", **not met**"
        cells = (row.stage, figure, value, row.limit_label, ratio)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.extend(["", *(f"{i}. {note}" for i, note in enumerate(notes, 1))] if notes else [])
    return "\n".join(lines) + "\n"


# --- the runner -------------------------------------------------------------------------------


def stage_sizes(*, quick: bool) -> dict[str, dict[str, Any]]:
    """Keyword arguments per stage. ``quick`` took 2.5 minutes on 2 CPU cores (the alerts latency
    run alone takes 60 s by design); the default is about three times that. The dashboard's data
    is smaller than its own benchmark's (32 beds x 24 h take 2 minutes just to seed), so its
    render times are lower than at 24 h."""
    if quick:
        return {
            "broker": {"repeats": 3},
            "db": {"rows": 50_000, "batch": 5_000, "repeats": 3},
            "sim": {"frames": 300, "repeats": 3},
            "ingest": {"cameras": 32, "seconds": 5.0, "repeats": 1},
            "inference": {"beds": 8, "seconds": 12.0},
            "alerts": {"beds": 100, "seconds": 120.0, "latency_beds": 20},
            "dashboard": {"beds": 32, "hours": 1.0, "repeats": 3},
        }
    return {
        "broker": {"repeats": 5},
        "db": {"rows": 200_000, "batch": 5_000, "repeats": 5},
        "sim": {"frames": 600, "repeats": 5},
        "ingest": {"cameras": 32, "seconds": 10.0, "repeats": 3},
        "inference": {"beds": 8, "seconds": 20.0},
        "alerts": {"beds": 100, "seconds": 300.0, "latency_beds": 40},
        "dashboard": {"beds": 32, "hours": 6.0, "repeats": 5},
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    try:
        import torch
    except ImportError:
        info["torch_device"] = None
    else:
        cuda = torch.cuda.is_available()
        info["torch"] = torch.__version__
        info["torch_device"] = "cuda" if cuda else "cpu"
        info["torch_threads"] = torch.get_num_threads()
        if cuda:
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


@contextmanager
def _embedded_postgres() -> Iterator[str]:
    import tempfile

    from infra.postgres import EmbeddedPostgres

    with (
        tempfile.TemporaryDirectory(prefix="icu-bench-all-") as tmp,
        EmbeddedPostgres(Path(tmp) / "data", port=0, database="icu_bench") as server,
    ):
        yield server.url()


def _run_stage(
    name: str, sizes: dict[str, Any], *, database_url: str | None, weights: Path | None, device: str
) -> dict[str, Any]:
    # Imported per stage: torch, Faust and Streamlit are slow to import and only some stages need them.
    if name == "broker":
        from infra.bench import bench_broker

        return bench_broker(**sizes)
    if name == "db":
        from infra.bench import bench_db

        assert database_url is not None
        return bench_db(database_url, **sizes)
    if name == "sim":
        from simulator.bench import bench_render

        return bench_render(**sizes)
    if name == "ingest":
        from ingest.bench import bench_ingest

        return bench_ingest(**sizes)
    if name == "inference":
        from inference.bench import bench_inference

        return bench_inference(**sizes, weights=weights, device=device)
    if name == "alerts":
        from alerts.bench import bench_alerts

        return bench_alerts(**sizes)
    if name == "dashboard":
        from dashboard.bench import bench_dashboard

        return bench_dashboard(database_url=database_url, **sizes)
    raise ValueError(f"unknown stage {name!r}")


def bench_all(
    *,
    quick: bool,
    stages: list[str] | None,
    database_url: str | None,
    weights: Path | None = None,
    device: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``stages`` (default: all of :data:`STAGES`, in that order) one after the other.

    ``database_url`` is where the db and dashboard stages create (and drop) their scratch
    databases; without one, an embedded PostgreSQL is started for them in a temporary folder.
    Each stage's exception is logged with its traceback and recorded as ``{"error": ...}``; the
    others still run. ``progress`` receives one line per stage start and end (default: the log).
    """
    say = progress or log.info
    chosen = list(STAGES) if stages is None else stages
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    sizes = stage_sizes(quick=quick)
    started_at = datetime.now(UTC)
    began = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    with ExitStack() as stack:
        url = database_url
        for index, name in enumerate(chosen, 1):
            say(f"[{index}/{len(chosen)}] {name}: {sizes[name]} (at {time.monotonic() - began:.0f} s)")
            stage_began = time.monotonic()
            try:
                if name in DATABASE_STAGES and url is None:
                    say("  starting an embedded PostgreSQL for the database stages")
                    url = stack.enter_context(_embedded_postgres())
                results[name] = _run_stage(name, sizes[name], database_url=url, weights=weights, device=device)
            except Exception as exc:  # a failed stage is a row of the table, not the end of the run
                log.exception("bench stage %s failed", name)
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            seconds[name] = round(time.monotonic() - stage_began, 1)
            state = "failed" if "error" in results[name] else "done"
            say(f"[{index}/{len(chosen)}] {name}: {state} in {seconds[name]:.1f} s")
    rows = rows_from(results)
    return {
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "quick": quick,
        "machine": machine(),
        "sizes": {name: sizes[name] for name in chosen},
        "seconds": seconds,
        "stages": results,
        "rows": [asdict(row) for row in rows],
        "table": format_table(rows),
    }
