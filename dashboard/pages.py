"""The Streamlit pages: thin layouts over :mod:`dashboard.core` (what to say) and
:mod:`dashboard.data` (what the database holds). Each page's live part is a fragment that reruns
every ``ICU_DASHBOARD_REFRESH_S`` seconds, so it stays current without a reload."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.broker import DashboardBroker, PublishError
from dashboard.core import (
    NEWS2_BANDS,
    POINT_COLOURS,
    PRIORITY_COLOURS,
    UNKNOWN_COLOUR,
    AckError,
    AlertRow,
    Event,
    Tile,
    build_ack,
    build_tile,
    build_timeline,
    evidence_for_alert,
    format_age,
    order_alerts,
    order_tiles,
)
from dashboard.settings import DashboardSettings
from icu.contracts import FINDING_THRESHOLD, AckAction

TILES_PER_ROW = 4
SPANS = {"1 h": timedelta(hours=1), "6 h": timedelta(hours=6), "24 h": timedelta(hours=24)}
LAG_GROUPS = ("icu-sink", "icu-infer")  # plus the alerts app's "<prefix>-icu-alerts"

TILE_CSS = """
<style>
.icu-tile {border-radius: 6px; padding: 8px 10px; margin-bottom: 4px; background: #fafafa;
           border: 1px solid #ddd; border-left-width: 10px; font-size: 0.9rem; line-height: 1.35;}
.icu-tile.icu-problem {background: #eceff1; color: #607d8b;}
.icu-head {display: flex; justify-content: space-between; align-items: center;}
.icu-bed {font-weight: 700; font-size: 1.05rem;}
.icu-badge {color: white; border-radius: 4px; padding: 1px 6px; font-weight: 700;}
.icu-age {color: #777; font-size: 0.75rem;}
.icu-stale {color: #9e9e9e; text-decoration: line-through;}
.icu-flag {color: white; background: #455a64; border-radius: 3px; padding: 0 5px; font-weight: 700;
           font-size: 0.75rem; margin-right: 4px;}
.icu-alert {margin-top: 4px; padding: 2px 6px; border-radius: 4px; color: white;}
.icu-finding {color: #b71c1c; font-weight: 700;}
</style>
"""

CHARTS = (("hr", "HR /min"), ("rr", "RR /min"), ("spo2", "SpO₂ %"), ("sbp", "systolic BP mmHg"), ("temp_c", "T °C"))
MEASUREMENT_LABELS = {"hr": "HR", "rr": "RR", "spo2": "SpO₂", "temp_c": "T"}


@dataclass
class Context:
    """What every page needs, built once per script run by :mod:`dashboard.app`."""

    settings: DashboardSettings
    db: data.Database
    broker: DashboardBroker
    user: str
    switch_to_patient: Callable[[], None] | None = None


@st.cache_data(max_entries=256)
def _evidence_image(_db: data.Database, ref: data.EvidenceRow) -> bytes | None:
    """An evidence keyframe: stored once and never changed, so fetched once, not at every refresh
    of every alert's expander (Streamlit runs collapsed expanders too). ``_db`` is not hashed."""
    with _db.connection() as conn:
        return data.evidence_image(conn, ref)


def _now() -> datetime:
    return datetime.now(UTC)


def _ward_filter(ctx: Context, now: datetime) -> str | None:
    with ctx.db.connection() as conn:
        options = data.wards(conn, now)
    if len(options) <= 1:
        return None
    choice = st.sidebar.selectbox("Ward / unit", ["All", *options], key="ward")
    return None if choice == "All" else str(choice)


# --- ward -----------------------------------------------------------------------------------


def _reading_html(tile: Tile, name: str, now: datetime, text: str) -> str:
    reading = tile.readings.get(name)
    if reading is None:
        return f"{MEASUREMENT_LABELS.get(name, name)} <span class='icu-stale'>—</span>"
    css = "" if tile.current.get(name, False) else " class='icu-stale'"
    return f"<span{css}>{text}</span> <span class='icu-age'>{format_age(reading.age_s(now))}</span>"


def tile_html(tile: Tile, now: datetime) -> str:
    """One bed's tile as HTML (escaped; values from the database only)."""
    esc = html.escape
    r = tile.readings
    if tile.news2 is not None:
        partial = "" if tile.news2.complete else "≥"
        stale = "" if tile.news2_current else " (stale)"
        badge = f"NEWS2 {partial}{tile.news2.score} {tile.news2.risk}{stale}"
    else:
        badge = "NEWS2 —"
    parts = []
    for name in ("hr", "rr", "spo2"):
        if name in r:
            parts.append(_reading_html(tile, name, now, f"{MEASUREMENT_LABELS[name]} {float(r[name].value):.0f}"))
        else:
            parts.append(f"{MEASUREMENT_LABELS[name]} —")
    if "sbp" in r:
        dbp = f"/{float(r['dbp'].value):.0f}" if "dbp" in r else ""
        parts.append(_reading_html(tile, "sbp", now, f"BP {float(r['sbp'].value):.0f}{dbp}"))
    else:
        parts.append("BP —")
    parts.append(_reading_html(tile, "temp_c", now, f"T {float(r['temp_c'].value):.1f}") if "temp_c" in r else "T —")
    if r.get("on_oxygen") is not None and bool(r["on_oxygen"].value):
        parts.append("O₂")
    if "consciousness" in r and str(r["consciousness"].value) != "A":
        parts.append(f"ACVPU {esc(str(r['consciousness'].value))}")
    vitals_line = " · ".join(parts)

    if tile.video is not None:
        v = tile.video
        found = ", ".join(tile.findings) if tile.findings else "no findings"
        rr = f"video RR {v.resp_rate:.0f}" if v.resp_rate is not None else "video RR —"
        css = "icu-finding" if tile.findings else ""
        stale_css = "" if tile.video_current else " icu-stale"
        video_line = (
            f"<span class='{css}{stale_css}'>Video: {esc(found)}</span> "
            f"<span class='icu-age'>grimace {v.grimace:.2f} · twitch {v.twitch:.2f} · apnea {v.apnea:.2f} · "
            f"{rr} · {format_age((now - v.ts).total_seconds())}</span>"
        )
    else:
        video_line = "<span class='icu-age'>Video: no findings</span>"

    flags = "".join(f"<span class='icu-flag'>{esc(p)}</span>" for p in tile.problems())
    if tile.vitals != "live" and tile.last_vitals_ts is not None:
        age = format_age((now - tile.last_vitals_ts).total_seconds())
        flags += f"<span class='icu-age'>last vitals {age} ago</span>"
    alert_line = ""
    if tile.top_alert is not None:
        a = tile.top_alert
        more = f" +{tile.open_alerts - 1}" if tile.open_alerts > 1 else ""
        escalated = f" ⬆ escalated L{a.escalation_level}" if a.escalated else ""
        acked = f" ✓ {esc(a.acknowledged_by or '')}" if a.state == "acknowledged" else ""
        alert_line = (
            f"<div class='icu-alert' style='background:{PRIORITY_COLOURS.get(a.priority, UNKNOWN_COLOUR)}'>"
            f"{esc(a.priority.upper())} {esc(a.code)}{escalated}{acked} · "
            f"{format_age((now - a.raised_at).total_seconds())}{more}<br>{esc(a.explanation[:120])}</div>"
        )
    problem = " icu-problem" if tile.data_problem else ""
    return (
        f"<div class='icu-tile{problem}' data-bed='{esc(tile.bed_id)}' style='border-left-color:{tile.colour}'>"
        f"<div class='icu-head'><span class='icu-bed'>{esc(tile.label)}</span>"
        f"<span class='icu-badge' style='background:{tile.colour}'>{esc(badge)}</span></div>"
        f"<div>{vitals_line}</div><div>{video_line}</div>"
        f"{'<div>' + flags + '</div>' if flags else ''}{alert_line}</div>"
    )


def ward_tiles(ctx: Context, now: datetime, ward: str | None) -> list[Tile]:
    with ctx.db.connection() as conn:
        beds = data.ward_beds(conn, now, ward=ward)
        snapshots = data.bed_snapshots(conn, beds, now)
    thresholds = ctx.settings.thresholds()
    return order_tiles(build_tile(s, now, thresholds) for s in snapshots)


def _open_patient(ctx: Context, bed_id: str) -> None:
    st.session_state["bed"] = bed_id
    if ctx.switch_to_patient is not None:
        ctx.switch_to_patient()


def ward_page(ctx: Context) -> None:
    st.markdown(TILE_CSS, unsafe_allow_html=True)
    ward = _ward_filter(ctx, _now())

    @st.fragment(run_every=ctx.settings.dashboard_refresh_s)
    def live() -> None:
        now = _now()
        tiles = ward_tiles(ctx, now, ward)
        attention = sum(1 for t in tiles if t.top_alert is not None and t.top_alert.needs_action)
        problems = sum(1 for t in tiles if t.data_problem)
        st.caption(
            f"{len(tiles)} beds · {attention} with unanswered alerts · {problems} with stale or lost data · "
            f"as of {now:%H:%M:%S} UTC, refreshing every {ctx.settings.dashboard_refresh_s:g} s"
        )
        if not tiles:
            st.info("No beds have reported in the last 24 hours.")
        for start in range(0, len(tiles), TILES_PER_ROW):
            columns = st.columns(TILES_PER_ROW)
            for column, tile in zip(columns, tiles[start : start + TILES_PER_ROW], strict=False):
                with column:
                    st.markdown(tile_html(tile, now), unsafe_allow_html=True)
                    if st.button("Open", key=f"open-{tile.bed_id}", help=f"Patient view of {tile.label}"):
                        _open_patient(ctx, tile.bed_id)

    live()


# --- acknowledgements -------------------------------------------------------------------------


def send_ack(
    ctx: Context, alert: AlertRow, action: AckAction, *, snooze_s: int | None = None, reason: str | None = None
) -> bool:
    """Build, validate and publish one acknowledgement; tell the nurse what happened."""
    try:
        ack = build_ack(
            alert,
            user=ctx.user,
            now=_now(),
            action=action,
            snooze_s=snooze_s,
            reason=reason,
            max_snooze_s=ctx.settings.alert_max_snooze_s,
        )
        ctx.broker.publish_ack(ack)
    except (AckError, PublishError) as exc:
        st.error(f"{alert.bed_id} {alert.code}: {exc}")
        return False
    sent: dict[str, str] = st.session_state.setdefault("sent_acks", {})
    verb = "acknowledged" if action is AckAction.ACKNOWLEDGE else f"snoozed {snooze_s // 60 if snooze_s else 0} min"
    sent[str(alert.alert_id)] = f"{verb} by {ctx.user} at {ack.ts:%H:%M:%S} UTC"
    st.success(f"{alert.bed_id} {alert.code} {verb} as {ctx.user}: sent to alert-acks")
    return True


def _ack_controls(ctx: Context, alert: AlertRow, key: str) -> None:
    pending = st.session_state.get("sent_acks", {}).get(str(alert.alert_id))
    if pending and alert.needs_action:
        st.caption(f"⏳ {pending}; waiting for the alerts service")
    if alert.state == "resolved":
        return
    ack_col, minutes_col, reason_col, snooze_col = st.columns([1.2, 1, 2.2, 1])
    if ack_col.button("Acknowledge", key=f"ack-{key}", type="primary" if alert.needs_action else "secondary"):
        send_ack(ctx, alert, AckAction.ACKNOWLEDGE)
    cap_min = max(1, ctx.settings.alert_max_snooze_s // 60)
    minutes = minutes_col.number_input(
        "Snooze min", min_value=1, max_value=cap_min, value=min(15, cap_min), step=1, key=f"snooze-min-{key}"
    )
    reason = reason_col.text_input("Reason (required to snooze)", key=f"snooze-reason-{key}")
    if snooze_col.button("Snooze", key=f"snooze-{key}"):
        send_ack(ctx, alert, AckAction.SNOOZE, snooze_s=int(minutes) * 60, reason=reason)


# --- alerts ---------------------------------------------------------------------------------


def alerts_page(ctx: Context) -> None:
    ward = _ward_filter(ctx, _now())

    @st.fragment(run_every=ctx.settings.dashboard_refresh_s)
    def live() -> None:
        now = _now()
        with ctx.db.connection() as conn:
            beds = {b.bed_id for b in data.ward_beds(conn, now, ward=ward)}
            alerts = order_alerts(a for a in data.open_alerts(conn) if a.bed_id in beds)
        escalated = sum(1 for a in alerts if a.escalated and a.needs_action)
        st.caption(f"{len(alerts)} open alerts · {escalated} escalated · as of {now:%H:%M:%S} UTC")
        if not alerts:
            st.success("No open alerts.")
        for alert in alerts:
            age = format_age((now - alert.raised_at).total_seconds())
            colour = PRIORITY_COLOURS.get(alert.priority, UNKNOWN_COLOUR)
            escalated_text = f" · ⬆ ESCALATED level {alert.escalation_level}" if alert.escalated else ""
            state = alert.state if alert.state != "acknowledged" else f"acknowledged by {alert.acknowledged_by}"
            background = "#ffebee" if alert.escalated and alert.needs_action else "#fafafa"
            with st.container(border=True):
                st.markdown(
                    f"<div style='background:{background};padding:4px 8px;border-left:8px solid {colour}'>"
                    f"<b>{html.escape(alert.priority.upper())}</b> · <b>{html.escape(alert.bed_id)}</b> · "
                    f"{html.escape(alert.code)} · {html.escape(state)}{escalated_text} · raised {age} ago"
                    f"<br>{html.escape(alert.explanation)}</div>",
                    unsafe_allow_html=True,
                )
                _ack_controls(ctx, alert, f"alerts-{alert.alert_id}")

    live()


# --- patient --------------------------------------------------------------------------------


def _band_chart(
    frame: pd.DataFrame, column: str, title: str, start: datetime, end: datetime
) -> alt.LayerChart | alt.FacetChart:
    values = frame[column].dropna()
    lo = float(values.min()) if len(values) else 0.0
    hi = float(values.max()) if len(values) else 1.0
    pad = max(2.0, (hi - lo) * 0.15)
    domain = [lo - pad, hi + pad]
    bands = pd.DataFrame(
        [
            {"y": max(low, domain[0]), "y2": min(high, domain[1]), "colour": POINT_COLOURS[points]}
            for low, high, points in NEWS2_BANDS.get(column, ())
            if points > 0 and high > domain[0] and low < domain[1]
        ],
        columns=["y", "y2", "colour"],
    )
    x = alt.X("bucket:T", title=None, scale=alt.Scale(domain=[start.isoformat(), end.isoformat()]))
    shading = (
        alt.Chart(bands)
        .mark_rect(opacity=0.6)
        .encode(y=alt.Y("y:Q", scale=alt.Scale(domain=domain)), y2="y2:Q", color=alt.Color("colour:N", scale=None))
    )
    line = (
        # Charted readings (BP, temperature) fill a few buckets only: drop the gaps so they join up.
        alt.Chart(frame[["bucket", column]].dropna())
        .mark_line(point=True, color="#263238")
        .encode(x=x, y=alt.Y(f"{column}:Q", title=title, scale=alt.Scale(domain=domain, zero=False)))
    )
    return alt.layer(shading, line).properties(height=150)


def _video_charts(frame: pd.DataFrame, vitals: pd.DataFrame) -> tuple[alt.LayerChart | alt.FacetChart, alt.Chart]:
    probs = frame.melt(id_vars="bucket", value_vars=["grimace", "twitch", "apnea"], var_name="finding", value_name="p")
    threshold = (
        alt.Chart(pd.DataFrame({"y": [FINDING_THRESHOLD]})).mark_rule(strokeDash=[4, 4], color="#999").encode(y="y:Q")
    )
    probabilities = alt.layer(
        alt.Chart(probs)
        .mark_line()
        .encode(
            x=alt.X("bucket:T", title=None),
            y=alt.Y("p:Q", title="probability (max)", scale=alt.Scale(domain=[0, 1])),
            color="finding:N",
        ),
        threshold,
    ).properties(height=170)
    rr = frame[["bucket", "resp_rate", "baseline_resp_rate"]].rename(
        columns={"resp_rate": "video (learned)", "baseline_resp_rate": "video (classical)"}
    )
    if not vitals.empty:
        rr = rr.merge(vitals[["bucket", "rr"]].rename(columns={"rr": "monitor"}), on="bucket", how="outer")
    long = rr.melt(id_vars="bucket", var_name="source", value_name="breaths/min").dropna()
    respiration = (
        alt.Chart(long)
        .mark_line()
        .encode(
            x=alt.X("bucket:T", title=None),
            y=alt.Y("breaths/min:Q", scale=alt.Scale(zero=False)),
            color="source:N",
        )
        .properties(height=170)
    )
    return probabilities, respiration


def _select_bed(ctx: Context, now: datetime) -> str | None:
    with ctx.db.connection() as conn:
        beds = [b.bed_id for b in data.ward_beds(conn, now)]
    if not beds:
        st.info("No beds have reported in the last 24 hours.")
        return None
    wanted = st.query_params.get("bed") or st.session_state.get("bed")
    index = beds.index(wanted) if wanted in beds else 0
    bed = st.sidebar.selectbox("Bed", beds, index=index)
    st.session_state["bed"] = bed
    return str(bed)


def patient_page(ctx: Context) -> None:
    st.markdown(TILE_CSS, unsafe_allow_html=True)
    bed_id = _select_bed(ctx, _now())
    if bed_id is None:
        return
    span_name = st.sidebar.radio("Span", list(SPANS), index=1, horizontal=True, key="span")
    span = SPANS[str(span_name)]

    @st.fragment(run_every=ctx.settings.dashboard_refresh_s)
    def live() -> None:
        now = _now()
        start = now - span
        backend = ctx.db.backend()
        with ctx.db.connection() as conn:
            beds = [b for b in data.ward_beds(conn, now) if b.bed_id == bed_id]
            snapshots = data.bed_snapshots(conn, beds, now)
            vitals = data.vitals_frame(conn, backend, bed_id, start=start, end=now)
            video = data.detections_frame(conn, backend, bed_id, start=start, end=now)
            history = data.alert_history(conn, bed_id, since=start)
            evidence = data.evidence_list(conn, bed_id, since=start - timedelta(minutes=10), now=now)
            acks = data.acks_for(conn, [a.alert_id for a in history])
            events = data.alert_events(conn, bed_id, since=start, now=now)
            cameras = data.camera_changes(conn, bed_id, since=start, now=now)
        st.subheader(f"Bed {bed_id}")
        if snapshots:
            tile = build_tile(snapshots[0], now, ctx.settings.thresholds())
            st.markdown(tile_html(tile, now), unsafe_allow_html=True)

        st.markdown("**Vitals** (per-minute averages; shading: NEWS2 points 1 / 2 / 3)")
        if vitals.empty:
            st.info("No vitals in this span.")
        else:
            left, right = st.columns(2)
            for i, (column, title) in enumerate(CHARTS):
                if vitals[column].notna().any():
                    (left if i % 2 == 0 else right).altair_chart(
                        _band_chart(vitals, column, title, start, now), width="stretch"
                    )
        st.markdown("**Video findings** (synthetic-trained model, not clinically validated)")
        if video.empty:
            st.info("No video detections in this span.")
        else:
            probabilities, respiration = _video_charts(video, vitals)
            left, right = st.columns(2)
            left.altair_chart(probabilities, width="stretch")
            right.altair_chart(respiration, width="stretch")

        st.markdown("**Alerts**")
        if not history:
            st.caption("No alerts in this span.")
        acks_by_alert: dict[str, list[data.AckRow]] = {}
        for ack in acks:
            acks_by_alert.setdefault(str(ack.alert_id), []).append(ack)
        for alert in history:
            age = format_age((now - alert.raised_at).total_seconds())
            title = f"{alert.priority.upper()} {alert.code} — {alert.state}" + (
                f" (escalated L{alert.escalation_level})" if alert.escalated else ""
            )
            with st.expander(f"{title} · raised {age} ago", expanded=alert.needs_action):
                st.write(alert.explanation)
                if alert.evidence:
                    st.caption("Values: " + ", ".join(f"{k} {v}" for k, v in alert.evidence.items()))
                for ack in acks_by_alert.get(str(alert.alert_id), []):
                    extra = f" {ack.snooze_s // 60} min: {ack.reason}" if ack.snooze_s else ""
                    st.caption(f"{ack.action} by {ack.user_name} at {ack.ts:%H:%M:%S} UTC{extra}")
                ref = evidence_for_alert(alert, evidence)
                if isinstance(ref, data.EvidenceRow):
                    image = _evidence_image(ctx.db, ref)
                    if image:
                        st.image(
                            image,
                            caption=f"{ref.finding} p={ref.probability:.2f} at {ref.ts:%H:%M:%S} UTC "
                            "(keyframe with the model's attention)",
                            width=320,
                        )
                _ack_controls(ctx, alert, f"patient-{alert.alert_id}")

        st.markdown("**Timeline**")
        timeline: list[Event] = list(events)
        timeline += [
            Event(a.ts, "ack", f"{a.action} by {a.user_name}" + (f" ({a.reason})" if a.reason else "")) for a in acks
        ]
        timeline += [Event(e.ts, "evidence", f"{e.finding} p={e.probability:.2f}") for e in evidence if e.ts >= start]
        timeline += [Event(c.ts, "camera", f"camera {c.camera_id} {c.state}") for c in cameras]
        ordered = build_timeline(timeline)
        if ordered:
            st.dataframe(
                pd.DataFrame(
                    [{"time (UTC)": e.ts.strftime("%H:%M:%S"), "event": e.kind, "detail": e.text} for e in ordered]
                ),
                hide_index=True,
                width="stretch",
                height=min(400, 38 + 35 * len(ordered)),
            )
        else:
            st.caption("Nothing happened in this span.")

    live()


# --- system ---------------------------------------------------------------------------------


def system_page(ctx: Context) -> None:
    @st.fragment(run_every=ctx.settings.dashboard_refresh_s)
    def live() -> None:
        now = _now()
        with ctx.db.connection() as conn:
            cameras = data.camera_health_rows(conn, now)
            stages = data.stage_freshness(conn, now)
        st.markdown("**Pipeline staleness** (newest data each stage delivered to the database)")
        rows: list[dict[str, Any]] = []
        for stage in stages:
            age = (now - stage.newest).total_seconds() if stage.newest else None
            status = "no data in the last hour" if age is None else ("STALE" if age > 60 else "ok")
            rows.append(
                {
                    "stage": stage.stage,
                    "newest": format_age(age) + (" ago" if age is not None else ""),
                    "sink delay (median, 5 min)": f"{stage.write_delay_s:.1f} s"
                    if stage.write_delay_s is not None
                    else "—",
                    "status": status,
                }
            )
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

        st.markdown("**Kafka**")
        dead = ctx.broker.dead_letters()
        groups = [*LAG_GROUPS, f"{ctx.settings.topic_prefix}-icu-alerts"]
        lags = [ctx.broker.group_lag(group) for group in groups]
        cols = st.columns(1 + len(lags))
        cols[0].metric("dead letters retained", "unavailable" if dead is None else dead)
        for col, lag in zip(cols[1:], lags, strict=True):
            col.metric(f"lag {lag.group}", "—" if lag.lag is None else lag.lag)

        st.markdown("**Cameras** (latest status in the last hour)")
        if not cameras:
            st.info("No camera has reported in the last hour.")
        else:
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "bed": c.bed_id,
                            "camera": c.camera_id,
                            "state": c.state
                            if (now - c.ts).total_seconds() <= ctx.settings.dashboard_stale_camera_s
                            else f"LOST (last {c.state})",
                            "status age": format_age((now - c.ts).total_seconds()),
                            "fps in/out": f"{c.fps_in:.1f} / {c.fps_out:.1f}",
                            "dropped": c.frames_dropped,
                            "reconnects": c.reconnects,
                            "last frame": format_age(c.last_frame_age_s),
                            "detail": c.detail,
                        }
                        for c in cameras
                    ]
                ),
                hide_index=True,
                width="stretch",
            )

    live()
