-- A package as a repair needs it: its buffer path (the tar's relative path), size, checksum,
-- its bundle, and whether it is archived.
SELECT id, name, relative_path, size_bytes, checksum, data_transfer_package_id, archived_at
FROM raw_data_package
WHERE id = %(id)s;
