-- Claim up to %(limit)s PENDING bundles of one BUFFER location: PENDING -> SCHEDULED.
WITH claimable AS (
    SELECT id
    FROM data_transfer_package
    WHERE origin_location_id = %(location_id)s
      AND status = 'PENDING'
      AND NOT (id = ANY (%(exclude)s::bigint[]))
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE data_transfer_package AS d
SET status = 'SCHEDULED', status_changed_at = now()
FROM claimable
WHERE d.id = claimable.id
RETURNING d.id, d.name;
