-- What an audit found (a lost or corrupt copy, a dark file): a new open finding, or the
-- open one seen again.
INSERT INTO audit_finding (data_location_id, kind, path, physical_copy_id, detail, repair)
VALUES (%(location_id)s, %(kind)s, %(path)s, %(copy_id)s, %(detail)s, %(repair)s)
ON CONFLICT (data_location_id, kind, path) WHERE resolved_at IS NULL
DO UPDATE SET last_seen_at = now(), detail = EXCLUDED.detail,
              repair = coalesce(EXCLUDED.repair, audit_finding.repair)
RETURNING id;
