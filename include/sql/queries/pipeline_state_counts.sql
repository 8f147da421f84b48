-- Items per stage and state, with the oldest state change (how long the oldest has waited).
SELECT 'raw_data_package' AS stage, status::text, count(*) AS items, min(status_changed_at) AS oldest
FROM raw_data_package GROUP BY status
UNION ALL
SELECT 'data_transfer_package', status::text, count(*), min(status_changed_at) FROM data_transfer_package GROUP BY status
UNION ALL
SELECT 'data_transfer', status::text, count(*), min(status_changed_at) FROM data_transfer GROUP BY status
UNION ALL
SELECT 'unpack', unpack_status::text, count(*), min(unpack_status_changed_at)
FROM data_transfer WHERE status = 'COMPLETED' AND unpack GROUP BY unpack_status
UNION ALL
SELECT 'long_term_archive_transfer', status::text, count(*), min(status_changed_at)
FROM long_term_archive_transfer GROUP BY status
UNION ALL
SELECT 'staging_job', status::text, count(*), min(status_changed_at) FROM staging_job GROUP BY status
ORDER BY 1, 2;
