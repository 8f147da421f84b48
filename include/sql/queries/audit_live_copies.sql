-- The live copies (PRESENT / STAGED) at one location, in id order after %(after_id)s, with
-- what the audit checks them against; `due` when last verified longer ago than %(period)s
-- (the rolling re-verification re-reads those).
SELECT c.id, c.status, c.path, c.checksum, c.raw_data_package_id, c.data_transfer_package_id,
       p.size_bytes AS package_size, d.size_bytes AS bundle_size,
       coalesce(p.name, d.name) AS name,
       (c.verified_at IS NULL OR c.verified_at < now() - %(period)s::interval) AS due
FROM physical_copy AS c
LEFT JOIN raw_data_package AS p ON p.id = c.raw_data_package_id
LEFT JOIN data_transfer_package AS d ON d.id = c.data_transfer_package_id
WHERE c.data_location_id = %(location_id)s
  AND c.status IN ('PRESENT', 'STAGED')
  AND c.id > %(after_id)s
ORDER BY c.id
LIMIT %(limit)s;
