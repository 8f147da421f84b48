-- An operator hands back an archive transfer that FAILED or is out of tries
-- (requires_intervention): PENDING, reason cleared, and its count of failed tries starts
-- again. Run it holding the transfer's lease (states.retry), so a try that is still
-- running is never reset under its worker.
UPDATE long_term_archive_transfer
SET attempts = 0, status = 'PENDING', failure_reason = NULL, status_changed_at = now()
WHERE id = %(id)s
  AND (status = 'FAILED' OR requires_intervention)
RETURNING id;
