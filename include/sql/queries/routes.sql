SELECT r.name, r.route_type, r.method, r.settings, r.active,
       o.short_name AS origin_site, d.short_name AS destination_site, v.short_name AS via_site,
       os.short_name || '/' || ol.name AS origin_location,
       ds.short_name || '/' || dl.name AS destination_location
FROM data_transfer_route AS r
JOIN site AS o ON o.id = r.origin_site_id
JOIN site AS d ON d.id = r.destination_site_id
LEFT JOIN site AS v ON v.id = r.via_site_id
LEFT JOIN data_location AS ol ON ol.id = r.origin_location_id
LEFT JOIN site AS os ON os.id = ol.site_id
LEFT JOIN data_location AS dl ON dl.id = r.destination_location_id
LEFT JOIN site AS ds ON ds.id = dl.site_id
ORDER BY r.id;
