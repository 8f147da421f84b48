INSERT INTO physical_copy (data_location_id, raw_data_package_id, staging_job_id, path, checksum, status, verified_at)
VALUES (%(location_id)s, %(package_id)s, %(job_id)s, %(path)s, %(checksum)s, 'STAGED', now())
ON CONFLICT (raw_data_package_id, data_location_id, coalesce(staging_job_id, 0))
    WHERE raw_data_package_id IS NOT NULL
DO UPDATE SET path = EXCLUDED.path, checksum = EXCLUDED.checksum, status = 'STAGED',
              verified_at = now(), status_changed_at = now()
RETURNING id;
