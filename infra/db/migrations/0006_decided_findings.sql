-- Detections list the findings the model's decision rules hold present (Detection.findings):
-- what the alert rules and the dashboard act on. NULL for rows from producers without decision
-- rules (and rows written before this column); readers then threshold the probabilities at 0.5.

ALTER TABLE detections ADD COLUMN findings text[];
