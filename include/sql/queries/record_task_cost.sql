-- A task that succeeded: what it cost (CPU and wall-clock seconds).
UPDATE task_execution SET cpu_seconds = %(cpu_seconds)s, wall_seconds = %(wall_seconds)s
WHERE id = %(id)s
RETURNING id;
