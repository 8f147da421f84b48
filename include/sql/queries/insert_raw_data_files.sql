-- Records new files; paths already filed at this location are left alone and not returned.
INSERT INTO raw_data_file (executed_obs_unit_id, instrument_module_id, source_location_id,
                           relative_path, size_bytes, checksum)
SELECT %(executed_obs_unit_id)s, f.module_id, %(source_location_id)s, f.path, f.size, f.checksum
FROM unnest(%(paths)s::text[], %(module_ids)s::bigint[], %(sizes)s::bigint[], %(checksums)s::text[])
     AS f (path, module_id, size, checksum)
ON CONFLICT (source_location_id, relative_path) DO NOTHING
RETURNING relative_path;
