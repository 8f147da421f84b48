-- DO UPDATE (a no-op write) rather than DO NOTHING so the id is returned even when a
-- concurrent filing created the row first.
INSERT INTO observing_program (name) VALUES (%(name)s)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING id;
