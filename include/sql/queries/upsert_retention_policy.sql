-- Returns a row only when the policy was created or changed.
INSERT INTO retention_policy (data_location_id, retention_period, disk_pressure_threshold, min_lta_copies)
VALUES (%(data_location_id)s, %(retention_period)s, %(disk_pressure_threshold)s, %(min_lta_copies)s)
ON CONFLICT (data_location_id) DO UPDATE SET
    retention_period = EXCLUDED.retention_period,
    disk_pressure_threshold = EXCLUDED.disk_pressure_threshold,
    min_lta_copies = EXCLUDED.min_lta_copies,
    updated_at = now()
WHERE (retention_policy.retention_period, retention_policy.disk_pressure_threshold, retention_policy.min_lta_copies)
    IS DISTINCT FROM (EXCLUDED.retention_period, EXCLUDED.disk_pressure_threshold, EXCLUDED.min_lta_copies)
RETURNING data_location_id AS id, (xmax = 0) AS inserted;
