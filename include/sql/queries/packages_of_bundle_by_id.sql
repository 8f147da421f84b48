-- The packages of a bundle, as members of its tar (relative_path) with what they must be.
SELECT id, name, relative_path, size_bytes, checksum
FROM raw_data_package
WHERE data_transfer_package_id = %(bundle_id)s
ORDER BY id;
