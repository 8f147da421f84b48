SELECT p.id, p.name, p.relative_path, p.size_bytes, p.checksum, c.path
FROM raw_data_package AS p
JOIN data_transfer_package AS d ON d.id = p.data_transfer_package_id
JOIN physical_copy AS c
  ON c.raw_data_package_id = p.id
 AND c.data_location_id = d.origin_location_id
 AND c.status = 'PRESENT'
WHERE p.data_transfer_package_id = %(bundle_id)s
ORDER BY p.id;
