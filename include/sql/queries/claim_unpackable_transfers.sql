-- Arrived bundles waiting to be unpacked at one destination buffer (leases decide who
-- works on which; a row left SCHEDULED / IN_PROGRESS by a dead worker is offered again).
SELECT t.id, d.name
FROM data_transfer AS t
JOIN data_transfer_package AS d ON d.id = t.data_transfer_package_id
WHERE t.destination_location_id = %(location_id)s
  AND t.status = 'COMPLETED'
  AND t.unpack
  AND t.unpack_status IN ('PENDING', 'SCHEDULED', 'IN_PROGRESS')
ORDER BY t.id
LIMIT %(limit)s;
