-- One filing request, its SOURCE location as "site/location", and its outcome if decided.
SELECT r.id, s.short_name || '/' || l.name AS location, r.requested_by, r.requested_at, r.outcome,
       r.executed_obs_unit_id, r.new_files, r.already_filed, r.worker, r.finished_at
FROM filing_request AS r
JOIN data_location AS l ON l.id = r.source_location_id
JOIN site AS s ON s.id = l.site_id
WHERE r.id = %(id)s;
