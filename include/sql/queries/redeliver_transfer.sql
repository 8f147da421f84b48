-- An arrived bundle failed verification at unpacking (damaged after it arrived): the
-- transfer goes back to PENDING so the next run sends a fresh copy from the origin,
-- as FTS3 does on a destination checksum mismatch. Guarded: only a COMPLETED transfer
-- whose unpack is IN_PROGRESS moves; returns the new redelivery count.
UPDATE data_transfer
SET status = 'PENDING',
    status_changed_at = now(),
    failure_reason = %(reason)s,
    unpack_status = 'PENDING',
    unpack_status_changed_at = now(),
    unpack_failure_reason = %(reason)s,
    redeliveries = redeliveries + 1
WHERE id = %(id)s
  AND status = 'COMPLETED'
  AND unpack_status = 'IN_PROGRESS'
RETURNING redeliveries;
