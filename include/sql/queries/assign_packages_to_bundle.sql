-- Guarded: a package already in a bundle is never moved to another.
UPDATE raw_data_package
SET data_transfer_package_id = %(bundle_id)s
WHERE id = ANY (%(package_ids)s::bigint[])
  AND data_transfer_package_id IS NULL;
