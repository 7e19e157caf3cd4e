-- Beds, alerts with their full version history, and acknowledgements.
-- alert_versions and alert_acks are the audit trail: append-only, enforced by triggers,
-- so nothing that connects as the application can rewrite or delete what happened.

CREATE TABLE beds (
    bed_id      text PRIMARY KEY,
    ward        text NOT NULL DEFAULT 'default',
    label       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION icu_forbid_rewrite() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the % audit trail is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TABLE alert_versions (
    alert_id          uuid        NOT NULL,
    version           integer     NOT NULL CHECK (version >= 1),
    bed_id            text        NOT NULL,
    code              text        NOT NULL,
    kind              text        NOT NULL CHECK (kind IN ('physiological', 'technical')),
    priority          text        NOT NULL CHECK (priority IN ('high', 'medium', 'low', 'info')),
    state             text        NOT NULL CHECK (state IN ('open', 'acknowledged', 'escalated', 'resolved')),
    raised_at         timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    explanation       text        NOT NULL,
    evidence          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    news2             smallint,
    escalation_level  integer     NOT NULL DEFAULT 0,
    acknowledged_by   text,
    acknowledged_at   timestamptz,
    snoozed_until     timestamptz,
    resolved_at       timestamptz,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alert_id, version)
);
CREATE INDEX alert_versions_bed_time ON alert_versions (bed_id, updated_at DESC);

CREATE TRIGGER alert_versions_append_only BEFORE UPDATE OR DELETE ON alert_versions
    FOR EACH ROW EXECUTE FUNCTION icu_forbid_rewrite();
CREATE TRIGGER alert_versions_no_truncate BEFORE TRUNCATE ON alert_versions
    FOR EACH STATEMENT EXECUTE FUNCTION icu_forbid_rewrite();

-- Current state of each alert: the highest version seen, maintained by trigger so it can
-- never disagree with the history (versions may arrive twice or out of order).
CREATE TABLE alerts (LIKE alert_versions INCLUDING DEFAULTS INCLUDING CONSTRAINTS, PRIMARY KEY (alert_id));
CREATE INDEX alerts_open ON alerts (priority, raised_at) WHERE state <> 'resolved';
CREATE INDEX alerts_bed_time ON alerts (bed_id, updated_at DESC);

CREATE FUNCTION icu_alert_current() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO alerts VALUES (NEW.*)
    ON CONFLICT (alert_id) DO UPDATE SET
        version = EXCLUDED.version, bed_id = EXCLUDED.bed_id, code = EXCLUDED.code,
        kind = EXCLUDED.kind, priority = EXCLUDED.priority, state = EXCLUDED.state,
        raised_at = EXCLUDED.raised_at, updated_at = EXCLUDED.updated_at,
        explanation = EXCLUDED.explanation, evidence = EXCLUDED.evidence, news2 = EXCLUDED.news2,
        escalation_level = EXCLUDED.escalation_level, acknowledged_by = EXCLUDED.acknowledged_by,
        acknowledged_at = EXCLUDED.acknowledged_at, snoozed_until = EXCLUDED.snoozed_until,
        resolved_at = EXCLUDED.resolved_at, recorded_at = EXCLUDED.recorded_at
    WHERE alerts.version < EXCLUDED.version;
    RETURN NULL;
END
$$;
CREATE TRIGGER alert_versions_current AFTER INSERT ON alert_versions
    FOR EACH ROW EXECUTE FUNCTION icu_alert_current();

CREATE TABLE alert_acks (
    ack_id       uuid        PRIMARY KEY,
    alert_id     uuid        NOT NULL,
    bed_id       text        NOT NULL,
    user_name    text        NOT NULL,
    ts           timestamptz NOT NULL,
    action       text        NOT NULL CHECK (action IN ('acknowledge', 'snooze')),
    snooze_s     integer     CHECK (snooze_s BETWEEN 1 AND 3600),
    reason       text,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_acks_alert ON alert_acks (alert_id, ts);

CREATE TRIGGER alert_acks_append_only BEFORE UPDATE OR DELETE ON alert_acks
    FOR EACH ROW EXECUTE FUNCTION icu_forbid_rewrite();
CREATE TRIGGER alert_acks_no_truncate BEFORE TRUNCATE ON alert_acks
    FOR EACH STATEMENT EXECUTE FUNCTION icu_forbid_rewrite();
