-- Work finding for packaging: files at one SOURCE location that are in no package yet,
-- grouped by observation x instrument module (served by raw_data_file_unpackaged).
SELECT id, executed_obs_unit_id, instrument_module_id, relative_path, size_bytes, checksum
FROM raw_data_file
WHERE source_location_id = %(location_id)s
  AND raw_data_package_id IS NULL
ORDER BY executed_obs_unit_id, instrument_module_id, relative_path
LIMIT %(limit)s;
