SELECT m.id, m.name
FROM instrument_module AS m JOIN instrument AS i ON i.id = m.instrument_id
WHERE i.name = %(instrument)s;
