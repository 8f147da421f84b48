-- The oldest open filing request of a SOURCE location, locked until the end of the
-- caller's transaction (which files it and writes its outcome); requests another worker
-- holds are skipped, never waited for.
SELECT id, manifest
FROM filing_request
WHERE source_location_id = %(location_id)s AND outcome IS NULL
ORDER BY id
LIMIT 1
FOR UPDATE SKIP LOCKED;
