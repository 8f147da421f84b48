-- Returns a row only when the instrument was created or moved to another telescope.
INSERT INTO instrument (telescope_id, name) VALUES (%(telescope_id)s, %(name)s)
ON CONFLICT (name) DO UPDATE SET telescope_id = EXCLUDED.telescope_id
WHERE instrument.telescope_id IS DISTINCT FROM EXCLUDED.telescope_id
RETURNING id, (xmax = 0) AS inserted;
