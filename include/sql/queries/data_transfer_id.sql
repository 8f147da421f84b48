SELECT id FROM data_transfer
WHERE data_transfer_package_id = %(bundle_id)s AND destination_location_id = %(destination_location_id)s;
