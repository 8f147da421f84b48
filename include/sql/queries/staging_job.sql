SELECT id, name, requested_by, destination_location_id, request, retention_period, status, failure_reason,
       created_at
FROM staging_job
WHERE id = %(id)s;
