-- The archive transfer of one package into one long-term archive, with its origin buffer.
SELECT t.id, t.status, t.origin_location_id
FROM long_term_archive_transfer AS t
WHERE t.raw_data_package_id = %(package_id)s AND t.destination_location_id = %(location_id)s;
