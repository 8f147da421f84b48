-- Guarded change of a DataTransfer's unpack status (separate from its transfer status,
-- so an unpack can fail and be retried without re-transferring).
UPDATE data_transfer
SET unpack_status = %(new)s,
    unpack_status_changed_at = now(),
    unpack_failure_reason = %(failure_reason)s
WHERE id = %(id)s
  AND unpack_status = %(expected)s
  AND status = 'COMPLETED'
RETURNING id;
