-- Detections say whether their window had missing frames filled in (degraded) and which frame
-- was the newest the model had seen (window_end: latency = inferred_at - window_end).
-- Evidence: the keyframe and saliency published when a video finding starts. A few rows per
-- bed and hour, so a plain table (no partitions, no hypertable) on both backends. The unique
-- index makes the sink idempotent: a redelivered record inserts nothing twice.

ALTER TABLE detections ADD COLUMN degraded boolean NOT NULL DEFAULT false;
ALTER TABLE detections ADD COLUMN window_end timestamptz;

CREATE TABLE evidence (
    ts              timestamptz NOT NULL,
    bed_id          text        NOT NULL,
    camera_id       text        NOT NULL,
    finding         text        NOT NULL CHECK (finding IN ('grimace', 'twitch', 'apnea')),
    seq             bigint      NOT NULL,
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    probability     real        NOT NULL,
    model           text        NOT NULL,
    model_version   text        NOT NULL,
    saliency_rows   smallint    NOT NULL,
    saliency_cols   smallint    NOT NULL,
    saliency        real[]      NOT NULL,
    keyframe_jpeg   bytea       NOT NULL,
    inferred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (cardinality(saliency) = saliency_rows * saliency_cols),
    CHECK (window_start <= ts AND ts <= window_end)
);
CREATE UNIQUE INDEX evidence_bed_finding_ts_model ON evidence (bed_id, finding, ts, model);
CREATE INDEX evidence_bed_time ON evidence (bed_id, ts DESC);
