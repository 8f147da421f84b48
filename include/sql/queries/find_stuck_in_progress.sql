-- Work items of one status column (states.WORK_COLUMNS) IN_PROGRESS for longer than
-- %(older_than)s, served by the *_stuck partial indexes.
SELECT id, {changed_at} AS status_changed_at
FROM {table}
WHERE {column} = 'IN_PROGRESS'
  AND {changed_at} < now() - %(older_than)s::interval
ORDER BY {changed_at}
LIMIT %(limit)s;
