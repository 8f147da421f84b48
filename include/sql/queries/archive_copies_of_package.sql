-- Verified copies of a package in S3 archives, the processing site's own first.
SELECT c.path, l.id AS location_id, l.name, l.s3_bucket, l.s3_prefix, l.s3_endpoint_url, l.s3_region, l.s3_conn_id,
       l.site_id, s.short_name AS site
FROM physical_copy AS c
JOIN data_location AS l ON l.id = c.data_location_id
JOIN site AS s ON s.id = l.site_id
WHERE c.raw_data_package_id = %(package_id)s
  AND c.status = 'PRESENT'
  AND c.verified_at IS NOT NULL
  AND l.location_type = 'LONG_TERM_ARCHIVE'
  AND l.storage_type = 'S3'
  AND l.active
ORDER BY (l.site_id = %(site_id)s) DESC, l.priority, l.id;
