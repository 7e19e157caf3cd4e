-- Raw time series, one row per message. @PARTITION_BY_TS@ becomes native range
-- partitioning on plain PostgreSQL and nothing on TimescaleDB (0003 makes hypertables).
-- The unique indexes make the sink idempotent: a redelivered batch inserts nothing twice.

CREATE TABLE vitals (
    ts             timestamptz NOT NULL,
    bed_id         text        NOT NULL,
    source         text        NOT NULL,
    patient_id     text,
    hr             real,
    rr             real,
    spo2           real,
    sbp            real,
    dbp            real,
    map            real,
    temp_c         real,
    on_oxygen      boolean,
    consciousness  char(1) CHECK (consciousness IN ('A', 'C', 'V', 'P', 'U')),
    spo2_scale     smallint NOT NULL DEFAULT 1 CHECK (spo2_scale IN (1, 2)),
    received_at    timestamptz NOT NULL DEFAULT now()
) @PARTITION_BY_TS@;
CREATE UNIQUE INDEX vitals_bed_source_ts ON vitals (bed_id, source, ts);

CREATE TABLE detections (
    ts                     timestamptz NOT NULL,
    bed_id                 text        NOT NULL,
    camera_id              text        NOT NULL,
    seq                    bigint      NOT NULL,
    model                  text        NOT NULL,
    model_version          text        NOT NULL,
    grimace                real        NOT NULL,
    twitch                 real        NOT NULL,
    apnea                  real        NOT NULL,
    resp_rate              real,
    resp_quality           real,
    baseline_resp_rate     real,
    baseline_resp_quality  real,
    motion_energy          real,
    twitch_burst           boolean,
    inferred_at            timestamptz NOT NULL,
    received_at            timestamptz NOT NULL DEFAULT now()
) @PARTITION_BY_TS@;
CREATE UNIQUE INDEX detections_bed_camera_model_ts ON detections (bed_id, camera_id, model, ts);

CREATE TABLE camera_status (
    ts                timestamptz NOT NULL,
    bed_id            text        NOT NULL,
    camera_id         text        NOT NULL,
    state             text        NOT NULL,
    source            text        NOT NULL,
    fps_in            real        NOT NULL,
    fps_out           real        NOT NULL,
    frames_dropped    bigint      NOT NULL,
    reconnects        integer     NOT NULL,
    last_frame_age_s  real,
    detail            text        NOT NULL DEFAULT '',
    received_at       timestamptz NOT NULL DEFAULT now()
) @PARTITION_BY_TS@;
CREATE UNIQUE INDEX camera_status_bed_camera_ts ON camera_status (bed_id, camera_id, ts);
