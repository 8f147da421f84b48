-- Completed packages with a verified copy at one BUFFER location and in no
-- DataTransferPackage yet. Locked until the planning transaction ends; an overlapping
-- run skips them.
SELECT p.id, p.name, p.size_bytes, p.checksum, p.status_changed_at AS completed_at, c.path
FROM raw_data_package AS p
JOIN physical_copy AS c
  ON c.raw_data_package_id = p.id
 AND c.data_location_id = %(location_id)s
 AND c.status = 'PRESENT'
WHERE p.status = 'COMPLETED'
  AND p.data_transfer_package_id IS NULL
ORDER BY p.id
LIMIT %(limit)s
FOR UPDATE OF p SKIP LOCKED;
