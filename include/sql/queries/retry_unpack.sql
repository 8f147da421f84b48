-- An operator hands a FAILED unpack back (states.retry, holding the unpack's lease):
-- PENDING, reason cleared, and its count of fresh copies starts again, so a bundle that
-- arrived damaged is sent again (up to unpacking.MAX_REDELIVERIES more times).
UPDATE data_transfer
SET unpack_status = 'PENDING',
    unpack_status_changed_at = now(),
    unpack_failure_reason = NULL,
    redeliveries = 0
WHERE id = %(id)s
  AND unpack_status = 'FAILED'
RETURNING id;
