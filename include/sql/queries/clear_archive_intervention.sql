-- An operator clears one transfer that needed intervention: its count starts again.
-- Run it holding the transfer's lease (archive.clear_intervention), so a try that is
-- still running is never reset under its worker.
UPDATE long_term_archive_transfer
SET attempts = 0, status = 'PENDING', failure_reason = NULL, status_changed_at = now()
WHERE id = %(id)s
  AND status <> 'COMPLETED'
  AND requires_intervention
RETURNING id;
