-- An operator clears a transfer that needed intervention: count starts again.
UPDATE long_term_archive_transfer
SET attempts = 0, status = 'PENDING', failure_reason = NULL, status_changed_at = now()
WHERE status <> 'COMPLETED'
  AND requires_intervention
  AND (%(id)s::bigint IS NULL OR id = %(id)s)
RETURNING id;
