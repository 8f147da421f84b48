-- Copies at one location waiting for (or left half-way in) deletion, with the size each
-- package or bundle tar must have (deletion removes only the very file that was recorded).
SELECT c.id, c.status, c.path, c.checksum, c.raw_data_package_id, c.data_transfer_package_id, c.staging_job_id,
       j.name AS staging_job, p.size_bytes AS package_size, d.size_bytes AS bundle_size
FROM physical_copy AS c
LEFT JOIN staging_job AS j ON j.id = c.staging_job_id
LEFT JOIN raw_data_package AS p ON p.id = c.raw_data_package_id
LEFT JOIN data_transfer_package AS d ON d.id = c.data_transfer_package_id
WHERE c.data_location_id = %(location_id)s
  AND c.status IN ('DELETION_SCHEDULED', 'DELETION_IN_PROGRESS')
ORDER BY c.id
LIMIT %(limit)s;
