-- Work items IN_PROGRESS for longer than %(older_than)s (served by the *_stuck indexes).
SELECT id, status_changed_at
FROM {table}
WHERE status = 'IN_PROGRESS'
  AND status_changed_at < now() - %(older_than)s::interval
ORDER BY status_changed_at
LIMIT %(limit)s;
