-- The site's active BUFFER locations, preferred (lowest priority number) first.
SELECT l.id, l.name, l.root_path, l.settings, l.priority
FROM data_location AS l
WHERE l.site_id = %(site_id)s
  AND l.location_type = 'BUFFER'
  AND l.active
ORDER BY l.priority, l.id;
