-- Packages of one SOURCE location left SCHEDULED or IN_PROGRESS (candidates for the
-- lease check: only those whose worker is gone are handed back to PENDING).
SELECT id, name, status
FROM raw_data_package
WHERE source_location_id = %(location_id)s
  AND status IN ('SCHEDULED', 'IN_PROGRESS')
ORDER BY id
LIMIT %(limit)s;
