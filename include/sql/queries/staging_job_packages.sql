SELECT sp.raw_data_package_id AS id, sp.status, p.name, p.relative_path, p.size_bytes, p.checksum
FROM staging_job_package AS sp
JOIN raw_data_package AS p ON p.id = sp.raw_data_package_id
WHERE sp.staging_job_id = %(job_id)s
ORDER BY p.id;
