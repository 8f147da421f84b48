-- Locations no longer in the topology file are switched off, never deleted:
-- their packages, copies and transfers keep pointing at them.
UPDATE data_location AS l
SET active = false, updated_at = now()
FROM site AS s
WHERE s.id = l.site_id
  AND l.active
  AND l.id <> ALL (%(keep_ids)s::bigint[])
RETURNING s.short_name AS site, l.name;
