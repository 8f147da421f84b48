-- The same request (same observations, same location) is the same job. Asking again
-- with another retention applies it to the job (and so to its staged copies).
INSERT INTO staging_job (name, requested_by, destination_location_id, request, retention_period)
VALUES (%(name)s, %(requested_by)s, %(location_id)s, %(request)s::jsonb, %(retention_period)s)
ON CONFLICT (name) DO UPDATE SET retention_period = EXCLUDED.retention_period
RETURNING id, name, requested_by, destination_location_id, request, retention_period, status, failure_reason,
          created_at;
