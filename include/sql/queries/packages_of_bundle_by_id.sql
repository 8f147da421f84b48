SELECT id, name, relative_path, size_bytes, checksum
FROM raw_data_package
WHERE data_transfer_package_id = %(bundle_id)s
ORDER BY id;
