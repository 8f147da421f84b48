SELECT t.id, p.name AS package, t.attempts, t.failure_reason, t.status_changed_at
FROM long_term_archive_transfer AS t
JOIN raw_data_package AS p ON p.id = t.raw_data_package_id
WHERE t.requires_intervention
ORDER BY t.id;
