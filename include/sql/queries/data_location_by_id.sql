SELECT l.*, s.short_name AS site
FROM data_location AS l JOIN site AS s ON s.id = l.site_id
WHERE l.id = %(id)s;
