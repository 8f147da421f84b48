SELECT id, relative_path, size_bytes, checksum, inode, mtime_ns
FROM raw_data_file
WHERE raw_data_package_id = %(package_id)s
ORDER BY relative_path;
