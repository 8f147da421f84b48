-- Completed bundles of one buffer that have no DataTransfers yet; locked until the
-- routing transaction ends so two routers never route the same bundle.
SELECT d.id, d.name, d.origin_location_id, l.site_id AS origin_site_id
FROM data_transfer_package AS d
JOIN data_location AS l ON l.id = d.origin_location_id
WHERE d.origin_location_id = %(location_id)s
  AND d.status = 'COMPLETED'
  AND d.routed_at IS NULL
ORDER BY d.id
LIMIT %(limit)s
FOR UPDATE OF d SKIP LOCKED;
