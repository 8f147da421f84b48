SELECT id, relative_path, executed_obs_unit_id, instrument_module_id, size_bytes, checksum
FROM raw_data_file
WHERE source_location_id = %(source_location_id)s AND relative_path = ANY (%(paths)s::text[]);
