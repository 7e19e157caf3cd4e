-- TimescaleDB: daily chunks, compression of chunks older than a week (segmented by bed so a
-- bed's history decompresses alone). Retention policies are set by `icu db migrate` from
-- ICU_DATABASE_RETENTION_DAYS.

SELECT create_hypertable('vitals', by_range('ts', INTERVAL '1 day'));
SELECT create_hypertable('detections', by_range('ts', INTERVAL '1 day'));
SELECT create_hypertable('camera_status', by_range('ts', INTERVAL '1 day'));

ALTER TABLE vitals SET (timescaledb.compress, timescaledb.compress_segmentby = 'bed_id',
                        timescaledb.compress_orderby = 'ts DESC');
ALTER TABLE detections SET (timescaledb.compress, timescaledb.compress_segmentby = 'bed_id',
                            timescaledb.compress_orderby = 'ts DESC');
ALTER TABLE camera_status SET (timescaledb.compress, timescaledb.compress_segmentby = 'bed_id',
                               timescaledb.compress_orderby = 'ts DESC');

SELECT add_compression_policy('vitals', INTERVAL '7 days');
SELECT add_compression_policy('detections', INTERVAL '7 days');
SELECT add_compression_policy('camera_status', INTERVAL '7 days');
