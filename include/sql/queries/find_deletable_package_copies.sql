-- Copies of RawDataPackages at one location that the retention rules allow to delete.
-- Used twice: to schedule (status PRESENT/STAGED) and, for one copy, to re-check just
-- before deleting (status DELETION_SCHEDULED). Long-term archives are never cleaned.
--   SOURCE     (the package's raw files): the package is ARCHIVED, has at least
--              min_lta_copies verified archive copies, no transfer of its bundle and no
--              archive transfer of it is unfinished, and the retention period has passed.
--   BUFFER     (the package tar): never while an archive transfer reads it from here, and
--              never the last verified copy (another verified buffer or archive copy must
--              exist); then either everything is done (ARCHIVED, every transfer of its
--              bundle arrived and unpacked) and the retention period has passed, or the
--              buffer is under disk pressure and a verified archive copy already exists.
--   PROCESSING (a staged copy): the staging job's retention (else the location's) has passed.
WITH loc AS (
    SELECT l.id, l.location_type,
           coalesce(r.retention_period, interval '0') AS retention_period,
           coalesce(r.min_lta_copies, 1) AS min_lta_copies
    FROM data_location AS l
    LEFT JOIN retention_policy AS r ON r.data_location_id = l.id
    WHERE l.id = %(location_id)s
),
candidate AS (
    SELECT c.id, c.raw_data_package_id, c.path, c.staging_job_id, c.created_at, c.status,
           p.archived_at, p.data_transfer_package_id,
           (SELECT count(*) FROM physical_copy AS a
              JOIN data_location AS al ON al.id = a.data_location_id
             WHERE a.raw_data_package_id = c.raw_data_package_id AND al.active
               AND al.location_type = 'LONG_TERM_ARCHIVE'
               AND a.status = 'PRESENT' AND a.verified_at IS NOT NULL) AS archive_copies,
           (SELECT count(*) FROM physical_copy AS o
              JOIN data_location AS ol ON ol.id = o.data_location_id
             WHERE o.raw_data_package_id = c.raw_data_package_id AND o.id <> c.id
               AND ol.location_type IN ('BUFFER', 'LONG_TERM_ARCHIVE')
               AND o.status = 'PRESENT' AND o.verified_at IS NOT NULL) AS other_verified_copies,
           EXISTS (SELECT 1 FROM data_transfer AS t
                    WHERE p.data_transfer_package_id IS NOT NULL
                      AND t.data_transfer_package_id = p.data_transfer_package_id
                      AND (t.status <> 'COMPLETED' OR (t.unpack AND t.unpack_status <> 'COMPLETED'))
                  ) AS transfers_unfinished,
           EXISTS (SELECT 1 FROM long_term_archive_transfer AS lt
                    WHERE lt.raw_data_package_id = c.raw_data_package_id AND lt.status <> 'COMPLETED'
                  ) AS archiving_unfinished,
           EXISTS (SELECT 1 FROM long_term_archive_transfer AS lt
                    WHERE lt.raw_data_package_id = c.raw_data_package_id AND lt.status <> 'COMPLETED'
                      AND lt.origin_location_id = c.data_location_id
                  ) AS archive_reads_here,
           j.retention_period AS job_retention
    FROM physical_copy AS c
    JOIN raw_data_package AS p ON p.id = c.raw_data_package_id
    LEFT JOIN staging_job AS j ON j.id = c.staging_job_id
    WHERE c.data_location_id = %(location_id)s
      AND c.status = ANY (%(statuses)s::physical_copy_status[])
      AND (%(copy_id)s::bigint IS NULL OR c.id = %(copy_id)s)
)
SELECT candidate.id, candidate.path
FROM candidate, loc
WHERE CASE loc.location_type
    WHEN 'SOURCE' THEN
        candidate.staging_job_id IS NULL
        AND candidate.archived_at IS NOT NULL
        AND candidate.archive_copies >= loc.min_lta_copies
        AND NOT candidate.transfers_unfinished
        AND NOT candidate.archiving_unfinished
        AND candidate.created_at < now() - loc.retention_period
    WHEN 'BUFFER' THEN
        candidate.staging_job_id IS NULL
        AND NOT candidate.archive_reads_here
        AND candidate.other_verified_copies >= 1
        AND (
            (%(under_pressure)s AND candidate.archive_copies >= 1)
            OR (candidate.archived_at IS NOT NULL
                AND NOT candidate.transfers_unfinished
                AND candidate.created_at < now() - loc.retention_period)
        )
    WHEN 'PROCESSING' THEN
        candidate.staging_job_id IS NOT NULL
        AND candidate.created_at < now() - coalesce(candidate.job_retention, loc.retention_period)
    ELSE false
END
-- No ORDER BY: any eligible copies will do, and it lets the (location, status) index drive.
LIMIT %(limit)s;
