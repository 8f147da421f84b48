-- A transfer whose arrived bundle (or a package unpacked from it) the audit found lost or
-- corrupt is sent again from its origin, and unpacked again. Guarded: only a COMPLETED
-- transfer moves.
UPDATE data_transfer
SET status = 'PENDING', status_changed_at = now(), failure_reason = %(reason)s,
    unpack_status = CASE WHEN unpack THEN 'PENDING'::status ELSE unpack_status END,
    unpack_status_changed_at = now(), unpack_failure_reason = NULL
WHERE id = %(id)s AND status = 'COMPLETED'
RETURNING id;
