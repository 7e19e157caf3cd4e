-- Native partitioning: a default partition catches rows for days without a partition
-- (nothing is ever refused); `icu db maintain` creates daily partitions ahead, moves rows
-- out of the default partition, and drops partitions past retention. BRIN on time keeps
-- range scans cheap at a tiny index size.

CREATE TABLE vitals_default PARTITION OF vitals DEFAULT;
CREATE TABLE detections_default PARTITION OF detections DEFAULT;
CREATE TABLE camera_status_default PARTITION OF camera_status DEFAULT;

CREATE INDEX vitals_ts_brin ON vitals USING brin (ts);
CREATE INDEX detections_ts_brin ON detections USING brin (ts);
CREATE INDEX camera_status_ts_brin ON camera_status USING brin (ts);
