-- icu:no-transaction
-- Per-minute rollups as real-time continuous aggregates (materialised minutes plus raw
-- rows past the last refresh), with the same names and columns as the plain backend.
-- Every statement is idempotent: a run that failed half-way can simply be repeated.

CREATE MATERIALIZED VIEW IF NOT EXISTS vitals_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
    SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, bed_id, count(*)::integer AS n,
           avg(hr)::real AS hr_avg, min(hr) AS hr_min, max(hr) AS hr_max,
           avg(rr)::real AS rr_avg, min(rr) AS rr_min, max(rr) AS rr_max,
           avg(spo2)::real AS spo2_avg, min(spo2) AS spo2_min, avg(sbp)::real AS sbp_avg, min(sbp) AS sbp_min,
           avg(dbp)::real AS dbp_avg, avg(map)::real AS map_avg,
           avg(temp_c)::real AS temp_avg, max(temp_c) AS temp_max, bool_or(on_oxygen) AS on_oxygen,
           count(hr)::integer AS hr_n, count(rr)::integer AS rr_n, count(spo2)::integer AS spo2_n,
           count(sbp)::integer AS sbp_n, count(temp_c)::integer AS temp_n
    FROM vitals
    GROUP BY 1, 2
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS detections_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
    SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, bed_id, count(*)::integer AS n,
           avg(grimace)::real AS grimace_avg, max(grimace) AS grimace_max,
           avg(twitch)::real AS twitch_avg, max(twitch) AS twitch_max,
           avg(apnea)::real AS apnea_avg, max(apnea) AS apnea_max,
           avg(resp_rate)::real AS resp_rate_avg, avg(baseline_resp_rate)::real AS baseline_resp_rate_avg
    FROM detections
    GROUP BY 1, 2
WITH NO DATA;

SELECT add_continuous_aggregate_policy('vitals_1m', start_offset => INTERVAL '2 hours',
    end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute', if_not_exists => true);
SELECT add_continuous_aggregate_policy('detections_1m', start_offset => INTERVAL '2 hours',
    end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute', if_not_exists => true);
