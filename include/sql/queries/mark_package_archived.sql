-- ARCHIVED: a verified copy at every active long-term archive.
UPDATE raw_data_package AS p
SET archived_at = now()
WHERE p.id = %(id)s
  AND p.archived_at IS NULL
  AND EXISTS (SELECT 1 FROM data_location WHERE active AND location_type = 'LONG_TERM_ARCHIVE')
  AND NOT EXISTS (
      SELECT 1 FROM data_location AS l
      WHERE l.active AND l.location_type = 'LONG_TERM_ARCHIVE'
        AND NOT EXISTS (
            SELECT 1 FROM physical_copy AS c
            WHERE c.raw_data_package_id = p.id AND c.data_location_id = l.id
              AND c.status = 'PRESENT' AND c.verified_at IS NOT NULL
        )
  )
RETURNING id;
