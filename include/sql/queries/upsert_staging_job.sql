-- The same request (same observations, same location) is the same job.
INSERT INTO staging_job (name, requested_by, destination_location_id, request, retention_period)
VALUES (%(name)s, %(requested_by)s, %(location_id)s, %(request)s::jsonb, %(retention_period)s)
ON CONFLICT (name) DO UPDATE SET requested_by = staging_job.requested_by
RETURNING *;
