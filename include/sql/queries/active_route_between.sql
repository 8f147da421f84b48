-- The route override from one site to another, if any (the lowest id wins).
SELECT r.*, s.short_name AS via_site
FROM data_transfer_route AS r
LEFT JOIN site AS s ON s.id = r.via_site_id
WHERE r.active
  AND r.origin_site_id = %(origin_site_id)s
  AND r.destination_site_id = %(destination_site_id)s
ORDER BY r.id
LIMIT 1;
