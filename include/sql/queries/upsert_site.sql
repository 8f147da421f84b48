-- Returns a row only when the site was created or changed.
INSERT INTO site (short_name, name, location) VALUES (%(short_name)s, %(name)s, %(location)s)
ON CONFLICT (short_name) DO UPDATE SET name = EXCLUDED.name, location = EXCLUDED.location
WHERE (site.name, site.location) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.location)
RETURNING id, (xmax = 0) AS inserted;
