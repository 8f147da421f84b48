UPDATE physical_copy
SET status = 'DELETION_SCHEDULED', status_changed_at = now(), failure_reason = NULL
WHERE id = ANY (%(ids)s::bigint[])
  AND status IN ('PRESENT', 'STAGED')
RETURNING id;
