-- How far each requested observation is from being archived (ObservationsArchivedSensor):
-- it is archived when it has filed files and every one of them is in a RawDataPackage
-- with a verified copy (PRESENT, verified_at set) in at least %(min_archives)s active
-- long-term archives. A file not packaged yet, or a package not written or not uploaded
-- yet, keeps its observation waiting. One row per known observation (unknown ids have
-- none); waiting_packages names up to 5 packages not archived enough yet.
WITH files AS (
    SELECT f.executed_obs_unit_id AS observation, count(*) AS files,
           count(*) FILTER (WHERE f.raw_data_package_id IS NULL) AS unpackaged_files
    FROM raw_data_file AS f
    WHERE f.executed_obs_unit_id = ANY (%(observation_ids)s::bigint[])
    GROUP BY f.executed_obs_unit_id
),
packages AS (
    SELECT DISTINCT f.executed_obs_unit_id AS observation, f.raw_data_package_id AS id
    FROM raw_data_file AS f
    WHERE f.executed_obs_unit_id = ANY (%(observation_ids)s::bigint[])
      AND f.raw_data_package_id IS NOT NULL
),
archived AS (
    SELECT k.observation, p.name,
           (SELECT count(DISTINCT c.data_location_id)
            FROM physical_copy AS c
            JOIN data_location AS l ON l.id = c.data_location_id
            WHERE c.raw_data_package_id = k.id
              AND c.status = 'PRESENT'
              AND c.verified_at IS NOT NULL
              AND l.active
              AND l.location_type = 'LONG_TERM_ARCHIVE') >= %(min_archives)s AS archived
    FROM packages AS k
    JOIN raw_data_package AS p ON p.id = k.id
)
SELECT e.id AS observation,
       coalesce(f.files, 0) AS files,
       coalesce(f.unpackaged_files, 0) AS unpackaged_files,
       (SELECT count(*) FROM archived AS a WHERE a.observation = e.id) AS packages,
       (SELECT count(*) FROM archived AS a WHERE a.observation = e.id AND a.archived) AS archived_packages,
       (SELECT string_agg(w.name, ', ' ORDER BY w.name)
        FROM (SELECT a.name FROM archived AS a
              WHERE a.observation = e.id AND NOT a.archived
              ORDER BY a.name
              LIMIT 5) AS w) AS waiting_packages,
       (SELECT count(*) FROM data_location AS l
        WHERE l.active AND l.location_type = 'LONG_TERM_ARCHIVE') AS active_archives
FROM executed_obs_unit AS e
LEFT JOIN files AS f ON f.observation = e.id
WHERE e.id = ANY (%(observation_ids)s::bigint[])
ORDER BY e.id;
