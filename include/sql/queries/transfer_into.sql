-- The transfer that brought one bundle to one location, and whether the bundle's copy at
-- the transfer's origin is still there to send again.
SELECT t.id, t.status, t.unpack_status,
       EXISTS (SELECT 1 FROM physical_copy AS o
                WHERE o.data_transfer_package_id = t.data_transfer_package_id
                  AND o.data_location_id = t.origin_location_id AND o.status = 'PRESENT') AS origin_has_bundle
FROM data_transfer AS t
WHERE t.data_transfer_package_id = %(bundle_id)s AND t.destination_location_id = %(location_id)s;
