-- Archive work for one long-term archive: not done, not waiting for an operator.
SELECT t.id, p.name
FROM long_term_archive_transfer AS t
JOIN raw_data_package AS p ON p.id = t.raw_data_package_id
WHERE t.destination_location_id = %(location_id)s
  AND t.status IN ('PENDING', 'SCHEDULED', 'IN_PROGRESS')
  AND t.attempts < 3
ORDER BY t.id
LIMIT %(limit)s;
