-- The copy of one DataTransferPackage at one location, if there is one.
SELECT id, status
FROM physical_copy
WHERE data_transfer_package_id = %(bundle_id)s AND data_location_id = %(location_id)s;
