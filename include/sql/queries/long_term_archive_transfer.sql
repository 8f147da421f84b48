SELECT t.*,
       p.name AS package, p.relative_path, p.size_bytes, p.checksum,
       o.root_path AS origin_root,
       d.s3_bucket, d.s3_prefix, d.s3_endpoint_url, d.s3_region, d.s3_conn_id, d.settings AS destination_settings,
       s.short_name AS destination_site, d.name AS destination_name
FROM long_term_archive_transfer AS t
JOIN raw_data_package AS p ON p.id = t.raw_data_package_id
JOIN data_location AS o ON o.id = t.origin_location_id
JOIN data_location AS d ON d.id = t.destination_location_id
JOIN site AS s ON s.id = d.site_id
WHERE t.id = %(id)s;
