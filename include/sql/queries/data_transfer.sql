-- One transfer with everything needed to send, verify and unpack it.
SELECT t.id, t.data_transfer_package_id, t.origin_location_id, t.destination_location_id, t.route_id, t.method,
       t.status, t.unpack_status, t.unpack, t.attempts, t.redeliveries, t.failure_reason, t.unpack_failure_reason,
       t.depends_on_transfer_id,
       d.name AS bundle, d.size_bytes, d.checksum,
       ol.root_path AS origin_root,
       dl.root_path AS destination_root, dl.settings AS destination_settings,
       dl.name AS destination_name, ds.short_name AS destination_site,
       os.short_name AS origin_site,
       r.settings AS route_settings,
       dep.status AS depends_on_status
FROM data_transfer AS t
JOIN data_transfer_package AS d ON d.id = t.data_transfer_package_id
JOIN data_location AS ol ON ol.id = t.origin_location_id
JOIN site AS os ON os.id = ol.site_id
JOIN data_location AS dl ON dl.id = t.destination_location_id
JOIN site AS ds ON ds.id = dl.site_id
LEFT JOIN data_transfer_route AS r ON r.id = t.route_id
LEFT JOIN data_transfer AS dep ON dep.id = t.depends_on_transfer_id
WHERE t.id = %(id)s;
