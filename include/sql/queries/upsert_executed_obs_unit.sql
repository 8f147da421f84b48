-- An end time filed later completes the record; an end time already set never changes.
INSERT INTO executed_obs_unit (obs_unit_id, start_time, end_time)
VALUES (%(obs_unit_id)s, %(start_time)s, %(end_time)s)
ON CONFLICT (obs_unit_id, start_time) DO UPDATE
    SET end_time = coalesce(executed_obs_unit.end_time, EXCLUDED.end_time)
RETURNING id, end_time;
