-- Copies at one location waiting for (or left half-way in) deletion.
SELECT c.id, c.status, c.path, c.raw_data_package_id, c.data_transfer_package_id, c.staging_job_id,
       j.name AS staging_job
FROM physical_copy AS c
LEFT JOIN staging_job AS j ON j.id = c.staging_job_id
WHERE c.data_location_id = %(location_id)s
  AND c.status IN ('DELETION_SCHEDULED', 'DELETION_IN_PROGRESS')
ORDER BY c.id
LIMIT %(limit)s;
