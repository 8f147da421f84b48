SELECT d.*, l.root_path AS origin_root, l.settings AS origin_settings, l.name AS origin_name,
       s.short_name AS origin_site
FROM data_transfer_package AS d
JOIN data_location AS l ON l.id = d.origin_location_id
JOIN site AS s ON s.id = l.site_id
WHERE d.id = %(id)s;
