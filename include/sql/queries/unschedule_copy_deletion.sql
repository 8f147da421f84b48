-- The rules no longer allow it: the copy is kept.
UPDATE physical_copy
SET status = CASE WHEN staging_job_id IS NULL THEN 'PRESENT' ELSE 'STAGED' END::physical_copy_status,
    status_changed_at = now()
WHERE id = %(id)s AND status = 'DELETION_SCHEDULED'
RETURNING id;
