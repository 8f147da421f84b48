SELECT coalesce(sum(size_bytes), 0) FROM raw_data_file
WHERE source_location_id = %(location_id)s AND raw_data_package_id IS NULL;
