-- Records new files with their identity at filing (inode, mtime); paths already filed at
-- this location are left alone and not returned.
INSERT INTO raw_data_file (executed_obs_unit_id, instrument_module_id, source_location_id,
                           relative_path, size_bytes, checksum, inode, mtime_ns)
SELECT %(executed_obs_unit_id)s, f.module_id, %(source_location_id)s, f.path, f.size, f.checksum, f.inode, f.mtime_ns
FROM unnest(%(paths)s::text[], %(module_ids)s::bigint[], %(sizes)s::bigint[], %(checksums)s::text[],
            %(inodes)s::numeric[], %(mtimes_ns)s::bigint[])
     AS f (path, module_id, size, checksum, inode, mtime_ns)
ON CONFLICT (source_location_id, relative_path) DO NOTHING
RETURNING relative_path;
