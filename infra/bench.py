"""Benchmarks of the infrastructure stage: broker start, topic creation, database writes.

Each figure is a median over repeats and is reported with the limit it is measured against
in the same run (e.g. the write path's rows/s as a ratio of raw COPY's).
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from icu.contracts import Consciousness, Vitals
from infra.broker import EmbeddedBroker
from infra.db.maintenance import maintain
from infra.db.migrate import connect, migrate
from infra.db.writer import VITALS, DatabaseWriter
from infra.settings import TopicsAdminSettings
from infra.topics import create_topics


def bench_broker(*, repeats: int = 5) -> dict[str, Any]:
    """Embedded broker start-to-listening time and `topics create` time, medians in ms."""
    starts, creations = [], []
    for _ in range(repeats):
        with EmbeddedBroker(port=0) as broker:
            starts.append((broker.started_in_s or 0.0) * 1000)
            settings = TopicsAdminSettings(kafka_bootstrap_servers=broker.bootstrap_servers)
            began = time.perf_counter()
            reports = create_topics(settings)
            creations.append((time.perf_counter() - began) * 1000)
    return {
        "broker_start_ms_median": round(statistics.median(starts), 1),
        "topics_create_ms_median": round(statistics.median(creations), 1),
        "topics": len(reports),
        "partitions_total": sum(r.partitions for r in reports),
        "repeats": repeats,
        "runs": {
            "broker_start_ms": [round(s, 1) for s in starts],
            "topics_create_ms": [round(c, 1) for c in creations],
        },
    }


def sample_vitals(rows: int, *, beds: int = 32, now: datetime | None = None) -> list[Vitals]:
    """Plausible vitals, one per bed per second, ending at ``now``."""
    now = now or datetime.now(UTC)
    start = now - timedelta(seconds=rows // beds + 1)
    out = []
    for i in range(rows):
        second, bed = divmod(i, beds)
        out.append(
            Vitals(
                bed_id=f"bench-bed{bed:02d}",
                ts=start + timedelta(seconds=second),
                source="bench",
                hr=70 + (i % 30),
                rr=14 + (i % 6),
                spo2=95 + (i % 5),
                sbp=120 - (i % 20),
                dbp=70,
                map=87,
                temp_c=36.8,
                on_oxygen=False,
                consciousness=Consciousness.ALERT,
            )
        )
    return out


def bench_db(url: str, *, rows: int, batch: int, repeats: int) -> dict[str, Any]:
    """Rows/s into ``vitals``: raw COPY of ready tuples vs the project's write path, for new
    batches (the common case) and for redelivered ones (every row a duplicate).

    Runs in a scratch database created beside ``url``'s and dropped afterwards.
    """
    scratch = f"icu_bench_{uuid.uuid4().hex[:8]}"
    with connect(url) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    scratch_url = make_conninfo(url, dbname=scratch)
    try:
        report = migrate(scratch_url)
        messages = sample_vitals(rows)
        tuples = [VITALS.row(m) for m in messages]
        columns = sql.SQL(", ").join(map(sql.Identifier, VITALS.columns))
        raw: list[float] = []
        path: list[float] = []
        redelivered: list[float] = []
        with connect(scratch_url) as conn:
            maintain(conn, report.backend, retention_days=30)
            for _ in range(repeats):
                conn.execute("TRUNCATE vitals")
                began = time.perf_counter()
                with (
                    conn.transaction(),
                    conn.cursor() as cur,
                    cur.copy(sql.SQL("COPY vitals ({}) FROM STDIN").format(columns)) as copy,
                ):
                    for row in tuples:
                        copy.write_row(row)
                raw.append(rows / (time.perf_counter() - began))

                conn.execute("TRUNCATE vitals")
                writer = DatabaseWriter(conn)
                began = time.perf_counter()
                inserted = sum(writer.write_vitals(messages[i : i + batch]) for i in range(0, rows, batch))
                path.append(rows / (time.perf_counter() - began))
                if inserted != rows:
                    raise RuntimeError(f"write path inserted {inserted} of {rows} rows")

                # The same batches again, as after a consumer crash: every row is a duplicate.
                began = time.perf_counter()
                inserted = sum(writer.write_vitals(messages[i : i + batch]) for i in range(0, rows, batch))
                redelivered.append(rows / (time.perf_counter() - began))
                if inserted != 0:
                    raise RuntimeError(f"a redelivered batch stored {inserted} duplicate rows")
        raw_median, path_median = statistics.median(raw), statistics.median(path)
        redelivered_median = statistics.median(redelivered)
        return {
            "backend": report.backend,
            "rows": rows,
            "batch": batch,
            "repeats": repeats,
            "raw_copy_rows_per_s_median": round(raw_median),
            "write_path_rows_per_s_median": round(path_median),
            "write_path_over_raw_copy": round(path_median / raw_median, 3),
            "redelivered_rows_per_s_median": round(redelivered_median),
            "redelivered_over_raw_copy": round(redelivered_median / raw_median, 3),
            "runs": {
                "raw_copy": [round(r) for r in raw],
                "write_path": [round(p) for p in path],
                "redelivered": [round(r) for r in redelivered],
            },
            "database": conninfo_to_dict(url).get("host", "socket"),
        }
    finally:
        with connect(url) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
