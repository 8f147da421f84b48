-- Row counts of the pipeline tables, with a status breakdown where there is one.
WITH counts (table_name, total, by_status) AS (
    SELECT 'site', count(*), NULL FROM site
    UNION ALL SELECT 'data_location (active)', count(*) FILTER (WHERE active), NULL FROM data_location
    UNION ALL SELECT 'executed_obs_unit', count(*), NULL FROM executed_obs_unit
    UNION ALL SELECT 'raw_data_file', count(*), NULL FROM raw_data_file
    UNION ALL SELECT 'raw_data_package', (SELECT count(*) FROM raw_data_package),
        (SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
           FROM (SELECT status, count(*) AS n FROM raw_data_package GROUP BY status) AS s)
    UNION ALL SELECT 'data_transfer_package', (SELECT count(*) FROM data_transfer_package),
        (SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
           FROM (SELECT status, count(*) AS n FROM data_transfer_package GROUP BY status) AS s)
    UNION ALL SELECT 'data_transfer', (SELECT count(*) FROM data_transfer),
        (SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
           FROM (SELECT status, count(*) AS n FROM data_transfer GROUP BY status) AS s)
    UNION ALL SELECT 'long_term_archive_transfer', (SELECT count(*) FROM long_term_archive_transfer),
        (SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
           FROM (SELECT status, count(*) AS n FROM long_term_archive_transfer GROUP BY status) AS s)
    UNION ALL SELECT 'raw_data_package ARCHIVED', (SELECT count(*) FROM raw_data_package WHERE archived_at IS NOT NULL),
        NULL
    UNION ALL SELECT 'staging_job', (SELECT count(*) FROM staging_job),
        (SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
           FROM (SELECT status, count(*) AS n FROM staging_job GROUP BY status) AS s)
    UNION ALL SELECT 'physical_copy', (SELECT count(*) FROM physical_copy),
        (SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
           FROM (SELECT status, count(*) AS n FROM physical_copy GROUP BY status) AS s)
)
SELECT table_name, total, by_status FROM counts;
