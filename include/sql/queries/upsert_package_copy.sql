-- Record (or refresh, after a re-run) a verified copy of a RawDataPackage at a location.
INSERT INTO physical_copy (data_location_id, raw_data_package_id, path, checksum, status, verified_at)
VALUES (%(location_id)s, %(package_id)s, %(path)s, %(checksum)s, 'PRESENT', now())
ON CONFLICT (raw_data_package_id, data_location_id, coalesce(staging_job_id, 0))
    WHERE raw_data_package_id IS NOT NULL
DO UPDATE SET path = EXCLUDED.path, checksum = EXCLUDED.checksum, status = 'PRESENT',
              verified_at = now(), status_changed_at = now()
RETURNING id;
