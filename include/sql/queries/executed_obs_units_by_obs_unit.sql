-- Executions of an obs unit (by name, in any program) starting within [start, end).
SELECT e.id
FROM executed_obs_unit AS e
JOIN obs_unit AS o ON o.id = e.obs_unit_id
WHERE o.name = %(obs_unit)s
  AND (%(start)s::timestamptz IS NULL OR e.start_time >= %(start)s)
  AND (%(end)s::timestamptz IS NULL OR e.start_time < %(end)s)
ORDER BY e.id;
