-- Open findings at one location that are over: a dark file not seen by the run that began
-- at %(run_started)s (gone, or filed), a lost or corrupt copy that is live again (repaired)
-- or deleted.
UPDATE audit_finding AS f
SET resolved_at = now()
WHERE f.data_location_id = %(location_id)s
  AND f.resolved_at IS NULL
  AND ((f.kind = 'dark' AND f.last_seen_at < %(run_started)s)
       OR (f.kind IN ('lost', 'corrupt')
           AND EXISTS (SELECT 1 FROM physical_copy AS c
                        WHERE c.id = f.physical_copy_id AND c.status NOT IN ('LOST', 'CORRUPT'))))
RETURNING f.id;
