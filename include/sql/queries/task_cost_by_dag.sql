-- CPU and wall-clock seconds of the tasks that succeeded since %(since)s, per DAG.
SELECT dag_id, count(*) AS tasks, coalesce(sum(cpu_seconds), 0) AS cpu_seconds,
       coalesce(sum(wall_seconds), 0) AS wall_seconds
FROM task_execution
WHERE recorded_at >= %(since)s AND cpu_seconds IS NOT NULL
GROUP BY dag_id
ORDER BY dag_id;
