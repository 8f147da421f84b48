-- Open audit findings (of one location, or all), oldest first.
SELECT f.id, s.short_name || '/' || l.name AS location, f.kind, f.path, f.detail, f.repair, f.found_at,
       f.last_seen_at
FROM audit_finding AS f
JOIN data_location AS l ON l.id = f.data_location_id
JOIN site AS s ON s.id = l.site_id
WHERE f.resolved_at IS NULL
  AND (%(location_id)s::bigint IS NULL OR f.data_location_id = %(location_id)s)
ORDER BY f.found_at, f.id
LIMIT %(limit)s;
