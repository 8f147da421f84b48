-- Copies at one location the audit found LOST or CORRUPT and that are not repaired yet.
SELECT c.id, c.status, c.path, c.checksum, c.raw_data_package_id, c.data_transfer_package_id,
       p.size_bytes AS package_size, d.size_bytes AS bundle_size,
       coalesce(p.name, d.name) AS name, true AS due
FROM physical_copy AS c
LEFT JOIN raw_data_package AS p ON p.id = c.raw_data_package_id
LEFT JOIN data_transfer_package AS d ON d.id = c.data_transfer_package_id
WHERE c.data_location_id = %(location_id)s
  AND c.status IN ('LOST', 'CORRUPT')
ORDER BY c.id
LIMIT %(limit)s;
