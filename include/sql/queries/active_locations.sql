-- Active locations, optionally filtered by site short name and location name.
SELECT l.id, l.name, l.location_type, l.storage_type, l.priority, l.root_path, l.settings,
       s.short_name AS site
FROM data_location AS l
JOIN site AS s ON s.id = l.site_id
WHERE l.active
  AND (%(site)s::text IS NULL OR s.short_name = %(site)s)
  AND (%(location)s::text IS NULL OR l.name = %(location)s)
ORDER BY s.id, l.location_type, l.priority, l.id;
