-- Returns a row only when the observatory was created.
INSERT INTO observatory (name) VALUES (%(name)s)
ON CONFLICT (name) DO NOTHING
RETURNING id, true AS inserted;
