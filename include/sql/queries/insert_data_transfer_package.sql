INSERT INTO data_transfer_package (name, origin_location_id, size_bytes)
VALUES (%(name)s, %(origin_location_id)s, NULL)
RETURNING id;
