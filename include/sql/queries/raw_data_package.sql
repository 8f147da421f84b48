SELECT p.*, l.root_path AS source_root, s.short_name AS site
FROM raw_data_package AS p
JOIN data_location AS l ON l.id = p.source_location_id
JOIN site AS s ON s.id = l.site_id
WHERE p.id = %(id)s;
