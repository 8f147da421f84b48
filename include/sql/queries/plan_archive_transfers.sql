-- One LongTermArchiveTransfer per package that has a verified copy in a buffer of the
-- archive's site and none towards this archive yet (the preferred buffer is the origin).
INSERT INTO long_term_archive_transfer (raw_data_package_id, origin_location_id, destination_location_id)
SELECT DISTINCT ON (c.raw_data_package_id) c.raw_data_package_id, c.data_location_id, %(lta_id)s
FROM physical_copy AS c
JOIN data_location AS b ON b.id = c.data_location_id
WHERE b.site_id = %(site_id)s
  AND b.location_type = 'BUFFER'
  AND b.active
  AND c.status = 'PRESENT'
  AND c.raw_data_package_id IS NOT NULL
  AND c.verified_at IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM long_term_archive_transfer AS t
      WHERE t.raw_data_package_id = c.raw_data_package_id AND t.destination_location_id = %(lta_id)s
  )
ORDER BY c.raw_data_package_id, b.priority
ON CONFLICT (raw_data_package_id, destination_location_id) DO NOTHING
RETURNING id;
