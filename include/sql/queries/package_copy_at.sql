-- The copy of one package at one location (not a staged copy), if there is one.
SELECT id, status
FROM physical_copy
WHERE raw_data_package_id = %(package_id)s AND data_location_id = %(location_id)s AND staging_job_id IS NULL;
