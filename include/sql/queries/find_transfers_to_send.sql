-- Transfers from one origin location to one destination site that can go now: not yet
-- done or given up, and whatever they depend on has arrived.
SELECT t.id, d.name
FROM data_transfer AS t
JOIN data_transfer_package AS d ON d.id = t.data_transfer_package_id
JOIN data_location AS dl ON dl.id = t.destination_location_id
LEFT JOIN data_transfer AS dep ON dep.id = t.depends_on_transfer_id
WHERE t.origin_location_id = %(location_id)s
  AND t.status IN ('PENDING', 'SCHEDULED', 'IN_PROGRESS')
  AND dl.site_id = %(destination_site_id)s
  AND (dep.id IS NULL OR dep.status = 'COMPLETED')
ORDER BY t.id
LIMIT %(limit)s;
