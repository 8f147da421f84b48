-- One location by site short name and location name (the "site/location" key).
SELECT l.*, s.short_name AS site
FROM data_location AS l JOIN site AS s ON s.id = l.site_id
WHERE s.short_name = %(site)s AND l.name = %(name)s;
