-- Returns a row only when the module was created.
INSERT INTO instrument_module (instrument_id, name) VALUES (%(instrument_id)s, %(name)s)
ON CONFLICT (instrument_id, name) DO NOTHING
RETURNING id, true AS inserted;
