-- Bundles of one BUFFER location left SCHEDULED or IN_PROGRESS (lease check candidates).
SELECT id, name, status
FROM data_transfer_package
WHERE origin_location_id = %(location_id)s
  AND status IN ('SCHEDULED', 'IN_PROGRESS')
ORDER BY id
LIMIT %(limit)s;
