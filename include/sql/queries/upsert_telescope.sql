-- Returns a row only when the telescope was created or moved to another observatory.
INSERT INTO telescope (observatory_id, name) VALUES (%(observatory_id)s, %(name)s)
ON CONFLICT (name) DO UPDATE SET observatory_id = EXCLUDED.observatory_id
WHERE telescope.observatory_id IS DISTINCT FROM EXCLUDED.observatory_id
RETURNING id, (xmax = 0) AS inserted;
