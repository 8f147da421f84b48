SELECT id, relative_path, size_bytes, checksum
FROM raw_data_file
WHERE raw_data_package_id = %(package_id)s
ORDER BY relative_path;
