SELECT d.*, l.root_path AS origin_root, l.settings AS origin_settings
FROM data_transfer_package AS d
JOIN data_location AS l ON l.id = d.origin_location_id
WHERE d.id = %(id)s;
