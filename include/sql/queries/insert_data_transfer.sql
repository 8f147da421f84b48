-- One DataTransfer per bundle and destination: a second insert is a no-op.
INSERT INTO data_transfer (data_transfer_package_id, origin_location_id, destination_location_id,
                           route_id, method, unpack, depends_on_transfer_id)
VALUES (%(bundle_id)s, %(origin_location_id)s, %(destination_location_id)s,
        %(route_id)s, %(method)s, %(unpack)s, %(depends_on_transfer_id)s)
ON CONFLICT (data_transfer_package_id, destination_location_id) DO NOTHING
RETURNING id;
