-- Work that waits for an operator, of every stage: FAILED packages, bundles, transfers,
-- unpacks, staging jobs, and archive transfers FAILED or out of tries (requires_intervention).
-- Each row is named by the `ccat retry` kind and id that hand it back (states.retry), with
-- its stored reason and since when it waits. Few rows: FAILED work is what an operator reads.
SELECT 'package' AS kind, p.id, p.name, p.failure_reason AS reason, p.status_changed_at AS since
FROM raw_data_package AS p
WHERE p.status = 'FAILED'
UNION ALL
SELECT 'bundle', d.id, d.name, d.failure_reason, d.status_changed_at
FROM data_transfer_package AS d
WHERE d.status = 'FAILED'
UNION ALL
SELECT 'transfer', t.id, d.name || ' to ' || s.short_name || '/' || l.name, t.failure_reason, t.status_changed_at
FROM data_transfer AS t
JOIN data_transfer_package AS d ON d.id = t.data_transfer_package_id
JOIN data_location AS l ON l.id = t.destination_location_id
JOIN site AS s ON s.id = l.site_id
WHERE t.status = 'FAILED'
UNION ALL
SELECT 'unpack', t.id, d.name || ' at ' || s.short_name || '/' || l.name, t.unpack_failure_reason,
       t.unpack_status_changed_at
FROM data_transfer AS t
JOIN data_transfer_package AS d ON d.id = t.data_transfer_package_id
JOIN data_location AS l ON l.id = t.destination_location_id
JOIN site AS s ON s.id = l.site_id
WHERE t.unpack_status = 'FAILED'
UNION ALL
SELECT 'archive', a.id, p.name || ' to ' || s.short_name || '/' || l.name, a.failure_reason, a.status_changed_at
FROM long_term_archive_transfer AS a
JOIN raw_data_package AS p ON p.id = a.raw_data_package_id
JOIN data_location AS l ON l.id = a.destination_location_id
JOIN site AS s ON s.id = l.site_id
WHERE a.status = 'FAILED' OR a.requires_intervention
UNION ALL
SELECT 'staging', j.id, j.name, j.failure_reason, j.status_changed_at
FROM staging_job AS j
WHERE j.status = 'FAILED'
ORDER BY since, id;
