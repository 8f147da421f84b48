-- Copies of DataTransferPackages at one location that may go: the bundle was routed and
-- every one of its transfers arrived (and, where it is unpacked, was unpacked).
SELECT c.id, c.path
FROM physical_copy AS c
WHERE c.data_location_id = %(location_id)s
  AND c.data_transfer_package_id IS NOT NULL
  AND c.status = ANY (%(statuses)s::physical_copy_status[])
  AND (%(copy_id)s::bigint IS NULL OR c.id = %(copy_id)s)
  AND EXISTS (SELECT 1 FROM data_transfer AS t WHERE t.data_transfer_package_id = c.data_transfer_package_id)
  AND NOT EXISTS (
      SELECT 1 FROM data_transfer AS t
      WHERE t.data_transfer_package_id = c.data_transfer_package_id
        AND (t.status <> 'COMPLETED' OR (t.unpack AND t.unpack_status <> 'COMPLETED'))
  )
-- No ORDER BY: any eligible copies will do, and it lets the (location, status) index drive.
LIMIT %(limit)s;
