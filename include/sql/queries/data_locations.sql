-- Every location (active or not) with its site and retention policy.
SELECT l.*, s.short_name AS site,
       r.retention_period, r.disk_pressure_threshold, r.min_lta_copies
FROM data_location AS l
JOIN site AS s ON s.id = l.site_id
LEFT JOIN retention_policy AS r ON r.data_location_id = l.id
ORDER BY s.id, l.id;
