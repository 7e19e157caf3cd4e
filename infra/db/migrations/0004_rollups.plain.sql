-- Per-minute rollups for the dashboard. vitals_1m / detections_1m read the same on both
-- backends: here a view over materialised minutes (refreshed by `icu db maintain`) plus
-- minutes computed from raw rows past the refresh watermark, as TimescaleDB's real-time
-- continuous aggregates do. The *_n columns count readings per measurement, so coarser
-- buckets can weight each minute's average correctly. Buckets use the same origin as TimescaleDB's time_bucket.

CREATE TABLE rollup_watermarks (
    rollup        text PRIMARY KEY,
    refreshed_to  timestamptz NOT NULL
);

CREATE FUNCTION vitals_1m_compute(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (bucket timestamptz, bed_id text, n integer,
               hr_avg real, hr_min real, hr_max real, rr_avg real, rr_min real, rr_max real,
               spo2_avg real, spo2_min real, sbp_avg real, sbp_min real, dbp_avg real, map_avg real,
               temp_avg real, temp_max real, on_oxygen boolean,
               hr_n integer, rr_n integer, spo2_n integer, sbp_n integer, temp_n integer)
LANGUAGE sql STABLE AS $$
    SELECT date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00'), bed_id, count(*)::integer,
           avg(hr)::real, min(hr), max(hr), avg(rr)::real, min(rr), max(rr),
           avg(spo2)::real, min(spo2), avg(sbp)::real, min(sbp), avg(dbp)::real, avg(map)::real,
           avg(temp_c)::real, max(temp_c), bool_or(on_oxygen),
           count(hr)::integer, count(rr)::integer, count(spo2)::integer, count(sbp)::integer,
           count(temp_c)::integer
    FROM vitals WHERE ts >= p_from AND ts < p_to
    GROUP BY 1, 2
$$;

CREATE FUNCTION detections_1m_compute(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (bucket timestamptz, bed_id text, n integer,
               grimace_avg real, grimace_max real, twitch_avg real, twitch_max real,
               apnea_avg real, apnea_max real, resp_rate_avg real, baseline_resp_rate_avg real)
LANGUAGE sql STABLE AS $$
    SELECT date_bin(INTERVAL '1 minute', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00'), bed_id, count(*)::integer,
           avg(grimace)::real, max(grimace), avg(twitch)::real, max(twitch),
           avg(apnea)::real, max(apnea), avg(resp_rate)::real, avg(baseline_resp_rate)::real
    FROM detections WHERE ts >= p_from AND ts < p_to
    GROUP BY 1, 2
$$;

CREATE TABLE vitals_1m_store AS SELECT * FROM vitals_1m_compute('-infinity', '-infinity') WITH NO DATA;
ALTER TABLE vitals_1m_store ADD PRIMARY KEY (bed_id, bucket);
CREATE TABLE detections_1m_store AS SELECT * FROM detections_1m_compute('-infinity', '-infinity') WITH NO DATA;
ALTER TABLE detections_1m_store ADD PRIMARY KEY (bed_id, bucket);

-- Recompute whole minutes in [p_from, p_to) and move the watermark forward.
CREATE FUNCTION refresh_rollups(p_from timestamptz, p_to timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz := date_bin(INTERVAL '1 minute', p_from, TIMESTAMPTZ '2000-01-03 00:00:00+00');
    hi timestamptz := date_bin(INTERVAL '1 minute', p_to, TIMESTAMPTZ '2000-01-03 00:00:00+00');
BEGIN
    IF hi <= lo THEN
        RETURN;
    END IF;
    DELETE FROM vitals_1m_store WHERE bucket >= lo AND bucket < hi;
    INSERT INTO vitals_1m_store SELECT * FROM vitals_1m_compute(lo, hi);
    DELETE FROM detections_1m_store WHERE bucket >= lo AND bucket < hi;
    INSERT INTO detections_1m_store SELECT * FROM detections_1m_compute(lo, hi);
    INSERT INTO rollup_watermarks VALUES ('1m', hi)
    ON CONFLICT (rollup) DO UPDATE
        SET refreshed_to = greatest(rollup_watermarks.refreshed_to, EXCLUDED.refreshed_to);
END
$$;

CREATE FUNCTION rollup_watermark() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT refreshed_to FROM rollup_watermarks WHERE rollup = '1m'), '-infinity')
$$;

CREATE VIEW vitals_1m AS
    SELECT * FROM vitals_1m_store WHERE bucket < rollup_watermark()
    UNION ALL
    SELECT * FROM vitals_1m_compute(rollup_watermark(), 'infinity');

CREATE VIEW detections_1m AS
    SELECT * FROM detections_1m_store WHERE bucket < rollup_watermark()
    UNION ALL
    SELECT * FROM detections_1m_compute(rollup_watermark(), 'infinity');
