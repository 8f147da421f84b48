INSERT INTO obs_unit (observing_program_id, name) VALUES (%(observing_program_id)s, %(name)s)
ON CONFLICT (observing_program_id, name) DO UPDATE SET name = EXCLUDED.name
RETURNING id;
