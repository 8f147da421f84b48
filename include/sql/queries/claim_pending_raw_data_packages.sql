-- Claim up to %(limit)s PENDING packages of one SOURCE location: PENDING -> SCHEDULED.
-- SKIP LOCKED lets concurrent claimers pass each other without ever sharing a row.
WITH claimable AS (
    SELECT id
    FROM raw_data_package
    WHERE source_location_id = %(location_id)s
      AND status = 'PENDING'
      AND NOT (id = ANY (%(exclude)s::bigint[]))
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE raw_data_package AS p
SET status = 'SCHEDULED', status_changed_at = now()
FROM claimable
WHERE p.id = claimable.id
RETURNING p.id, p.name;
