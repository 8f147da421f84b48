-- A PENDING staging job waits for its observations to be archived: record why (its
-- request's wait task does, before it defers). Not a status change: the job stays PENDING,
-- and starting it (PENDING -> SCHEDULED) clears the reason.
UPDATE staging_job SET failure_reason = %(reason)s
WHERE id = %(id)s AND status = 'PENDING'
RETURNING id;
