-- Of the paths found on storage at one location, those ops-db knows nothing of (dark
-- data): not a filed raw file (SOURCE), not the path of a copy there (package or bundle
-- tar, S3 object), not a raw file under a staged copy's job directory (PROCESSING).
SELECT candidate
FROM unnest(%(paths)s::text[]) AS candidate
WHERE NOT EXISTS (SELECT 1 FROM raw_data_file AS f
                   WHERE f.source_location_id = %(location_id)s AND f.relative_path = candidate)
  AND NOT EXISTS (SELECT 1 FROM physical_copy AS c
                   WHERE c.data_location_id = %(location_id)s AND c.path = candidate AND c.status <> 'DELETED')
  AND NOT EXISTS (SELECT 1 FROM physical_copy AS c
                    JOIN raw_data_file AS f ON f.raw_data_package_id = c.raw_data_package_id
                   WHERE c.data_location_id = %(location_id)s AND c.staging_job_id IS NOT NULL
                     AND c.status <> 'DELETED' AND c.path = split_part(candidate, '/', 1)
                     AND f.relative_path = substr(candidate, length(c.path) + 2));
