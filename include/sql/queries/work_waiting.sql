-- Work that waits or will be tried again: PENDING with the reason of its last try (no
-- buffer with room, a storage fault, a damaged arrival sent again...), oldest first.
-- Served by the *_work partial indexes (PENDING rows only).
SELECT stage, name, reason, since
FROM (
    SELECT 'raw_data_package' AS stage, name, failure_reason AS reason, status_changed_at AS since
    FROM raw_data_package WHERE status = 'PENDING' AND failure_reason IS NOT NULL
    UNION ALL
    SELECT 'data_transfer_package', name, failure_reason, status_changed_at
    FROM data_transfer_package WHERE status = 'PENDING' AND failure_reason IS NOT NULL
    UNION ALL
    SELECT 'data_transfer', d.name, t.failure_reason, t.status_changed_at
    FROM data_transfer AS t JOIN data_transfer_package AS d ON d.id = t.data_transfer_package_id
    WHERE t.status = 'PENDING' AND t.failure_reason IS NOT NULL
    UNION ALL
    SELECT 'unpack', d.name, t.unpack_failure_reason, t.unpack_status_changed_at
    FROM data_transfer AS t JOIN data_transfer_package AS d ON d.id = t.data_transfer_package_id
    WHERE t.status = 'COMPLETED' AND t.unpack_status = 'PENDING' AND t.unpack_failure_reason IS NOT NULL
    UNION ALL
    SELECT 'long_term_archive_transfer', p.name, a.failure_reason, a.status_changed_at
    FROM long_term_archive_transfer AS a JOIN raw_data_package AS p ON p.id = a.raw_data_package_id
    WHERE a.status = 'PENDING' AND a.failure_reason IS NOT NULL
) AS waiting
ORDER BY since
LIMIT %(limit)s;
