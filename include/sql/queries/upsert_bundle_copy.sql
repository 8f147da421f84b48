-- Record (or refresh, after a re-run) a verified copy of a DataTransferPackage.
INSERT INTO physical_copy (data_location_id, data_transfer_package_id, path, checksum, status, verified_at)
VALUES (%(location_id)s, %(bundle_id)s, %(path)s, %(checksum)s, 'PRESENT', now())
ON CONFLICT (data_transfer_package_id, data_location_id) WHERE data_transfer_package_id IS NOT NULL
DO UPDATE SET path = EXCLUDED.path, checksum = EXCLUDED.checksum, status = 'PRESENT',
              verified_at = now(), status_changed_at = now()
RETURNING id;
