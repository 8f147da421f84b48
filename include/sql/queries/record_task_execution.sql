INSERT INTO task_execution (dag_id, task_id, run_id, map_index, try_number, location, worker)
VALUES (%(dag_id)s, %(task_id)s, %(run_id)s, %(map_index)s, %(try_number)s, %(location)s, %(worker)s)
RETURNING id;
