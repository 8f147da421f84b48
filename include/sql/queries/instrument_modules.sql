SELECT i.name AS instrument, m.name AS module
FROM instrument_module AS m JOIN instrument AS i ON i.id = m.instrument_id
ORDER BY i.id, m.id;
