-- Work finding for the sweep: packages IN_PROGRESS for longer than %(older_than)s.
SELECT id, name, status_changed_at
FROM raw_data_package
WHERE status = 'IN_PROGRESS'
  AND status_changed_at < now() - %(older_than)s::interval
ORDER BY status_changed_at
LIMIT %(limit)s;
