SELECT id, unpack_status_changed_at AS status_changed_at
FROM data_transfer
WHERE unpack_status = 'IN_PROGRESS'
  AND unpack_status_changed_at < now() - %(older_than)s::interval
ORDER BY unpack_status_changed_at
LIMIT %(limit)s;
